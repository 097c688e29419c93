"""CVNet's re-ranker: cross-scale correlation of two stage-3 maps, verified by a 4D-conv encoder.

For a query map ``fq`` (B, 1024, Hq, Wq) and a key map ``fk`` (B, 1024, Hk, Wk), both taken from the
last stage-3 block *before* its ReLU:

1. **Pyramid.** For each area scale s in (0.25, 0.5, 1.0) resize bilinearly (``align_corners=True``)
   to ``(round(H·√s), round(W·√s))`` (Python's half-to-even ``round``), then apply that scale's own
   3x3 conv 1024 -> 256 (no bias; query and key share it).
2. **Correlation.** For every (query scale, key scale) pair, query scale outer: cosine similarity of
   every query position with every key position, ``<q, k> / (|q|·|k| + 1e-8)``; each 4D result is
   resized bilinearly (``align_corners=True``; query dims, then key dims) to (Hq, Wq, Hk, Wk).
   The 9 tensors are stacked as channels and clamped at 0.
3. **Encoder.** Four blocks of center-pivot 4D convs, each followed by GroupNorm(4) and ReLU; the
   mean over the four spatial dims; MLP 128 -> 128 -> 2; softmax; the score is the probability of
   class 1 (same instance).

The fast path (:meth:`CVReranker.score_lifted`, what the cached re-ranker calls) computes the same
numbers with less work: a database image's convolved pyramid (:class:`Pyramid`) is computed once
and cached, and since the first 4D conv has stride 2 on both halves, its query half reads the
correlation only at every other key position and its key half only at every other query
position. :func:`correlation_slabs` computes just those two slabs (half the full tensor), each as
one matrix product already laid out as the 2D conv's input; the encoder runs channels-last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek.errors import ConfigError, InputError
from bitseek.models.layers.conv4d import CenterPivotConv4d, combine_halves, group_norm_cl

__all__ = [
    "CORRELATION_EPS",
    "LEARNER_LAYERS",
    "CVReranker",
    "Conv4dNormAct",
    "CorrelationLearner",
    "Pyramid",
    "correlate_pyramids",
    "correlation_slabs",
    "cosine_correlation",
    "cross_scale_correlation",
    "feature_pyramid",
    "lift_pyramid",
    "lifted_correlation",
    "pyramid_size",
    "resize4d",
]

CORRELATION_EPS = 1e-8

# (out channels, kernel, stride) of each center-pivot conv, per block (CVNet's CVLearner).
LEARNER_LAYERS: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((16, 5, 2),),
    ((16, 3, 1), (32, 3, 2)),
    ((32, 3, 1), (32, 3, 1), (64, 3, 2)),
    ((64, 3, 1), (64, 3, 1), (128, 3, 1)),
)
GROUPS = 4


def pyramid_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """Map size at area scale ``scale``: Python ``round`` (half to even) of each side times √scale."""
    r = math.sqrt(scale)
    return round(h * r), round(w * r)


def cosine_correlation(fq: Tensor, fk: Tensor, eps: float = CORRELATION_EPS) -> Tensor:
    """(B, C, hq, wq) x (B, C, hk, wk) -> (B, hq, wq, hk, wk) cosine similarities (eps on the norm product).

    Either batch may be 1 and is then broadcast (one query against a batch of keys)."""
    bq, c, hq, wq = fq.shape
    bk, hk, wk = fk.shape[0], *fk.shape[-2:]
    q = fq.reshape(bq, c, hq * wq)
    k = fk.reshape(bk, c, hk * wk)
    dots = torch.matmul(q.transpose(1, 2), k)  # a batch of 1 on either side broadcasts
    norms = q.norm(dim=1).unsqueeze(2) * k.norm(dim=1).unsqueeze(1)
    return (dots / (norms + eps)).view(max(bq, bk), hq, wq, hk, wk)


def resize4d(corr: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear (``align_corners=True``) resize of (B, hq, wq, hk, wk) to ``size`` = (Hq, Wq, Hk, Wk),
    over the query dims first and then over the key dims."""
    b, hq, wq, hk, wk = corr.shape
    Hq, Wq, Hk, Wk = (int(s) for s in size)
    # key positions as channels, query dims as the image
    x = corr.view(b, hq, wq, hk * wk).permute(0, 3, 1, 2)
    x = F.interpolate(x, (Hq, Wq), mode="bilinear", align_corners=True)  # (B, hk*wk, Hq, Wq)
    # query positions as channels, key dims as the image
    x = x.reshape(b, hk, wk, Hq * Wq).permute(0, 3, 1, 2)
    x = F.interpolate(x, (Hk, Wk), mode="bilinear", align_corners=True)  # (B, Hq*Wq, Hk, Wk)
    return x.reshape(b, Hq, Wq, Hk, Wk)


