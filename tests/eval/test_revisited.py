"""Revisited Oxford/Paris protocol: hand cases, the real ground truth, and the safe loader."""

from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest

from bitseek.errors import FileFormatError, InputError
from bitseek.eval import revisited
from bitseek.eval.revisited import compute_ap, compute_map, evaluate, format_results, load_gnd, protocol_gnd


def column(*ids: int, n: int = 8) -> np.ndarray:
    """A full ranking of n items that starts with ``ids``."""
    rest = [i for i in range(n) if i not in ids]
    return np.array(list(ids) + rest)[:, None]


def test_junk_shift_and_trapezoidal_ap():
    # ranking 2, 0, 5, 1 ...: positives 0, 1 at positions 1, 3; junk 2 at position 0 -> shifted 0, 2
    m, aps, pr, prs = compute_map(column(2, 0, 5, 1), [{"ok": [0, 1], "junk": [2]}], kappas=[1, 5, 10])
    exp = (1 + 1) * 0.5 / 2 + (1 / 2 + 2 / 3) * 0.5 / 2
    assert m == pytest.approx(exp) and aps[0] == pytest.approx(exp)
    # shifted 1-based positions 1, 3: P@1 = 1/1; P@5 capped at kq = 3 -> 2/3
    np.testing.assert_allclose(prs[0], [1.0, 2 / 3, 2 / 3])
    np.testing.assert_allclose(pr, prs[0])


def test_capped_precision_at_k_and_first_rank_precision():
    _, _, pr, _ = compute_map(column(4, 5, 6), [{"ok": [4, 5, 6]}], kappas=[1, 10])
    assert pr.tolist() == [1.0, 1.0]  # 3 positives at ranks 1-3: P@10 = 1.0, not 0.3
    assert compute_ap(np.array([0, 1, 2]), 3) == pytest.approx(1.0)
    assert compute_ap(np.array([1]), 2) == pytest.approx((0 / 1 + 1 / 2) / 2 / 2)


def test_queries_without_positives_are_nan_and_excluded():
    ranks = np.hstack([column(0, 1), column(1, 0), column(3)])
    gnd = [{"ok": [0]}, {"ok": []}, {"ok": [3], "junk": []}]
    m, aps, pr, prs = compute_map(ranks, gnd, kappas=[1])
    assert np.isnan(aps[1]) and np.isnan(prs[1]).all()
    assert m == 1.0 and pr.tolist() == [1.0]
    with pytest.raises(InputError, match="no query has a positive"):
        compute_map(ranks[:, :1], [{"ok": []}])


def test_truncated_ranking_without_any_positive_scores_zero():
    m, _, pr, _ = compute_map(np.array([[1], [2]]), [{"ok": [7]}], kappas=[1])
    assert m == 0.0 and pr.tolist() == [0.0]


def test_protocol_sets_follow_example_evaluate():
    g = [{"easy": [1], "hard": [2], "junk": [3]}]
    e, m, h = (protocol_gnd(g, p)[0] for p in ("easy", "medium", "hard"))
    assert e["ok"].tolist() == [1] and sorted(e["junk"].tolist()) == [2, 3]
    assert sorted(m["ok"].tolist()) == [1, 2] and m["junk"].tolist() == [3]
    assert h["ok"].tolist() == [2] and sorted(h["junk"].tolist()) == [1, 3]


@pytest.mark.parametrize(
    "ranks, match",
    [
        (np.zeros((5, 2), dtype=np.int64), "2 columns for 1 queries"),
        (np.zeros((1, 5), dtype=np.int64), "looks transposed"),
        (np.array([[0.0], [1.0]]), "integer"),
        (np.array([[0], [-1]]), ">= 0"),
        (np.array([[0], [0]]), "appears twice"),
        (np.zeros((0, 1), dtype=np.int64), "empty ranking"),
    ],
)
def test_compute_map_refuses_bad_ranks(ranks, match):
    with pytest.raises(InputError, match=match):
        compute_map(ranks, [{"ok": [0]}])


def test_real_ground_truth_loads_and_has_known_shape(gnd_file):
    g = load_gnd(gnd_file)
    assert len(g["qimlist"]) == len(g["gnd"]) == 70
    assert len(g["imlist"]) == (4993 if "oxford" in gnd_file.name else 6322)


