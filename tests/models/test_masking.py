"""Frame masks of the masked video autoencoders (ConMH, WSCH): counts, views, uniformity, gathering."""

from __future__ import annotations

import pytest
import torch

from bitseek.errors import InputError
from bitseek.models.masking import FrameMask, complementary_masks, gather_frames, num_visible, random_mask

torch.set_num_threads(1)


@pytest.mark.parametrize("frames,prob,visible", [(25, 0.75, 7), (30, 0.5, 15), (8, 0.75, 2), (10, 0.4, 6)])
def test_num_visible_reference_rounding(frames, prob, visible):
    assert num_visible(frames, prob) == visible


@pytest.mark.parametrize("frames,prob", [(25, 0.75), (30, 0.5), (8, 0.75)])
def test_complementary_masks_disjoint_with_v_visible(frames, prob):
    torch.manual_seed(0)
    b, v = 64, num_visible(frames, prob)
    first, second = complementary_masks(b, frames, v)
    everything = set(range(frames))
    for m in (first, second):
        assert m.visible.shape == (b, v) and m.masked.shape == (b, frames - v)
        assert m.visible.dtype == torch.int64
        assert torch.all(m.visible[:, 1:] > m.visible[:, :-1])  # sorted, unique
        assert torch.all(m.masked[:, 1:] > m.masked[:, :-1])
        for row_v, row_m in zip(m.visible.tolist(), m.masked.tolist()):
            assert set(row_v) | set(row_m) == everything and not set(row_v) & set(row_m)
        as_bool = m.as_bool()
        assert as_bool.shape == (b, frames) and torch.all(as_bool.sum(1) == frames - v)
        assert not as_bool.gather(1, m.visible).any() and as_bool.gather(1, m.masked).all()
    for r1, r2 in zip(first.visible.tolist(), second.visible.tolist()):
        assert not set(r1) & set(r2)
    if 2 * v == frames:  # ActivityNet: the two views are exact complements
        assert torch.equal(first.visible, second.masked)
    assert len({tuple(r) for r in first.visible.tolist()}) > 1  # a fresh permutation per sample


def test_masks_are_uniform_over_frames():
    torch.manual_seed(1)
    first, second = complementary_masks(4000, 25, 7)
    counts = torch.bincount(first.visible.flatten(), minlength=25).float()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    counts2 = torch.bincount(second.visible.flatten(), minlength=25).float()
    assert counts2.min() > 0.8 * counts2.mean()


def test_mask_argument_errors():
    with pytest.raises(InputError):
        complementary_masks(2, 8, 0)
    with pytest.raises(InputError):
        random_mask(2, 8, 8)
    with pytest.raises(InputError):
        num_visible(8, 1.0)
    with pytest.raises(InputError):
        complementary_masks(0, 8, 2)


def test_gather_frames():
    x = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    idx = torch.tensor([[4, 0], [1, 3]])
    out = gather_frames(x, idx)
    assert torch.equal(out[0, 0], x[0, 4]) and torch.equal(out[1, 1], x[1, 3])


def test_gather_frames_reads_stacked_views_of_the_same_clips():
    x = torch.randn(3, 6, 4, requires_grad=True)
    idx = torch.tensor([[0, 5], [1, 2], [3, 4], [5, 0], [2, 2], [4, 1]])  # 2 views x 3 clips
    out = gather_frames(x, idx)
    rows = torch.arange(6).remainder(3).unsqueeze(1)
    torch.testing.assert_close(out, x[rows, idx], rtol=0, atol=0)
    g = torch.randn_like(out)
    (ours,) = torch.autograd.grad(out, x, g)
    (ref,) = torch.autograd.grad(x[rows, idx], x, g)
    torch.testing.assert_close(ours, ref)
    with pytest.raises(InputError, match="multiple of the batch"):
        gather_frames(x, idx[:4])


def test_frame_mask_property():
    m = FrameMask(visible=torch.tensor([[0, 2]]), masked=torch.tensor([[1, 3, 4]]))
    assert m.frames == 5
    assert m.as_bool().tolist() == [[False, True, False, True, True]]
