"""Diagnostics: float ceilings through the float index, bit usage, and a model's float representations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from bitseek.errors import InputError
from bitseek.eval import diagnostics as dg


def test_cosine_ranking_is_by_angle_not_length():
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    db = np.array([[10.0, 1.0], [0.0, 0.1], [1.0, 1.0]])  # long but off-axis rows must not win by length
    np.testing.assert_array_equal(dg.cosine_ranking(q, db, 3), [[0, 2, 1], [1, 2, 0]])


def test_float_map_against_a_hand_computed_ranking():
    # query 0 ranks db 0, 2, 1 (relevant: 0 and 1): AP@3 = (1/1 + 2/3) / 3
    q = np.array([[1.0, 0.0]])
    db = np.array([[1.0, 0.05], [0.0, 1.0], [1.0, 0.5]])
    ql, dl = np.array([[1, 0]]), np.array([[1, 0], [1, 0], [0, 1]])
    got = dg.float_map(q, db, ql, dl, ks=(1, 3))
    assert got == {"mAP@1": pytest.approx(1.0), "mAP@3": pytest.approx((1 + 2 / 3) / 3)}


def test_float_map_equals_a_brute_force_ranking():
    rng = np.random.default_rng(0)
    q, db = rng.normal(size=(20, 8)), rng.normal(size=(60, 8))
    ql = np.eye(4)[rng.integers(0, 4, 20)]
    dl = np.eye(4)[rng.integers(0, 4, 60)]
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (db / np.linalg.norm(db, axis=1, keepdims=True)).T
    order = np.argsort(-cos, axis=1, kind="stable")
    rel = (ql @ dl.T > 0)[np.arange(20)[:, None], order[:, :10]]
    ap = (rel * np.cumsum(rel, axis=1) / np.arange(1, 11)).sum(axis=1) / 10
    assert dg.float_map(q, db, ql, dl, ks=(10,))["mAP@10"] == pytest.approx(ap.mean(), abs=1e-12)
    with pytest.raises(InputError, match="NaN"):
        dg.float_map(np.full((2, 8), np.nan), db, ql[:2], dl)


def test_bit_usage_hand_cases():
    # four codes, bits: balanced, balanced and independent of it, a copy of the first, constant
    codes = np.array([[1, 1, 1, 1], [1, -1, 1, 1], [-1, 1, -1, 1], [-1, -1, -1, 1]], dtype=float)
    u = dg.bit_usage(codes)
    assert u["mean_abs_bit_mean"] == pytest.approx(0.25)  # only the constant bit is unbalanced
    # |corr| over the 12 ordered pairs: bits 0/2 correlate 1 (twice), the rest 0 (constant bit: 0)
    assert u["mean_abs_bit_correlation"] == pytest.approx(2 / 12)
    assert u["bit_pairs_correlated_above_0.5"] == pytest.approx(2 / 12)
    assert u["distinct_codes_fraction"] == 1.0
    assert dg.bit_usage((codes[[0, 0, 1, 1]] > 0).astype(np.uint8))["distinct_codes_fraction"] == 0.5  # 0/1 bits
    with pytest.raises(InputError):
        dg.bit_usage(np.ones(4))


class _Clips(Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"feats": self.x[i], "index": i}


def test_representation_maps_probe_a_model_through_its_public_features():
    from bitseek.models.conmh import ConMH, ConMHConfig

    torch.manual_seed(0)
    model = ConMH(ConMHConfig(bits=8, feature_dim=16, max_frames=6, hidden_size=16, depth=1, heads=2,
                              decoder_dim=8, decoder_depth=1, decoder_heads=2)).eval()
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 16))
    lab_q, lab_db = rng.integers(0, 3, 9), rng.integers(0, 3, 30)
    make = lambda lab: torch.tensor(centres[lab][:, None] + 0.3 * rng.normal(size=(len(lab), 6, 16)),  # noqa: E731
                                    dtype=torch.float32)
    q, db = _Clips(make(lab_q)), _Clips(make(lab_db))
    ql, dl = np.eye(3)[lab_q], np.eye(3)[lab_db]
    got = dg.representation_maps(model.features, q, db, ql, dl, ks=(5,), batch_size=4)
    assert set(got) == {"encoder_output", "pre_sign_code"}
    with torch.no_grad():
        pooled = {k: (model.features({"feats": q.x})[k].mean(1), model.features({"feats": db.x})[k].mean(1))
                  for k in got}
    for name, (a, b) in pooled.items():  # batching and pooling change nothing
        assert got[name] == dg.float_map(a.numpy(), b.numpy(), ql, dl, ks=(5,))
    # the raw inputs are separable, so the float ceiling is high
    assert dg.float_map(q.x.mean(1).numpy(), db.x.mean(1).numpy(), ql, dl, ks=(5,))["mAP@5"] > 0.9
