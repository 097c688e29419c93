"""Frame masks for masked video autoencoders (ConMH; shared with WSCH).

Masks are index tensors, not boolean masks: selecting ``x[~mask].reshape(B, -1, C)`` with a boolean
mask needs a device->host sync (``nonzero``) and works only when every row has the same count, which
index tensors guarantee by construction. Every sample in a batch has the same number ``V`` of
visible frames, so encoders run on a dense (B, V, C) tensor.

Indices are sorted ascending within each row: visible tokens then appear in the same order as the
reference's boolean selection, and the decoder's predictions for masked slots come out in
ascending frame order, aligned with the gathered targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bitseek.collective import batch_rand
from bitseek.errors import InputError


@dataclass(frozen=True)
class FrameMask:
    """One masking of a (B, T) batch: ``visible`` (B, V) and ``masked`` (B, T - V) frame indices."""

    visible: Tensor
    masked: Tensor

    @property
    def frames(self) -> int:
        return self.visible.shape[1] + self.masked.shape[1]

    def as_bool(self) -> Tensor:
        """(B, T) boolean mask, True where the frame is masked (the reference convention)."""
        b = self.visible.shape[0]
        out = torch.ones(b, self.frames, dtype=torch.bool, device=self.visible.device)
        return out.scatter(1, self.visible, False)


def num_visible(frames: int, mask_prob: float) -> int:
    """Visible frames per view, ``T - int(mask_prob * T)`` (the reference rounding, toward zero)."""
    if frames < 1:
        raise InputError(f"frames must be >= 1, got {frames}")
    if not 0.0 <= mask_prob < 1.0:
        raise InputError(f"mask_prob must be in [0, 1), got {mask_prob}")
    return frames - int(mask_prob * frames)


def _check(batch: int, frames: int, visible: int) -> None:
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    if not 1 <= visible < frames:
        raise InputError(f"visible frames must be in [1, {frames - 1}] for {frames} frames, got {visible}")


def _permutation(batch: int, frames: int, device: torch.device | str | None,
                 generator: torch.Generator | None) -> Tensor:
    """An independent uniform random permutation of ``range(frames)`` per row, made on ``device``."""
    if generator is None:  # the engine's global-batch stream under DDP; torch.rand otherwise
        return batch_rand(batch, frames, device=device).argsort(dim=1)
    return torch.rand(batch, frames, device=device, generator=generator).argsort(dim=1)


def _sorted_mask(visible: Tensor, masked: Tensor) -> FrameMask:
    return FrameMask(visible=visible.sort(dim=1).values, masked=masked.sort(dim=1).values)


def random_mask(batch: int, frames: int, visible: int, device: torch.device | str | None = None,
                generator: torch.Generator | None = None) -> FrameMask:
    """A single view: ``visible`` frames chosen uniformly at random per sample."""
    _check(batch, frames, visible)
    perm = _permutation(batch, frames, device, generator)
    return _sorted_mask(perm[:, :visible], perm[:, visible:])


def complementary_masks(batch: int, frames: int, visible: int, device: torch.device | str | None = None,
                        generator: torch.Generator | None = None) -> tuple[FrameMask, FrameMask]:
    """Two views from one random permutation per sample (ConMH's data loader).

    View 1 sees the first ``visible`` positions of the permutation, view 2 the last ``visible``,
    so the visible sets are disjoint whenever ``2 * visible <= frames`` (always, for ConMH's mask
    ratios 0.75 and 0.5) and exactly complementary when ``2 * visible == frames``.
    """
    _check(batch, frames, visible)
    perm = _permutation(batch, frames, device, generator)
    first = _sorted_mask(perm[:, :visible], perm[:, visible:])
    second = _sorted_mask(perm[:, frames - visible:], perm[:, : frames - visible])
    return first, second


def gather_frames(x: Tensor, index: Tensor) -> Tensor:
    """``x[b % B, index[b, k]]`` for (B, T, C) ``x`` and (R, K) ``index`` -> (R, K, C), without host syncs.

    ``R`` may be a multiple of ``B``: rows ``nB..(n+1)B-1`` of ``index`` select from the same clips
    (the stacked masked views of one batch), so both views are read in one pass. One row-wise
    ``index_select`` over the flattened clips: several times faster than ``torch.gather`` with an
    index expanded over the channels, and its backward is a row-wise ``index_add``.
    """
    b, t = x.shape[0], x.shape[1]
    rows = index.shape[0]
    if rows % b:
        raise InputError(f"gather_frames: {rows} index rows is not a multiple of the batch {b}")
    clip = torch.arange(rows, device=index.device).remainder_(b).mul_(t).unsqueeze(1)
    flat = (index + clip).reshape(-1)
    return x.reshape(b * t, *x.shape[2:]).index_select(0, flat).reshape(rows, index.shape[1], *x.shape[2:])


def stack_views(*masks: FrameMask) -> FrameMask:
    """The views of one batch as one mask over ``len(masks) * B`` rows (view 1's rows first)."""
    return FrameMask(visible=torch.cat([m.visible for m in masks]), masked=torch.cat([m.masked for m in masks]))
