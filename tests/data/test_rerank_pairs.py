"""Re-ranker training pairs: curriculum values, hard negatives by similarity, Hide-and-Seek masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitseek.data.image_dataset import item_generator
from bitseek.data.rerank_pairs import (Curriculum, RerankPairs, RerankPairsConfig, apply_cell_mask, draw_pairs,
                                       hide_and_seek_mask, linear_ramp, mine_hard_negatives)
from bitseek.errors import ConfigError


def test_curriculum_ramps_from_first_to_last_epoch():
    c = Curriculum(hard_ratio=(0.0, 1.0), hide_prob=(0.1, 0.5), epochs=5)
    got = np.array([c.at(e) for e in range(5)])
    assert got == pytest.approx(np.array([(0.0, 0.1), (0.25, 0.2), (0.5, 0.3), (0.75, 0.4), (1.0, 0.5)]))
    assert c.at(9) == pytest.approx((1.0, 0.5))  # past the end: the last value
    assert linear_ramp(0.2, 0.8, 0, 1) == 0.2  # a one-epoch run stays at the first value
    with pytest.raises(ConfigError, match="hide_prob"):
        Curriculum(hide_prob=(0.0, 1.5))
    with pytest.raises(ConfigError, match="hard_ratio"):
        RerankPairsConfig(hard_ratio=[0.5])


def test_hard_negatives_are_the_most_similar_images_of_other_landmarks():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(12, 8)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    y = np.repeat(np.arange(4), 3)
    hard = mine_hard_negatives(d, y, k=3)
    assert hard.shape == (12, 3)
    sims = d @ d.T
    for i in range(12):
        others = np.flatnonzero(y != y[i])
        expect = others[np.argsort(-sims[i, others], kind="stable")][:3]
        assert list(hard[i]) == list(expect)  # the top-3 by inner product, most similar first
        assert (y[hard[i]] != y[i]).all()
    assert mine_hard_negatives(d, y, k=100).shape == (12, 9)  # no more than the 9 other-landmark images


def test_pairs_balance_positives_and_negatives_and_follow_the_ratio():
    y = np.repeat(np.arange(5), 4)
    hard = np.stack([np.flatnonzero(y != c)[:2] for c in y])
    for ratio in (0.0, 1.0):
        rows = draw_pairs(y, hard, ratio, np.random.default_rng(1))
        pos, neg = rows[0::2], rows[1::2]
        assert (pos[:, 2] == 1).all() and (neg[:, 2] == 0).all()
        assert (y[pos[:, 0]] == y[pos[:, 1]]).all() and (pos[:, 0] != pos[:, 1]).all()
        assert (y[neg[:, 0]] != y[neg[:, 1]]).all()
        in_hard = np.array([b in hard[a] for a, b in neg[:, :2]])
        if ratio == 1.0:
            assert in_hard.all() and neg[:, 3].all()
        else:
            assert not neg[:, 3].any()
    half = draw_pairs(y, hard, 0.5, np.random.default_rng(2))[1::2, 3]
    assert 0 < half.sum() < len(half)


def test_hide_and_seek_mask_probability_and_shape():
    g = torch.Generator().manual_seed(0)
    masks = torch.stack([hide_and_seek_mask(4, 0.5, 0.5, g) for _ in range(2000)])
    assert masks.shape == (2000, 4, 4)
    hidden_any = (masks == 0).flatten(1).any(1).float().mean()
    assert 0.45 < float(hidden_any) < 0.55  # applied to about half the images
    applied = masks[(masks == 0).flatten(1).any(1)]
    assert 0.45 < float((applied == 0).float().mean()) < 0.56  # about half their cells hidden
    assert (hide_and_seek_mask(4, 0.0, 0.5, g) == 1).all()
    assert (hide_and_seek_mask(4, 1.0, 1.0, g) == 0).all()


def test_cell_mask_zeroes_the_matching_map_cells():
    maps = torch.ones(1, 3, 8, 6)
    mask = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # hide the top-right cell
    out = apply_cell_mask(maps, mask)
    assert (out[0, :, :4, 3:] == 0).all()
    assert float(out.sum()) == 3 * (8 * 6 - 4 * 3)


def test_pairs_dataset_is_repeatable_per_epoch_and_index():
    y = np.repeat(np.arange(3), 3)
    hard = mine_hard_negatives(np.eye(9, dtype=np.float32), y, 2)
    src = lambda i: torch.full((2, 4, 4), float(i))  # noqa: E731
    a = RerankPairs(src, y, hard, Curriculum((0.0, 1.0), (1.0, 1.0), 3), seed=5)
    b = RerankPairs(src, y, hard, Curriculum((0.0, 1.0), (1.0, 1.0), 3), seed=5)
    a.set_epoch(2)
    b.set_epoch(1)
    b.set_epoch(2)
    assert len(a) == 18 and np.array_equal(a.pairs, b.pairs)
    x, z = a[3], b[3]
    assert torch.equal(x["query_mask"], z["query_mask"]) and torch.equal(x["key_map"], z["key_map"])
    assert int(x["query_map"][0, 0, 0]) == int(a.pairs[3, 0])
    assert a.hard_ratio == 1.0 and a.pairs[1::2, 3].all()  # last epoch: every negative hard
    g = item_generator(5, 2, 3)  # the masks come from the item's own generator
    assert torch.equal(hide_and_seek_mask(4, 1.0, 0.5, g), x["query_mask"])
