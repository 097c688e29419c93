"""CSCE-Net: Cross-Scale Context Extracted hashing (Xue, Shi et al., ACML 2022).

Data flow for a 224 px image and ResNet-50 (shapes of the paper figure and the released code)::

    image -> backbone -> f3 (1024, 14, 14) -> local branch [ASPP ->] spatial attention -> f_l (D=1024, 14, 14)
                      -> f4 (2048, 7, 7)   -> cross-scale windows: 1x1 conv 2048->D/4, unfold 2x2 (36)
                                                                   1x1 conv 2048->D/16, unfold 4x4 (16)
                                              -> f_g (D, N=52)
    attention-guided extraction: f_o = avgpool(f_l - f_g f_gᵀ f_l / ||f_g||_F²)      (D,)
                                 f_c = Conv1d(N -> 1)(f_gᵀ)                           (D,)
    e = [f_c, f_o] (2D) -> hash layer Linear(2D -> bits) = v;  threshold t = clamp(Linear(2D -> 1), ±signt)
    training: OrthoHash loss on cos(v, fixed hash centres) + quantisation of 2·hardtanh(v) towards DSF
    retrieval: codes = DSF(v, t) in ±1 for queries and database alike (symmetric).

DSF (dynamic sign function, released ``process_thred``): bits with ``-t < x < t`` are ambiguous; they
become -1 when the code has more than ``balance`` positive entries and +1 otherwise; then sign. The
released code hard-codes ``balance = 64 / 2``, right only for 64-bit codes; ``dsf_balance="bits/2"``
(default) fixes it, ``dsf_balance="32"`` reproduces the reference.

The threshold head gets no gradient in the released code (the DSF target is detached and piecewise
constant), so it stays at its initialisation; here its parameters are frozen to say so explicitly
(also keeps DDP from waiting for gradients that never come).

See ``docs/csce.md`` for every difference between the paper and the released code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek.errors import ConfigError, InputError
from bitseek.losses.orthohash import OrthoHashLoss
from bitseek.models.backbones import Backbone, build_backbone
from bitseek.models.base import HashModel
from bitseek.models.hash_centers import make_hash_centers
from bitseek.models.spec import AUTO, InputField, require_resolved
from bitseek.models.layers.attention2d import MultiAtrous, SpatialAttention2d
from bitseek.registry import CONVERTERS, register_model

__all__ = [
    "CSCEConfig",
    "CSCENet",
    "CrossScaleWindows",
    "LocalBranch",
    "attention_guided_extraction",
    "build_csce",
    "convert_reference_state_dict",
    "count_windows",
    "dynamic_sign",
    "dsf_balance_value",
]


@dataclass
class CSCEConfig:
    """CSCE-Net hyper-parameters; defaults are the released ``main.py`` values (ImageNet-100, 64 bits)."""

    name: str = "csce"
    bits: int = 64
    num_classes: int = 100
    backbone: str = "resnet50"
    weights: str = ""  # local ImageNet weights in torchvision (timm for gcvit) naming; "" = random init
    backbone_args: dict = field(default_factory=dict)  # extra backbone arguments (resnet-mini widths, ...)
    image_size: int = 224  # training/eval crop; fixes the number of stage-4 windows
    local_branch: str = "aspp"  # aspp (paper figure: ASPP + attention) | attention (released code)
    local_dim: int = 0  # channels of the local map and of each window descriptor; 0 = stage-3 channels
    aspp_dilations: list[int] = field(default_factory=lambda: [6, 12, 18])
    window_sizes: list[int] = field(default_factory=lambda: [2, 4])
    signt: float = 0.01  # threshold head clamp [-signt, signt]
    dsf_balance: str = "bits/2"  # "bits/2" (fixed) or a number; "32" = the released 64/2 constant
    s: float = 10.0
    m: float = 0.15
    margin_type: str = "arc"  # arc | cos
    elastic_std: float = 0.125  # std of the per-sample margin for single-label data; 0 = fixed margin
    multilabel: bool = False  # NUS-WIDE, COCO: true
    multilabel_loss: str = "label_smoothing"  # label_smoothing | bce | imbalance
    ce: float = 1.0
    quan: float = 1.0
    quan_type: str = "cs"  # cs | l1 | l2
    center_seed: int = 0  # seed of the random centres used when classes > 2·bits

    #: the crop the network is built for must be the crop the data pipeline produces
    INPUT_SPEC: ClassVar[dict[str, InputField]] = {"image_size": InputField("image_size")}

    def __post_init__(self) -> None:
        if self.bits < 2:
            raise ConfigError(f"model.bits must be >= 2, got {self.bits}")
        if self.num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {self.num_classes}")
        if self.image_size < 1 and self.image_size != AUTO:
            raise ConfigError(f"model.image_size must be positive (or auto), got {self.image_size}")
        if self.local_dim < 0:
            raise ConfigError(f"model.local_dim must be >= 0 (0 = stage-3 channels), got {self.local_dim}")
        if self.signt < 0:
            raise ConfigError(f"model.signt must be >= 0, got {self.signt}")
        if not self.window_sizes or min(self.window_sizes) < 1:
            raise ConfigError(f"model.window_sizes must be positive integers, got {list(self.window_sizes)}")
        dsf_balance_value(self.dsf_balance, self.bits)


# --------------------------------------------------------------------------- functional pieces


def count_windows(map_size: tuple[int, int], window_sizes: list[int] | tuple[int, ...]) -> int:
    """Number of stride-1 ``k x k`` windows over an ``h x w`` map, summed over ``window_sizes``."""
    h, w = map_size
    return sum(max(0, h - k + 1) * max(0, w - k + 1) for k in window_sizes)


def dsf_balance_value(spec: str | float, bits: int) -> float:
    """The positive-count threshold of the DSF: ``"bits/2"`` -> bits/2, a number -> that number."""
    text = str(spec).strip()
    if text == "bits/2":
        return bits / 2.0
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"model.dsf_balance must be 'bits/2' or a number, got {spec!r}") from None
    if value < 0:
        raise ConfigError(f"model.dsf_balance must be >= 0, got {value:g}")
    return value


def dynamic_sign(v: Tensor, t: Tensor, balance: float) -> Tensor:
    """DSF: fill the ambiguous bits (``-t < v < t``) towards balance, then take the sign.

    ``v`` (B, bits), ``t`` (B, 1) or (B,). Ambiguous bits become -1 if the row has more than
    ``balance`` positive entries, else +1. With ``t <= 0`` nothing is ambiguous (plain sign; an exact
    0 stays 0, as ``torch.sign`` in the reference).
    """
    if v.dim() != 2:
        raise InputError(f"dynamic_sign: codes must be (B, bits), got shape {tuple(v.shape)}")
    t = t.reshape(-1, 1).to(v.dtype)
    if t.shape[0] != v.shape[0]:
        raise InputError(f"dynamic_sign: {t.shape[0]} thresholds for {v.shape[0]} codes")
    positives = (v > 0).sum(dim=1, keepdim=True)
    fill = torch.where(positives > balance, -torch.ones_like(t), torch.ones_like(t))
    ambiguous = (v < t) & (v > -t)
    return torch.where(ambiguous, fill.expand_as(v), v).sign()


def attention_guided_extraction(local: Tensor, windows: Tensor) -> Tensor:
    """``local − W Wᵀ local / ||W||_F²``: the local map with the global-window context taken out.

    ``local`` (B, D, H, W), ``windows`` W (B, D, N). The normaliser is the squared Frobenius norm of
    the whole window matrix, as in the released code; for one window (or parallel windows) this is
    the exact orthogonal projection of DOLG, otherwise a contraction towards it.
    """
    b, d = local.shape[:2]
    if windows.shape[:2] != (b, d):
        raise InputError(f"attention_guided_extraction: local map {tuple(local.shape)} and windows "
                         f"{tuple(windows.shape)} disagree on batch/channels")
    flat = local.flatten(2)  # (B, D, HW)
    proj = torch.bmm(windows, torch.bmm(windows.transpose(1, 2), flat))
    norm2 = windows.pow(2).sum(dim=(1, 2)).view(b, 1, 1)
    return (flat - proj / norm2).view_as(local)


# --------------------------------------------------------------------------- modules


class LocalBranch(nn.Module):
    """Stage-3 map -> local map: [multi-atrous ->] spatial attention (paper: both; code: attention)."""

    def __init__(self, in_channels: int, dim: int, kind: str = "aspp", dilations: list[int] | None = None) -> None:
        super().__init__()
        if kind == "aspp":
            self.aspp: nn.Module = MultiAtrous(in_channels, dim, branch_channels=max(1, dim // 2),
                                               dilations=tuple(dilations or (6, 12, 18)))
            att_in = dim
        elif kind == "attention":
            self.aspp = nn.Identity()
            att_in = in_channels
        else:
            raise ConfigError(f"model.local_branch must be 'aspp' or 'attention', got {kind!r}")
        self.attention = SpatialAttention2d(att_in, dim)

    def forward(self, f3: Tensor) -> Tensor:
        return self.attention(self.aspp(f3))[0]


class CrossScaleWindows(nn.Module):
    """Stage-4 map -> (B, D, N) descriptors of stride-1 ``k x k`` windows at several scales.

    Per scale ``k`` a 1x1 conv reduces the channels to ``D / k²`` so that every window, unfolded
    channel-major as ``nn.Unfold`` does, is a D-dimensional vector.
    """

    def __init__(self, in_channels: int, dim: int, window_sizes: list[int]) -> None:
        super().__init__()
        if not window_sizes or min(window_sizes) < 1:
            raise ConfigError(f"model.window_sizes must be positive integers, got {list(window_sizes)}")
        for k in window_sizes:
            if dim % (k * k):
                raise ConfigError(f"model.local_dim={dim} is not divisible by {k}x{k}={k * k} "
                                  f"(window size {k}); choose a multiple of {k * k}")
        self.window_sizes = [int(k) for k in window_sizes]
        self.convs = nn.ModuleList([nn.Conv2d(in_channels, dim // (k * k), 1) for k in self.window_sizes])

    def forward(self, f4: Tensor) -> Tensor:
        return torch.cat([F.unfold(conv(f4), kernel_size=k, stride=1)
                          for conv, k in zip(self.convs, self.window_sizes)], dim=2)


class CSCENet(HashModel):
    """CSCE-Net on any :class:`~bitseek.models.backbones.Backbone`."""

    def __init__(self, cfg: CSCEConfig, backbone: Backbone | None = None) -> None:
        super().__init__()
        require_resolved(cfg, "CSCE-Net")
        self.cfg = cfg
        self.bits = cfg.bits
        # randomly initialised here: ``cfg.weights`` is read by the caller (``create_model``), never by the model
        self.backbone = backbone if backbone is not None else build_backbone(
            cfg.backbone, None, image_size=cfg.image_size, **cfg.backbone_args)
        c3, c4 = self.backbone.out_channels
        dim = cfg.local_dim or c3
        _, (h4, w4) = self.backbone.feature_sizes(cfg.image_size)
        n_windows = count_windows((h4, w4), cfg.window_sizes)
        if min(h4, w4) < max(cfg.window_sizes):
            raise ConfigError(f"model.image_size={cfg.image_size} gives a {h4}x{w4} stage-4 map with backbone "
                              f"{cfg.backbone!r}, smaller than the {max(cfg.window_sizes)}x{max(cfg.window_sizes)} "
                              f"window; use a larger image_size or smaller window_sizes")
        self.dim, self.n_windows, self.stage4_size = dim, n_windows, (h4, w4)
        self.local = LocalBranch(c3, dim, cfg.local_branch, cfg.aspp_dilations)
        self.windows = CrossScaleWindows(c4, dim, cfg.window_sizes)
        self.window_fuse = nn.Conv1d(n_windows, 1, 1)
        self.hash_fc = nn.Linear(2 * dim, cfg.bits)
        self.thresh_fc = nn.Linear(2 * dim, 1)
        self.thresh_fc.requires_grad_(False)  # never receives a gradient (see module docstring)
        centers = make_hash_centers(cfg.num_classes, cfg.bits, seed=cfg.center_seed)
        self.centers_info = {"method": centers.method, "min_distance": centers.min_distance,
                             "mean_distance": centers.mean_distance, "satisfied": centers.satisfied}
        self.register_buffer("centers", centers.codes.clone())
        self.balance = dsf_balance_value(cfg.dsf_balance, cfg.bits)
        self.criterion = OrthoHashLoss(s=cfg.s, m=cfg.m, margin_type=cfg.margin_type, elastic_std=cfg.elastic_std,
                                       multilabel=cfg.multilabel, multilabel_loss=cfg.multilabel_loss, ce=cfg.ce,
                                       quan=cfg.quan, quan_type=cfg.quan_type, clip_codes=True)

    # ------------------------------------------------------------------ pretrained parts
    def pretrained_sources(self) -> dict[str, str]:
        """Initialisation weights this model wants, by part: ``{"backbone": cfg.weights}`` when set."""
        return {"backbone": self.cfg.weights} if self.cfg.weights else {}

    def load_pretrained(self, part: str, state_dict: dict[str, Tensor], source: str) -> None:
        """Load an initialisation state dict (torchvision/timm naming) read by the caller."""
        if part != "backbone":
            raise InputError(f"CSCE-Net has no pretrained part {part!r} (only 'backbone')")
        self.backbone.load_pretrained_state(state_dict, source)

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``{"codes": v (B, bits), "threshold": t (B, 1), "logits": cos(v, centres) (B, classes)}``."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise InputError(f"CSCE-Net: images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        f3, f4 = self.backbone(images)
        if tuple(f4.shape[-2:]) != self.stage4_size:
            raise InputError(f"CSCE-Net: a {images.shape[-2]}x{images.shape[-1]} image gives a "
                             f"{f4.shape[-2]}x{f4.shape[-1]} stage-4 map, but this model was built for "
                             f"image_size={self.cfg.image_size} ({self.stage4_size[0]}x{self.stage4_size[1]})")
        local = self.local(f3)
        windows = self.windows(f4)  # (B, D, N)
        orth = attention_guided_extraction(local, windows)
        f_o = orth.mean(dim=(2, 3))
        f_c = self.window_fuse(windows.transpose(1, 2)).squeeze(1)
        feat = torch.cat([f_c, f_o], dim=1)
        v = self.hash_fc(feat)
        t = self.thresh_fc(feat).clamp(-self.cfg.signt, self.cfg.signt)
        logits = F.normalize(v.float(), dim=1) @ F.normalize(self.centers.float(), dim=1).t()
        return {"codes": v, "threshold": t, "logits": logits}

    def training_step(self, batch: dict[str, Tensor], phase: str = "train") -> dict[str, Tensor]:
        if "image" not in batch or "label" not in batch:
            raise InputError(f"CSCE-Net training needs batch keys 'image' and 'label', got {sorted(batch)}")
        out = self(batch["image"])
        t = out["threshold"].detach()
        return self.criterion(out["logits"], out["codes"], batch["label"],
                              binarize=lambda c: dynamic_sign(c, t, self.balance))

    @torch.no_grad()
    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """DSF codes in ±1 (exact 0 only for a bit exactly 0 with a non-positive threshold)."""
        if "image" not in batch:
            raise InputError(f"CSCE-Net encode needs batch key 'image', got {sorted(batch)}")
        out = self(batch["image"])
        return dynamic_sign(out["codes"].float(), out["threshold"].float(), self.balance)


@register_model("csce", CSCEConfig)
def build_csce(cfg: CSCEConfig) -> CSCENet:
    return CSCENet(cfg)


# --------------------------------------------------------------------------- released checkpoints

_REFERENCE_RENAMES = (
    ("conv_f4_s1.", "windows.convs.0."),
    ("conv_f4_s2.", "windows.convs.1."),
    ("conv_last.", "window_fuse."),
    ("localmodel.", "local.attention."),
    ("fc_t.", "thresh_fc."),
    ("fc.", "hash_fc."),
)
_BACKBONE_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


@CONVERTERS.register("csce")
def convert_reference_state_dict(sd: dict[str, Any]) -> dict[str, Any]:
    """Map a released ``ResNet_DOLG`` state dict onto :class:`CSCENet` names.

    The reference also stores the stem and first two stages a second time under ``input.*`` (an
    ``nn.Sequential`` sharing the same modules); those duplicates are dropped. Its hash centres
    ``ce_fc.centroids`` become our ``centers`` buffer. The reference has no ASPP, so build the model
    with ``local_branch="attention"`` to load it.
    """
    out: dict[str, Any] = {}
    for key, value in sd.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if k.startswith("input."):
            continue
        if k == "ce_fc.centroids":
            out["centers"] = value
            continue
        if k.startswith(_BACKBONE_PREFIXES):
            out["backbone." + k] = value
            continue
        for old, new in _REFERENCE_RENAMES:
            if k.startswith(old):
                out[new + k[len(old):]] = value
                break
        else:
            raise InputError(f"convert_reference_state_dict: unexpected key {key!r} for a CSCE-Net checkpoint")
    return out
