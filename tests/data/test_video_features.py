"""Dataset presets over fake FCVID / ActivityNet / YFCC folders written in the real layouts."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from torch.utils.data import DataLoader

from bitseek.config import load_config
from bitseek.data.base import load_data
from bitseek.data.video_features import PRESETS, FCVIDConfig
from bitseek.errors import ConfigError, FileFormatError
from bitseek.registry import DATASETS

T, D, C = 5, 8, 6


def write_feats(path: Path, n: int, seed: int, t: int = T, d: int = D) -> np.ndarray:
    arr = np.random.default_rng(seed).standard_normal((n, t, d)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("feats", data=arr)
    return arr


def write_labels(path: Path, key: str, n: int, seed: int, c: int = C) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, c))
    lab[np.arange(n), rng.integers(0, c, n)] = 1
    scipy.io.savemat(path, {key: lab})
    return lab


def small(name: str, root: Path, **extra: object) -> object:
    """A preset config for the small fake files (feature size and frames inferred from them)."""
    return DATASETS.config(name, root=str(root), feature_dim=0, max_frames=0, **extra)


@pytest.fixture()
def fcvid(tmp_path):
    write_feats(tmp_path / "fcv_train_feats.h5", 11, 1)
    test = write_feats(tmp_path / "fcv_test_feats.h5", 9, 2)
    lab = write_labels(tmp_path / "fcv_test_labels.mat", "labels", 9, 3)
    return tmp_path, test, lab


def test_fcvid_queries_are_the_database(fcvid):
    root, test, lab = fcvid
    data = load_data(small("fcvid", root))
    assert data.database is None and data.db_labels is None
    assert data.searched is data.query and data.searched_labels is data.query_labels
    assert len(data.train) == 11 and len(data.query) == 9
    np.testing.assert_array_equal(data.query_labels, lab)
    np.testing.assert_array_equal(data.query[3]["feats"].numpy(), test[3])
    info = data.info
    assert info["queries_are_database"] and info["frames"] == T and info["feature_dim"] == D
    assert info["num_classes"] == C and info["published_sizes"]["database"] == 45600
    assert "self-match" in info["protocol"]


def test_presets_carry_the_published_facts():
    cfg = FCVIDConfig()
    assert (cfg.feature_dim, cfg.max_frames, cfg.batch_size) == (4096, 25, 512)
    anet = DATASETS.config("activitynet")
    assert (anet.query_labels_key, anet.db_labels_key) == ("q_label", "re_label")
    assert (anet.max_frames, anet.feature_dim) == (30, 2048)
    yfcc = DATASETS.config("yfcc")
    assert len(yfcc.train_files) == 9 and len(yfcc.db_files) == 2 and yfcc.query_files == ["query1000_feats.h5"]
    assert PRESETS["yfcc"].sizes["train"] == 409788


def test_activitynet_layout_and_training_loader(tmp_path):
    write_feats(tmp_path / "train_feats.h5", 13, 1)
    q = write_feats(tmp_path / "query_feats.h5", 4, 2)
    db = write_feats(tmp_path / "test_feats.h5", 6, 3)
    ql = write_labels(tmp_path / "q_label.mat", "q_label", 4, 4)
    dl = write_labels(tmp_path / "re_label.mat", "re_label", 6, 5)
    cfg = load_config(raw={"name": "t", "model": {"name": "lsh"}, "data": {"name": "activitynet"}},
                      overrides=[f"data.root={tmp_path}", "data.feature_dim=0", "data.max_frames=0",
                                 "data.batch_size=4"]).data
    data = load_data(cfg)
    np.testing.assert_array_equal(data.db_labels, dl)
    np.testing.assert_array_equal(data.query_labels, ql)
    np.testing.assert_array_equal(data.database[5]["feats"].numpy(), db[5])
    np.testing.assert_array_equal(data.query[0]["feats"].numpy(), q[0])
    assert not data.info["queries_are_database"]
    batches = list(DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True))
    assert [b["feats"].shape[0] for b in batches] == [4, 4, 4, 1]
    assert sorted(int(i) for b in batches for i in b["index"]) == list(range(13))


def test_yfcc_shards_form_one_split(tmp_path):
    sizes = [3, 2, 4, 1, 2, 3, 2, 2, 1]
    parts = [write_feats(tmp_path / f"yfcc_train_feats_{i + 1}.h5", n, i) for i, n in enumerate(sizes)]
    write_feats(tmp_path / "query1000_feats.h5", 3, 20)
    d1 = write_feats(tmp_path / "yfcc_test_feats_1.h5", 4, 21)
    d2 = write_feats(tmp_path / "yfcc_test_feats_2.h5", 5, 22)
    write_labels(tmp_path / "query1000_labels.mat", "labels", 3, 23)
    l1 = write_labels(tmp_path / "yfcc_test_labels_1.mat", "labels", 4, 24)
    l2 = write_labels(tmp_path / "yfcc_test_labels_2.mat", "labels", 5, 25)
    data = load_data(small("yfcc", tmp_path, max_train=15))
    full = np.concatenate(parts)
    assert len(data.train) == 15  # max_train
    np.testing.assert_array_equal(data.train[14]["feats"].numpy(), full[14])
    assert len(data.database) == 9
    np.testing.assert_array_equal(data.database[6]["feats"].numpy(), d2[2])
    np.testing.assert_array_equal(data.database[1]["feats"].numpy(), d1[1])
    np.testing.assert_array_equal(data.db_labels, np.concatenate([l1, l2]))
    assert len(data.info["files"]["train_files"]) == 9


def test_custom_file_lists_with_absolute_paths_and_empty_means_preset(tmp_path, fcvid):
    root, test, lab = fcvid
    cfg = DATASETS.config("video-features", train_files=[str(root / "fcv_train_feats.h5")],
                          query_files=[str(root / "fcv_test_feats.h5")],
                          query_labels=[str(root / "fcv_test_labels.mat")], max_frames=3)
    data = load_data(cfg)
    assert data.database is None and data.info["frames"] == 3 and data.info["file_frames"] == T
    np.testing.assert_array_equal(data.query[0]["feats"].numpy(), test[0][[0, 2, 4]])
    # explicit empty lists fall back to the preset's file names
    data2 = load_data(small("fcvid", root, train_files=[], query_labels_key=""))
    assert len(data2.train) == 11


def test_config_errors(fcvid, tmp_path):
    root, _, _ = fcvid
    with pytest.raises(ConfigError, match="data.root is not set"):
        load_data(DATASETS.config("fcvid"))
    with pytest.raises(ConfigError, match="did you mean 'max_frames'"):
        DATASETS.config("fcvid", max_frame=3)
    with pytest.raises(ConfigError, match="go together"):
        load_data(small("fcvid", root, db_files=["fcv_test_feats.h5"]))
    with pytest.raises(ConfigError, match="query_labels"):
        load_data(DATASETS.config("video-features", train_files=[str(root / "fcv_train_feats.h5")],
                                  query_files=[str(root / "fcv_test_feats.h5")]))


def test_file_errors_name_the_file(fcvid):
    root, _, _ = fcvid
    with pytest.raises(FileFormatError, match=r"features are 8-d but the config says feature_dim=4096"):
        load_data(DATASETS.config("fcvid", root=str(root)))  # preset expects VGG 4096-d
    with pytest.raises(FileFormatError, match=r"2 file\(s\) missing.*train_feats\.h5.*Source"):
        load_data(small("activitynet", root, query_files=["fcv_test_feats.h5"], db_files=["fcv_test_feats.h5"],
                        query_labels=["fcv_test_labels.mat"], db_labels=["fcv_test_labels.mat"],
                        db_labels_key="labels", query_labels_key="labels", train_files=["train_feats.h5", "x.h5"]))
    write_labels(root / "short.mat", "labels", 7, 0)
    with pytest.raises(FileFormatError, match=r"short\.mat: 7 label rows for 9 query videos"):
        load_data(small("fcvid", root, query_labels=["short.mat"])).query_labels
    scipy.io.savemat(root / "transposed.mat", {"labels": np.ones((C, 9))})
    with pytest.raises(FileFormatError, match="looks transposed"):
        load_data(small("fcvid", root, query_labels=["transposed.mat"])).query_labels
    write_feats(root / "wide.h5", 9, 5, d=D + 1)
    with pytest.raises(FileFormatError, match=r"wide\.h5: \(frames, dim\) = \(5, 9\)"):
        load_data(small("fcvid", root, query_files=["wide.h5"]))
    write_feats(root / "db.h5", 4, 6)
    write_labels(root / "db.mat", "labels", 4, 7, c=C + 2)
    with pytest.raises(FileFormatError, match="8 classes but the query labels"):
        load_data(small("fcvid", root, db_files=["db.h5"], db_labels=["db.mat"])).db_labels


@pytest.mark.parametrize("damage", ["missing", "empty", "text", "short"])
def test_training_opens_no_label_file(fcvid, damage):
    """The train split and everything training reads work with the label files absent or broken."""
    root, _, _ = fcvid
    lab = root / "fcv_test_labels.mat"
    if damage == "missing":
        lab.unlink()
    elif damage == "empty":
        lab.write_bytes(b"")
    elif damage == "text":
        lab.write_text("not a mat file")
    else:
        write_labels(lab, "labels", 7, 0)
    data = load_data(small("fcvid", root))
    batch = next(iter(DataLoader(data.train, batch_size=4)))
    assert batch["feats"].shape == (4, T, D) and len(data.query) == 9
    assert data.info["frames"] == T
    with pytest.raises(FileFormatError, match="fcv_test_labels.mat"):
        data.query_labels


def test_labels_load_once_on_first_use(fcvid, monkeypatch):
    import bitseek.data.video_features as vf

    root, _, lab = fcvid
    calls = []
    real = vf.load_label_files
    monkeypatch.setattr(vf, "load_label_files", lambda *a, **k: calls.append(a) or real(*a, **k))
    data = load_data(small("fcvid", root))
    assert calls == []
    np.testing.assert_array_equal(data.query_labels, lab)
    assert data.info["num_classes"] == C and data.searched_labels is data.query_labels
    assert len(calls) == 1


def test_validate_dataset_scans_every_file(fcvid):
    from bitseek.data.video_features import validate_dataset

    root, _, _ = fcvid
    report = validate_dataset(small("fcvid", root), chunk=4)
    assert sorted(report) == sorted(str(root / n) for n in ("fcv_train_feats.h5", "fcv_test_feats.h5"))
    assert all(r["bad_rows"] == [] for r in report.values())
    with h5py.File(root / "fcv_test_feats.h5", "r+") as f:
        f["feats"][3, 1, 2] = np.nan
    with pytest.raises(FileFormatError, match=r"fcv_test_feats\.h5: 1 row\(s\).*\[3\]"):
        validate_dataset(small("fcvid", root), chunk=4)


def _fcvid_config(root: Path, budget: str) -> object:
    return load_config(raw={"name": "t", "model": {"name": "lsh"}, "data": {"name": "fcvid"}},
                       overrides=[f"data.root={root}", "data.feature_dim=0", "data.max_frames=0",
                                  "data.batch_size=3", f"data.ram_budget={budget}"]).data


def test_training_batches_are_the_same_streamed_or_in_ram(fcvid, caplog):
    root, _, _ = fcvid
    caplog.set_level("INFO", logger="bitseek.data.h5features")
    runs = {}
    for budget in ("0", "1GB", "auto"):
        data = load_data(_fcvid_config(root, budget))
        assert data.info["train_in_memory"] == (budget != "0") == data.train.source.in_memory
        gen = torch.Generator().manual_seed(7)
        runs[budget] = [(b["index"].tolist(), b["feats"].numpy().tobytes())
                        for b in DataLoader(data.train, batch_size=3, shuffle=True, generator=gen)]
    assert runs["0"] == runs["1GB"] == runs["auto"] and len(runs["0"]) == 4
    assert "split train: 1.8 kB fits the 1.0 GB budget -> held in RAM" in caplog.text  # 11 x 5 x 8 x 4 bytes
    assert "split train: 1.8 kB, ram_budget 0 -> streams" in caplog.text


@pytest.mark.parametrize("dataset", ["fcvid", "mnist-video"])
def test_a_bad_ram_budget_is_a_config_error_naming_the_key(tmp_path, dataset):
    with pytest.raises(ConfigError, match=r"data\.ram_budget: cannot read '8XB' as a size") as e:
        load_config(raw={"name": "t", "model": {"name": "lsh"}, "data": {"name": dataset}},
                    overrides=[f"data.root={tmp_path}", "data.ram_budget=8XB"])
    assert "\n" not in str(e.value)
