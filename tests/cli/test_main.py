from __future__ import annotations

import json

import numpy as np
import pytest

from bitseek.cli.main import _normalise_overrides, build_parser, main
from bitseek.errors import BitseekError
from bitseek.eval import map_at_k


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("demo", "train", "eval", "encode", "eval-codes", "index", "search", "convert", "list"):
        assert cmd in out


def test_override_shapes():
    assert _normalise_overrides(["a.b=1", "TRAIN.EPOCHS", "5"]) == ["a.b=1", "train.epochs=5"]
    with pytest.raises(BitseekError):
        _normalise_overrides(["lonely"])


def test_seed_invocation_shapes_parse():
    p = build_parser()
    a = p.parse_args(["train", "--cfg", "x.yaml", "optim.lr=0.1"])
    b = p.parse_args(["train", "--config", "x.yaml", "--gpu", "0"])
    assert a.config == b.config == "x.yaml" and a.overrides == ["optim.lr=0.1"] and b.gpu == "0"


def test_eval_codes_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 60)
    centers = rng.choice([-1.0, 1.0], size=(5, 16))
    codes = np.sign(centers[labels] + 0.8 * rng.standard_normal((60, 16))).astype(np.float32)
    np.save(tmp_path / "q.npy", codes[:10])
    np.save(tmp_path / "db.npy", codes)
    np.save(tmp_path / "ql.npy", labels[:10])
    np.save(tmp_path / "dbl.npy", labels)
    rc = main(["eval-codes", "--query", str(tmp_path / "q.npy"), "--db", str(tmp_path / "db.npy"),
               "--query-labels", str(tmp_path / "ql.npy"), "--db-labels", str(tmp_path / "dbl.npy"),
               "--ks", "5,20", "--out", str(tmp_path / "m.json")])
    assert rc == 0
    rows = json.loads((tmp_path / "m.json").read_text())["results"]
    ref = map_at_k(codes[:10], codes, labels[:10], labels, ks=(5, 20))
    assert [r["value"] for r in rows] == [pytest.approx(ref[5]), pytest.approx(ref[20])]
    assert "mAP@20" in capsys.readouterr().out


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    np.save(tmp_path / "q.npy", np.ones((3, 16), np.float32))
    np.save(tmp_path / "ql.npy", np.zeros(4, np.int64))
    rc = main(["eval-codes", "--query", str(tmp_path / "q.npy"), "--query-labels", str(tmp_path / "ql.npy")])
    assert rc == 2
    assert "error" in capsys.readouterr().err


def test_list_models(capsys):
    assert main(["list", "models"]) == 0
    assert "conmh" in capsys.readouterr().out.split()


def test_index_and_search_commands(tmp_path):
    from bitseek.codes import CodeSet, hamming

    rng = np.random.default_rng(1)
    db = CodeSet.from_signed(np.sign(rng.standard_normal((300, 32))), ids=np.arange(1000, 1300))
    q = CodeSet.from_signed(np.sign(rng.standard_normal((4, 32))))
    db.save(tmp_path / "db.codes")
    q.save(tmp_path / "q.codes")
    assert main(["index", "--codes", str(tmp_path / "db.codes"), "--spec", "flat", "--out", str(tmp_path / "db.index")]) == 0
    assert main(["search", "--index", str(tmp_path / "db.index"), "--queries", str(tmp_path / "q.codes"),
                 "-k", "5", "--out", str(tmp_path / "res.json")]) == 0
    res = json.loads((tmp_path / "res.json").read_text())["results"]
    d = hamming(q.codes, db.codes)
    for r, row in zip(res, d):
        order = np.lexsort((np.arange(len(row)), row))[:5]  # distance, then insertion position
        assert r["ids"] == (order + 1000).tolist()
        assert r["distances"] == row[order].tolist()
    assert main(["search", "--index", str(tmp_path / "db.index"), "--queries", str(tmp_path / "q.codes"),
                 "--radius", "12", "--out", str(tmp_path / "rad.json")]) == 0
    rad = json.loads((tmp_path / "rad.json").read_text())["results"]
    assert [sorted(r["ids"]) for r in rad] == [sorted((np.flatnonzero(row <= 12) + 1000).tolist()) for row in d]


@pytest.mark.parametrize("dataset", ["fcvid", "activitynet", "yfcc"])
def test_shipped_itq_configs_train_and_eval_on_the_real_layouts(tmp_path, dataset):
    """configs/itq/*: the baseline beside ConMH runs through `bitseek train` / `bitseek eval`."""
    from pathlib import Path

    import h5py
    import scipy.io

    rng = np.random.default_rng(0)

    def feats(name: str, n: int) -> None:
        with h5py.File(tmp_path / name, "w") as f:
            f.create_dataset("feats", data=rng.standard_normal((n, 4, 12)).astype(np.float32))

    def labels(name: str, key: str, n: int) -> None:
        scipy.io.savemat(tmp_path / name, {key: np.eye(3)[rng.integers(0, 3, n)]})

    if dataset == "fcvid":
        feats("fcv_train_feats.h5", 40), feats("fcv_test_feats.h5", 30)
        labels("fcv_test_labels.mat", "labels", 30)
    elif dataset == "activitynet":
        feats("train_feats.h5", 40), feats("query_feats.h5", 10), feats("test_feats.h5", 30)
        labels("q_label.mat", "q_label", 10), labels("re_label.mat", "re_label", 30)
    else:
        for i in range(9):
            feats(f"yfcc_train_feats_{i + 1}.h5", 5)
        feats("query1000_feats.h5", 10), feats("yfcc_test_feats_1.h5", 15), feats("yfcc_test_feats_2.h5", 15)
        labels("query1000_labels.mat", "labels", 10)
        labels("yfcc_test_labels_1.mat", "labels", 15), labels("yfcc_test_labels_2.mat", "labels", 15)
    config = str(Path(__file__).resolve().parents[2] / "configs" / "itq" / f"{dataset}-64.yaml")
    shape = [f"data.root={tmp_path}", "data.feature_dim=12", "data.max_frames=4", "model.bits=8",
             f"train.out_dir={tmp_path / 'run'}", "eval.ks=[5,10]"]
    assert main(["train", "--config", config, *shape]) == 0
    assert main(["eval", "--config", config, *shape]) == 0
    rows = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["results"]
    assert {r["metric"] for r in rows} == {"mAP@5", "mAP@10"} and all(0 <= r["value"] <= 1 for r in rows)
    assert {(r["method"], r["bits"]) for r in rows} == {("itq", 8)}
