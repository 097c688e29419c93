"""eval-codes on saved codes and features (labels or a revisitop gnd), and eval-ranks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from bitseek.cli.main import main
from bitseek.codes import CodeSet, FeatureSet
from bitseek.eval import map_at_k, map_at_k_ranked, revisited

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "revisitop"


def _metrics(path: Path) -> dict[str, float]:
    return {r["metric"]: r["value"] for r in json.loads(path.read_text())["results"]}


def test_eval_codes_takes_a_label_key_per_file(tmp_path):
    """ActivityNet: q_label.mat and re_label.mat hold differently named variables."""
    rng = np.random.default_rng(0)
    q = np.sign(rng.standard_normal((8, 16))).astype(np.float32)
    db = np.sign(rng.standard_normal((30, 16))).astype(np.float32)
    ql, dl = np.eye(3)[rng.integers(0, 3, 8)], np.eye(3)[rng.integers(0, 3, 30)]
    np.save(tmp_path / "q.npy", q)
    np.save(tmp_path / "db.npy", db)
    scipy.io.savemat(tmp_path / "q_label.mat", {"q_label": ql, "note": np.zeros((1, 1))})
    scipy.io.savemat(tmp_path / "re_label.mat", {"re_label": dl, "note": np.zeros((1, 1))})
    out = tmp_path / "m.json"
    rc = main(["eval-codes", "--query", str(tmp_path / "q.npy"), "--db", str(tmp_path / "db.npy"),
               "--query-labels", str(tmp_path / "q_label.mat"), "--query-label-key", "q_label",
               "--db-labels", str(tmp_path / "re_label.mat"), "--db-label-key", "re_label",
               "--ks", "5,10", "--out", str(out)])
    assert rc == 0
    exp = map_at_k(q, db, ql, dl, ks=[5, 10])
    assert _metrics(out) == {"mAP@5": exp[5], "mAP@10": exp[10]}
    # one key for both files cannot name both variables
    assert main(["eval-codes", "--query", str(tmp_path / "q.npy"), "--db", str(tmp_path / "db.npy"),
                 "--query-labels", str(tmp_path / "q_label.mat"), "--db-labels", str(tmp_path / "re_label.mat"),
                 "--label-key", "q_label", "--ks", "5"]) == 2


def test_eval_codes_on_saved_ternary_code_sets_ranks_the_zeros(tmp_path):
    rng = np.random.default_rng(2)
    q = rng.choice([-1.0, 0.0, 1.0], size=(20, 16), p=[0.4, 0.2, 0.4]).astype(np.float32)
    db = rng.choice([-1.0, 0.0, 1.0], size=(50, 16), p=[0.4, 0.2, 0.4]).astype(np.float32)
    ql, dl = rng.integers(0, 4, 20), rng.integers(0, 4, 50)
    CodeSet.from_signed(q).save(tmp_path / "query.codes")
    CodeSet.from_signed(db).save(tmp_path / "database.codes")
    np.save(tmp_path / "ql.npy", ql)
    np.save(tmp_path / "dl.npy", dl)
    out = tmp_path / "m.json"
    assert main(["eval-codes", "--query", str(tmp_path / "query.codes"), "--db", str(tmp_path / "database.codes"),
                 "--query-labels", str(tmp_path / "ql.npy"), "--db-labels", str(tmp_path / "dl.npy"),
                 "--ks", "5,20", "--out", str(out)]) == 0
    exp = map_at_k(q, db, ql, dl, ks=[5, 20])
    assert _metrics(out) == {"mAP@5": exp[5], "mAP@20": exp[20]}


def test_eval_codes_scores_feature_files_by_inner_product(tmp_path):
    rng = np.random.default_rng(4)
    q = rng.standard_normal((10, 24)).astype(np.float32)
    db = rng.standard_normal((40, 24)).astype(np.float32)
    ql, dl = rng.integers(0, 3, 10), rng.integers(0, 3, 40)
    FeatureSet(q).save(tmp_path / "q.feats")
    FeatureSet(db).save(tmp_path / "db.feats", dtype="float16")
    np.save(tmp_path / "ql.npy", ql)
    np.save(tmp_path / "dl.npy", dl)
    out = tmp_path / "m.json"
    assert main(["eval-codes", "--query", str(tmp_path / "q.feats"), "--db", str(tmp_path / "db.feats"),
                 "--query-labels", str(tmp_path / "ql.npy"), "--db-labels", str(tmp_path / "dl.npy"),
                 "--ks", "1,5", "--out", str(out)]) == 0
    d16 = db.astype(np.float16).astype(np.float32)
    order = np.argsort(-(q @ d16.T), axis=1, kind="stable")[:, :5]
    exp = map_at_k_ranked(order, ql, dl, ks=[1, 5])
    assert _metrics(out) == pytest.approx({"mAP@1": exp[1], "mAP@5": exp[5]}, abs=1e-12)
    # codes against features is a mistake, named
    CodeSet.from_signed(np.sign(q[:, :8] + 1e-3)).save(tmp_path / "q.codes")
    assert main(["eval-codes", "--query", str(tmp_path / "q.codes"), "--db", str(tmp_path / "db.feats"),
                 "--query-labels", str(tmp_path / "ql.npy"), "--db-labels", str(tmp_path / "dl.npy")]) == 2


def _gnd_file() -> Path:
    p = FIXTURES / "gnd_rparis6k.pkl"
    if not p.is_file():
        pytest.skip(f"revisitop fixture {p} not available")
    return p


def test_eval_codes_with_a_gnd_runs_the_revisited_protocol_on_features(tmp_path):
    from bitseek.data.revisited import load_gnd

    gfile = _gnd_file()
    gnd = load_gnd(gfile)
    rng = np.random.default_rng(1)
    q = rng.standard_normal((len(gnd["qimlist"]), 16)).astype(np.float32)
    db = rng.standard_normal((len(gnd["imlist"]), 16)).astype(np.float32)
    FeatureSet(q).save(tmp_path / "q.feats")
    FeatureSet(db).save(tmp_path / "db.feats")
    out = tmp_path / "m.json"
    assert main(["eval-codes", "--query", str(tmp_path / "q.feats"), "--db", str(tmp_path / "db.feats"),
                 "--gnd", str(gfile), "--out", str(out)]) == 0
    exp = revisited.evaluate(np.argsort(-(q @ db.T), axis=1, kind="stable").T, gnd)
    got = _metrics(out)
    assert [got["mAP-E"], got["mAP-M"], got["mAP-H"]] == [exp[p].map for p in ("easy", "medium", "hard")]


def test_eval_ranks_scores_one_rank_matrix_per_protocol(tmp_path, capsys):
    from bitseek.data.revisited import load_gnd

    gfile = _gnd_file()
    gnd = load_gnd(gfile)
    n_q, n_db = len(gnd["qimlist"]), len(gnd["imlist"])
    rng = np.random.default_rng(3)
    ranks = {p: np.argsort(rng.random((n_db, n_q)), axis=0) for p in ("easy", "medium", "hard")}
    args = ["eval-ranks", "--gnd", str(gfile), "--out", str(tmp_path / "m.json")]
    for p, r in ranks.items():
        np.save(tmp_path / f"{p}.npy", r)
        args += ["--ranks", f"{p}={tmp_path / f'{p}.npy'}"]
    assert main(args) == 0
    exp = revisited.evaluate(ranks, gnd)
    got = _metrics(tmp_path / "m.json")
    assert [got["mAP-E"], got["mAP-M"], got["mAP-H"]] == [exp[p].map for p in ("easy", "medium", "hard")]
    assert "mAP E:" in capsys.readouterr().out
    # one matrix, transposed layout
    np.save(tmp_path / "one.npy", ranks["medium"].T)
    assert main(["eval-ranks", "--gnd", str(gfile), "--ranks", str(tmp_path / "one.npy"), "--transpose",
                 "--out", str(tmp_path / "one.json")]) == 0
    assert _metrics(tmp_path / "one.json")["mAP-M"] == exp["medium"].map
    # a wrong protocol name is a one-line error
    assert main(["eval-ranks", "--gnd", str(gfile), "--ranks", f"medum={tmp_path / 'one.npy'}"]) == 2
