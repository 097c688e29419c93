"""CVNet (Lee, Seong, Lee, Kim, CVPR 2022): global descriptor + correlation-verification re-ranker.

One ResNet-50/101 (torchvision layout, the shared backbone module) serves both halves:

* **global**: stage-4 map -> GeM with a learnable exponent p (clamp 1e-6) -> whitening FC 2048 -> 2048
  with bias -> L2 normalisation (the official ``extract_global_descriptor``);
* **re-rank**: the last stage-3 block's output before its ReLU (block 13 of R50, 30 of R101, counting
  blocks from the first stage) -> :class:`~bitseek.models.cvnet.rerank.CVReranker` -> match
  probability (the official ``forward``).

Inputs are already normalised images, (B, 3, H, W) float; the test-time protocol (BGR order, scales,
crops) belongs to the data side. The authors' ``.pyth`` files load with
:func:`bitseek.models.convert.load_official`; see ``docs/cvnet.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek.errors import ConfigError, InputError
from bitseek.models.backbones import ResNet, build_backbone
from bitseek.models.base import Embedder
from bitseek.models.cvnet.rerank import CVReranker
from bitseek.registry import register_model

__all__ = ["CVNet", "CVNetConfig", "GeM", "build_cvnet"]

DEPTHS = (50, 101)
STAGE3_CHANNELS = 1024
STAGE4_CHANNELS = 2048


@dataclass
class CVNetConfig:
    """CVNet hyper-parameters; the defaults are the released R50 model's."""

    name: str = "cvnet"
    depth: int = 50  # MODEL.DEPTH: 50 | 101
    reduction_dim: int = 2048  # MODEL.HEADS.REDUCTION_DIM: output width of the whitening FC
    gem_p: float = 3.0  # initial GeM exponent (learnable; a checkpoint carries the trained value)
    rerank_scales: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])  # pyramid area factors
    rerank_dim: int = 256  # channels of each pyramid level after its 3x3 conv

    def __post_init__(self) -> None:
        if self.depth not in DEPTHS:
            raise ConfigError(f"model.depth must be 50 or 101 (the released CVNet models), got {self.depth}")
        if self.reduction_dim < 1 or self.rerank_dim < 1:
            raise ConfigError(f"model.reduction_dim and model.rerank_dim must be positive, got "
                              f"{self.reduction_dim} and {self.rerank_dim}")
        if self.gem_p <= 0:
            raise ConfigError(f"model.gem_p must be positive, got {self.gem_p}")
        if not self.rerank_scales or min(self.rerank_scales) <= 0:
            raise ConfigError(f"model.rerank_scales must be positive area factors, got {list(self.rerank_scales)}")


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent: ``mean(clamp(x, eps)^p)^(1/p)`` per channel."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p).flatten(1)


class CVNet(Embedder):
    """CVNet's global and re-rank networks on one shared ResNet."""

    def __init__(self, cfg: CVNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone: ResNet = build_backbone(f"resnet{cfg.depth}", out_indices=(4,))  # type: ignore[assignment]
        self.pool = GeM(cfg.gem_p)
        self.whiten = nn.Linear(STAGE4_CHANNELS, cfg.reduction_dim, bias=True)
        self.rerank = CVReranker(STAGE3_CHANNELS, cfg.rerank_dim, cfg.rerank_scales)
        self.dim = self.embed_dim = cfg.reduction_dim  # width of embed()'s rows

    # ------------------------------------------------------------------ global
    def global_descriptor(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised images -> (B, reduction_dim) L2-normalised descriptors."""
        (f4,) = self.backbone.forward_intermediates(_images(x), (4,))
        return F.normalize(self.whiten(self.pool(f4)), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.global_descriptor(x)

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Embedder contract: ``batch["image"]`` -> (B, D) float32 L2-normalised rows (single scale)."""
        if "image" not in batch:
            raise InputError(f"CVNet embed needs batch key 'image', got {sorted(batch)}")
        return self.global_descriptor(batch["image"]).float()

    # ------------------------------------------------------------------ re-rank
    def rerank_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 1024, ⌈H/16⌉, ⌈W/16⌉) stage-3 maps before the last block's ReLU.

        This is what a database caches (fp16 is enough for storage);
        :meth:`rerank_score_from_features` takes them back."""
        (f3,) = self.backbone.forward_intermediates(_images(x), (3,), pre_act=(3,))
        return f3

    def rerank_score_from_features(self, fq: Tensor, fk: Tensor) -> Tensor:
        """(B,) match probabilities of query/key stage-3 maps; a batch of 1 on either side is broadcast."""
        if fq.dim() != 4 or fk.dim() != 4 or fq.shape[1] != STAGE3_CHANNELS or fk.shape[1] != STAGE3_CHANNELS:
            raise InputError(f"CVNet re-rank features must be (B, {STAGE3_CHANNELS}, H, W), got {tuple(fq.shape)} "
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


def _images(x: Tensor) -> Tensor:
    if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise InputError(f"CVNet: images must be a float (B, 3, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    return x


@register_model("cvnet", CVNetConfig)
def build_cvnet(cfg: CVNetConfig) -> CVNet:
    return CVNet(cfg)