def test_perfect_ranking_scores_100_on_every_protocol(gnd_file):
    g = load_gnd(gnd_file)
    n = len(g["imlist"])
    cols = []
    for q in g["gnd"]:
        head = list(q["easy"]) + list(q["hard"]) + list(q["junk"])
        rest = np.setdiff1d(np.arange(n), head)
        cols.append(np.concatenate([np.array(head, dtype=np.int64), rest]))
    res = evaluate(np.stack(cols, axis=1), g)
    for proto, r in res.items():
        assert r.map == 100.0 and r.mp_at_k == {1: 100.0, 5: 100.0, 10: 100.0}, proto
    if "oxford" in gnd_file.name:  # two ROxf queries have no easy positive
        assert len(res["easy"].empty_queries) == 2 and res["easy"].n_evaluated == 68
    assert "mAP E: 100.0, M: 100.0, H: 100.0" in format_results(res, "x")


def test_random_ranking_equals_the_reference_loop(ref, gnd_file):
    g = load_gnd(gnd_file)
    n = len(g["imlist"])
    rng = np.random.default_rng(0)
    # semi-informative: positives pulled forward, so AP and P@k are far from 0
    score = rng.random((n, 70))
    for i, q in enumerate(g["gnd"]):
        score[q["easy"] + q["hard"], i] += rng.random(len(q["easy"]) + len(q["hard"])) * 0.8
    ranks = np.argsort(-score, axis=0)
    res = evaluate(ranks, g)
    for proto in ("easy", "medium", "hard"):
        pg = protocol_gnd(g, proto)
        m, aps, pr, prs = ref.revisitop_compute_map(ranks, pg, [1, 5, 10])
        mine = compute_map(ranks, pg, (1, 5, 10))
        assert mine[0] == m  # identical floats
        np.testing.assert_array_equal(mine[1], aps)
        np.testing.assert_array_equal(mine[2], pr)
        np.testing.assert_array_equal(mine[3], prs)
        assert res[proto].map == float(np.around(m * 100, 2))
        assert 5 < res[proto].map < 100


def test_per_protocol_rank_matrices(gnd_file):
    g = load_gnd(gnd_file)
    n = len(g["imlist"])
    good = np.tile(np.arange(n)[:, None], (1, 70))
    rng = np.random.default_rng(1)
    other = np.stack([rng.permutation(n) for _ in range(70)], axis=1)
    res = evaluate({"medium": good, "hard": other}, g, protocols=("medium", "hard"))
    assert res["medium"].map == evaluate(good, g, protocols="medium")["medium"].map
    assert res["hard"].map == evaluate(other, g, protocols=["hard"])["hard"].map
    with pytest.raises(InputError, match="no rank matrix for protocol 'easy'"):
        evaluate({"medium": good}, g)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "obj, match",
    [
        (_Evil(), "refuses to load"),
        ({"imlist": [], "qimlist": [], "gnd": collections.OrderedDict()}, "refuses to load"),
        ({"imlist": np.arange(3), "qimlist": [], "gnd": []}, "refuses to load"),
        ([1, 2], "expected a dict"),
        ({"imlist": ["a"], "qimlist": ["q"]}, "missing key 'gnd'"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": [], "junk": [3]}]}, "outside the 1"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [0], "hard": []}]}, "missing key 'junk'"),
        ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": ["0"], "hard": [], "junk": []}]}, "integers"),
        ({"imlist": ["a"], "qimlist": [], "gnd": [{"easy": [0], "hard": [], "junk": []}]}, "1 gnd entries for 0"),
    ],
)
def test_load_gnd_refuses_unsafe_or_malformed_files(tmp_path, obj, match):
    p = tmp_path / "gnd_bad.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=3))
    with pytest.raises(FileFormatError, match=match):
        load_gnd(p)


def test_load_gnd_refuses_truncated_and_missing_files(tmp_path):
    src = pickle.dumps({"imlist": ["a"], "qimlist": [], "gnd": []}, protocol=3)
    p = tmp_path / "gnd_trunc.pkl"
    p.write_bytes(src[: len(src) // 2])
    with pytest.raises(FileFormatError, match="not a readable ground-truth pickle"):
        load_gnd(p)
    with pytest.raises(FileFormatError, match="no such ground-truth file"):
        load_gnd(tmp_path / "nope.pkl")


def test_module_exports():
    assert revisited.PROTOCOLS == ("easy", "medium", "hard")