def feature_pyramid(f: Tensor, scales: Sequence[float], convs: Sequence[nn.Module]) -> list[Tensor]:
    """Step 1 for one side: each scale's bilinear resize (``align_corners``) followed by its 3x3 conv."""
    h, w = f.shape[-2:]
    return [conv(F.interpolate(f, pyramid_size(h, w, s), mode="bilinear", align_corners=True))
            for s, conv in zip(scales, convs)]


def correlate_pyramids(qs: Sequence[Tensor], ks: Sequence[Tensor], size: Sequence[int],
                       eps: float = CORRELATION_EPS) -> Tensor:
    """Step 2: the (B, S², Hq, Wq, Hk, Wk) clamped cross-scale correlation of two pyramids.

    A query pyramid of batch 1 is broadcast against a key batch (one query, many candidates), so
    the query side is computed once."""
    corrs = [resize4d(cosine_correlation(q, k, eps), size) for q in qs for k in ks]
    return torch.stack(corrs, dim=1).clamp(min=0)


def cross_scale_correlation(fq: Tensor, fk: Tensor, scales: Sequence[float], convs: Sequence[nn.Module],
                            eps: float = CORRELATION_EPS) -> Tensor:
    """The (B, S², Hq, Wq, Hk, Wk) non-negative cross-scale correlation of two stage-3 maps."""
    if fq.dim() != 4 or fk.dim() != 4 or fq.shape[:2] != fk.shape[:2]:
        raise InputError(f"CVNet re-rank: feature maps must be (B, C, H, W) with equal B and C, got "
                         f"{tuple(fq.shape)} and {tuple(fk.shape)}")
    size = (*fq.shape[-2:], *fk.shape[-2:])
    return correlate_pyramids(feature_pyramid(fq, scales, convs), feature_pyramid(fk, scales, convs), size, eps)


def lift_pyramid(levels: Sequence[Tensor], size: Sequence[int]) -> Tensor:
    """(B, S, C, H*W): each pyramid level L2-normalised per position, then resized bilinearly
    (``align_corners``) to the scale-1 size ``(H, W)``.

    Why: bilinear resizing is linear along each side, and the cosine correlation is a dot product of
    normalised vectors, so ``resize4d(cos(q_s, k_t), size) == lift(q_s)ᵀ lift(k_t)`` (up to float
    rounding and the 1e-8 on the norm product). Lifting each side once turns the 9 correlations and
    their 4D resizes into one batched matrix product (:func:`lifted_correlation`), and a key's lift
    depends on the key alone."""
    h, w = int(size[0]), int(size[1])
    out = []
    for lv in levels:
        x = F.normalize(lv, dim=1)
        if tuple(x.shape[-2:]) != (h, w):  # the scale-1 level needs no resize
            x = F.interpolate(x, (h, w), mode="bilinear", align_corners=True)
        out.append(x.flatten(2))
    return torch.stack(out, dim=1)


def lifted_correlation(qt: Tensor, kt: Tensor, size: Sequence[int]) -> Tensor:
    """(B, S², Hq, Wq, Hk, Wk) clamped cross-scale correlation from lifted pyramids (query scale outer).

    ``qt``: (Bq, S, C, Hq*Wq), ``kt``: (Bk, S, C, Hk*Wk); a batch of 1 on either side broadcasts."""
    corr = torch.matmul(qt.transpose(-1, -2).unsqueeze(2), kt.unsqueeze(1))  # (B, S, S, HWq, HWk)
    b, s = corr.shape[0], qt.shape[1]
    return corr.clamp_(min=0).view(b, s * kt.shape[1], *(int(v) for v in size))


def _out(workspace: dict[str, Tensor] | None, name: str, shape: tuple[int, ...], like: Tensor) -> Tensor | None:
    """A view of ``shape`` into the grow-only buffer ``workspace[name]`` (None without a workspace).

    Why: a fresh 30+ MB tensor per pair is page-faulted in by the kernel on first touch, which cost
    about a third of the correlation's time on the benchmark's CPU; a reused buffer is not."""
    if workspace is None:
        return None
    n = math.prod(shape)
    buf = workspace.get(name)
    if buf is None or buf.numel() < n or buf.dtype != like.dtype or buf.device != like.device:
        buf = workspace[name] = torch.empty(n, dtype=like.dtype, device=like.device)
    return buf[:n].view(shape)


def _mm(x: Tensor, y: Tensor, out: Tensor | None) -> Tensor:
    return torch.matmul(x, y) if out is None else torch.matmul(x, y, out=out)


def correlation_slabs(qt: Tensor, kt: Tensor, size: Sequence[int], stride: Sequence[int],
                      workspace: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """The two parts of the clamped lifted correlation that a first center-pivot conv of ``stride``
    = (query stride sq, key stride sk) reads, each laid out as its 2D conv's input:

    * ``a``: (B*hk'*wk', S², Hq, Wq), every query position at key positions ``::sk``, channel
      ``t*S + s`` for query scale s and key scale t (**key scale outer**: reorder the conv's input
      channels to match, as :meth:`CorrelationLearner.forward_slabs` does);
    * ``b``: (B*hq'*wq', S², Hk, Wk), every key position at query positions ``::sq``, channel
      ``s*S + t`` (query scale outer, as :func:`lifted_correlation`).

    ``qt``: (Bq, S, C, Hq*Wq), ``kt``: (Bk, S, C, Hk*Wk) lifted pyramids; a batch of 1 broadcasts.
    With a ``workspace`` dict (inference only) the slabs are views into buffers kept there, valid
    until the next call with the same workspace."""
    Hq, Wq, Hk, Wk = (int(v) for v in size)
    sq, sk = (int(v) for v in stride)
    b = max(qt.shape[0], kt.shape[0])
    a = _slab(kt, (Hk, Wk), sk, qt, (Hq, Wq), b, workspace, "a")
    bb = _slab(qt, (Hq, Wq), sq, kt, (Hk, Wk), b, workspace, "b")
    return a, bb


def _slab(sub: Tensor, sub_hw: tuple[int, int], stride: int, full: Tensor, full_hw: tuple[int, int], b: int,
          workspace: dict[str, Tensor] | None, name: str) -> Tensor:
    """One slab of :func:`correlation_slabs`: ``sub``'s positions at ``::stride`` (rows: position,
    scale) against every position of ``full`` (columns: scale, position), clamped at 0 and laid out
    as (B*positions, S², *full_hw)."""
    bs, s, c = sub.shape[:3]
    bf = full.shape[0]
    xs = sub.view(bs, s, c, *sub_hw)[..., ::stride, ::stride]
    p = xs.shape[-2] * xs.shape[-1]
    rows = xs.permute(0, 3, 4, 1, 2).reshape(bs, p * s, c)
    n = s * full_hw[0] * full_hw[1]
    cols = full.transpose(1, 2).reshape(bf, c, n)
    if bf == 1:
        out = _mm(rows.reshape(-1, c), cols[0], _out(workspace, name, (bs * p * s, n), full))
    else:
        out = _mm(rows, cols, _out(workspace, name, (b, p * s, n), full))
    return out.clamp_(min=0).view(b * p, s * s, *full_hw)


@dataclass(frozen=True)
class Pyramid:
    """One image's convolved re-rank pyramid: what a database caches instead of its stage-3 map.

    ``size``: (H, W) of the stage-3 map (the full size the correlation is resized to); ``levels``:
    per scale, that scale's (dim, h_s, w_s) 3x3-conv output (any float array or tensor)."""

    size: tuple[int, int]
    levels: tuple[Any, ...]


class Conv4dNormAct(nn.Module):
    """Center-pivot 4D conv -> GroupNorm(4) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = CenterPivotConv4d(cin, cout, kernel, stride)
        self.norm = nn.GroupNorm(GROUPS, cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))

    def forward_cl(self, x: Tensor) -> Tensor:
        """Channels-last (B, Hq, Wq, Hk, Wk, C) in and out."""
        return group_norm_cl(self.conv.forward_cl(x), self.norm)


class CorrelationLearner(nn.Module):
    """4D-conv encoder of the correlation -> 2 logits (different / same instance)."""

    def __init__(self, in_channels: int, layers: Sequence[Sequence[tuple[int, int, int]]] = LEARNER_LAYERS) -> None:
        super().__init__()
        blocks = []
        c = in_channels
        for block in layers:
            mods = []
            for cout, k, s in block:
                mods.append(Conv4dNormAct(c, cout, k, s))
                c = cout
            blocks.append(nn.Sequential(*mods))
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, 2))

    def forward(self, corr: Tensor) -> Tensor:
        """(B, S², Hq, Wq, Hk, Wk) correlation -> (B, 2) logits, channels-first as the official code."""
        x = corr
        for block in self.blocks:
            x = block(x)
        return self.classifier(x.flatten(2).mean(-1))

    def forward_cl(self, corr: Tensor) -> Tensor:
        """:meth:`forward` computed channels-last (same numbers to float rounding, less copying)."""
        return self._rest(corr.permute(0, 2, 3, 4, 5, 1), skip=0)

    def forward_slabs(self, a: Tensor, b: Tensor, batch: int) -> Tensor:
        """(B, 2) logits from :func:`correlation_slabs`' output: the first conv applied to the two slabs
        (the query conv's input channels reordered to the slab's key-scale-outer order)."""
        first: Conv4dNormAct = self.blocks[0][0]  # type: ignore[assignment]
        conv = first.conv
        w = conv.query_conv.weight
        s = math.isqrt(w.shape[1])
        wt = w.view(w.shape[0], s, s, *w.shape[2:]).transpose(1, 2).reshape(w.shape)
        q = F.conv2d(a, wt, conv.query_conv.bias, conv.query_conv.stride, conv.query_conv.padding)
        k = conv.key_conv(b)
        return self._rest(group_norm_cl(combine_halves(q, k, batch), first.norm), skip=1)

    def _rest(self, x: Tensor, skip: int) -> Tensor:
        layers = [m for block in self.blocks for m in block][skip:]
        for m in layers:
            x = m.forward_cl(x)
        return self.classifier(x.flatten(1, -2).mean(1))


class CVReranker(nn.Module):
    """Per-scale 3x3 convs + correlation learner: a pair of stage-3 maps -> match probability."""

    def __init__(self, in_channels: int = 1024, dim: int = 256, scales: Sequence[float] = (0.25, 0.5, 1.0)) -> None:
        super().__init__()
        if not scales or min(scales) <= 0:
            raise ConfigError(f"model.rerank_scales must be positive area factors, got {list(scales)}")
        self.scales = tuple(float(s) for s in scales)
        self.scale_convs = nn.ModuleList(nn.Conv2d(in_channels, dim, 3, padding=1, bias=False) for _ in self.scales)
        self.learner = CorrelationLearner(len(self.scales) ** 2)
        self._workspace: dict[str, Tensor] = {}  # reused slab buffers of score_lifted (not weights)

    def correlation(self, fq: Tensor, fk: Tensor) -> Tensor:
        return cross_scale_correlation(fq, fk, self.scales, self.scale_convs)

    def pyramid(self, f: Tensor) -> list[Tensor]:
        """One side's convolved pyramid (per scale: resize, then that scale's 3x3 conv)."""
        return feature_pyramid(f, self.scales, self.scale_convs)

    def lift(self, f: Tensor) -> Tensor:
        """One side's lifted pyramid (:func:`lift_pyramid`) from its (B, 1024, H, W) stage-3 maps."""
        return lift_pyramid(self.pyramid(f), f.shape[-2:])

    def lift_levels(self, levels: Sequence[Any], size: Sequence[int], device: Any = None) -> Tensor:
        """The lifted pyramid from cached levels (each (dim, h, w) or (B, dim, h, w), any float dtype)."""
        p = self.scale_convs[0].weight
        ts = [(lv if isinstance(lv, Tensor) else torch.from_numpy(lv)) for lv in levels]
        ts = [(t if t.dim() == 4 else t.unsqueeze(0)).to(device or p.device, p.dtype) for t in ts]
        if len(ts) != len(self.scales) or any(t.shape[1] != p.shape[0] for t in ts):
            raise InputError(f"CVNet re-rank: a pyramid needs {len(self.scales)} levels of {p.shape[0]} channels, "
                             f"got {[tuple(t.shape) for t in ts]}")
        return lift_pyramid(ts, size)

    def project(self, f: Tensor) -> list[Pyramid]:
        """(B, 1024, H, W) stage-3 maps -> one :class:`Pyramid` per image (what a database caches)."""
        size = (int(f.shape[-2]), int(f.shape[-1]))
        levels = self.pyramid(f)
        return [Pyramid(size, tuple(lv[i] for lv in levels)) for i in range(f.shape[0])]

    def score_lifted(self, qt: Tensor, kt: Tensor, size: Sequence[int]) -> Tensor:
        """(B,) match probabilities from lifted pyramids; ``size`` = (Hq, Wq, Hk, Wk) of the scale-1 maps.

        Equal to :meth:`forward` on the maps to float tolerance (only the correlation slabs the
        first strided conv reads are computed); the batched path of ``bitseek.rerank.cvnet``."""
        stride = self.learner.blocks[0][0].conv.stride
        ws = None if torch.is_grad_enabled() else self._workspace
        a, b = correlation_slabs(qt, kt, size, stride, ws)
        return torch.softmax(self.learner.forward_slabs(a, b, max(qt.shape[0], kt.shape[0])), dim=1)[:, 1]

    def logits(self, fq: Tensor, fk: Tensor) -> Tensor:
        return self.learner(self.correlation(fq, fk))

    def forward(self, fq: Tensor, fk: Tensor) -> Tensor:
        """(B,) probability that each (query, key) pair shows the same instance."""
        return torch.softmax(self.logits(fq, fk), dim=1)[:, 1]
