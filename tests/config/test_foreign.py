"""Issue 11 item 21: the seeds' own config files run as they are (ConMH configs/*.py, WSCH Json/*.json)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from bitseek.cli.main import main
from bitseek.config import load_config
from bitseek.config.foreign import read_python_assignments
from bitseek.errors import ConfigError

T, D, C = 8, 16, 4

# The official configs/conmh_fcv.py layout (huangmozhi9527/ConMH), edited the way a researcher edits it:
# smaller sizes, their own paths. Path keys are built with + and str(), as in the official file.
CONMH_FCV = """\
# model
model_name = 'conmh'
use_checkpoint = None
feature_size = {D}
hidden_size = 16
max_frames = {T}
nbits = 16
transformer_type = 'mini'

# dataset
dataset = 'fcv'
workers = 0
batch_size = 8
mask_prob = 0.75

# train
seed = 3
num_epochs = 7
a = 1.0
temperature = 0.5
tau_plus = 0.1
train_num_sample = 24

# test
test_batch_size = 16
test_num_sample = 12

# optimizer
optimizer_name = 'Adam'
schedule = 'StepLR'
lr = 1e-3
min_lr = 1e-5
lr_decay_rate = 20
lr_decay_gamma = 0.9
weight_decay = 0.0

# path
data_root = '{root}/'
home_root = '{home}/'

train_feat_path = [data_root + 'fcv_train_feats.h5']
test_feat_path = [data_root + 'fcv_test_feats.h5']
label_path = [data_root + 'fcv_test_labels.mat']

save_dir = home_root + 'saved_model/' + model_name + '_' + dataset
file_path = save_dir + '_' + str(nbits) + 'bit'
"""


def _fcvid_files(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("fcv_train_feats.h5", 24), ("fcv_test_feats.h5", 12)):
        with h5py.File(root / name, "w") as f:
            f.create_dataset("feats", data=rng.standard_normal((n, T, D)).astype(np.float32))
    labels = np.zeros((12, C))
    labels[np.arange(12), rng.integers(0, C, 12)] = 1
    scipy.io.savemat(root / "fcv_test_labels.mat", {"labels": labels})


def test_an_edited_conmh_config_trains_as_it_is(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fcvid_files(tmp_path / "fcv")
    cfg_file = tmp_path / "conmh_fcv.py"
    cfg_file.write_text(CONMH_FCV.format(D=D, T=T, root=tmp_path / "fcv", home=tmp_path / "conmh"))
    cfg = load_config(cfg_file)
    assert (cfg.model.name, cfg.model.bits, cfg.model.feature_dim, cfg.model.max_frames) == ("conmh", 16, D, T)
    assert cfg.model.transformer_type == "mini" and cfg.optim.lr == pytest.approx(1e-3) and cfg.train.seed == 3
    assert cfg.train.epochs == 2  # the official train.py evaluates the checkpoint of epoch num_epochs - 6
    assert cfg.data.root == str(tmp_path / "fcv") and cfg.data.train_files == ["fcv_train_feats.h5"]
    assert cfg.data.query_files == ["fcv_test_feats.h5"] and cfg.data.db_files == []
    assert cfg.train.out_dir == str(tmp_path / "conmh" / "saved_model" / "conmh_fcv_16bit")
    assert cfg.eval.ties == "numpy" and cfg.optim.step_size == 20  # the rest comes from the conmh/fcvid recipe

    capsys.readouterr()
    args = ["train", "--config", str(cfg_file), "train.max_steps_per_epoch=1", "train.progress=false"]
    if torch.cuda.is_available():
        args += ["--gpu", "0"]
    assert main(args) == 0
    assert (tmp_path / "conmh" / "saved_model" / "conmh_fcv_16bit" / "model" / "config.json").is_file()
    text = capsys.readouterr().err
    for key in ("home_root", "save_dir", "train_num_sample", "test_num_sample", "use_checkpoint"):
        assert f"ignored {key}" in text
    for key in ("nbits -> model.bits", "data_root -> data.root", "file_path -> train.out_dir"):
        assert key in text


def test_the_python_file_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    bad = tmp_path / "evil.py"
    bad.write_text(f"import os\nos.system('touch {marker}')\n")
    with pytest.raises(ConfigError, match="evil.py:1: an import"):
        load_config(bad)
    call = tmp_path / "call.py"
    call.write_text(f"nbits = 64\nx = open('{marker}', 'w')\n")
    with pytest.raises(ConfigError, match="call.py:2: unsupported expression"):
        read_python_assignments(call)
    assert not marker.exists()


def test_an_unknown_conmh_key_is_an_error_with_a_suggestion(tmp_path):
    cfg = tmp_path / "typo.py"
    cfg.write_text("nbit = 32\n")
    with pytest.raises(ConfigError, match="unknown key 'nbit'; did you mean 'nbits'"):
        load_config(cfg)


def test_a_conmh_activitynet_config_maps_queries_and_database(tmp_path):
    cfg = tmp_path / "conmh_act.py"
    cfg.write_text("dataset = 'activitynet'\nnbits = 32\ndata_root = '/d/act/'\nnum_epochs = 505\n"
                   "train_feat_path = [data_root + 'train_feats.h5']\ntest_feat_path = [data_root + 'test_feats.h5']\n"
                   "label_path = [data_root + 're_label.mat']\nquery_feat_path = [data_root + 'query_feats.h5']\n"
                   "query_label_path = [data_root + 'q_label.mat']\n")
    c = load_config(cfg)
    assert c.name == "conmh-activitynet-32" and c.model.bits == 32 and c.train.epochs == 500
    assert (c.data.name, c.data.root) == ("activitynet", "/d/act")
    assert c.data.query_files == ["query_feats.h5"] and c.data.db_files == ["test_feats.h5"]
    assert c.data.query_labels == ["q_label.mat"] and c.data.db_labels == ["re_label.mat"]
    assert c.model.a == 0.2 and c.model.mask_prob == 0.5  # ActivityNet recipe values kept


# The official WSCH Json/fcvid.json and Json/Anet.json keys (anon271/WSCH).
WSCH_FCVID = {"dataset": "fcv", "train": "./fcv/fcv_train_feats.h5", "train_label": "./fcv/fcv_train_labels.mat",
              "test": "./fcv/fcv_test_feats.h5", "test_label": "./fcv/fcv_test_labels.mat",
              "query": "./fcv/fcv_test_feats.h5", "query_label": "./fcv/fcv_test_labels.mat",
              "num_class": C, "hidden_size": D, "max_frames": T}


def test_a_wsch_json_trains_as_it_is(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fcvid_files(tmp_path / "fcv")
    path = tmp_path / "fcvid.json"
    path.write_text(json.dumps(WSCH_FCVID))
    cfg = load_config(path)
    assert (cfg.model.name, cfg.model.feature_dim, cfg.model.max_frames, cfg.model.bits) == ("wsch", D, T, 64)
    assert cfg.data.train_files == ["./fcv/fcv_train_feats.h5"] and cfg.data.db_files == []
    capsys.readouterr()
    assert main(["train", "--config", str(path), f"train.out_dir={tmp_path / 'run'}", "model.bits=16",
                 "model.hidden_size=32", "model.decoder_size=32", "model.headdim=16", "model.d_state=8",
                 "model.heads=2", "model.n_clusters=3", "model.pretrain_epochs=1", "train.epochs=2",
                 "data.batch_size=8", "train.max_steps_per_epoch=1", "train.progress=false"]) == 0
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    err = capsys.readouterr().err
    for key in ("train_label", "num_class", "query_label"):
        assert f"ignored {key}" in err


def test_a_wsch_anet_json_maps_separate_queries():
    from bitseek.config.foreign import wsch_to_raw

    raw = wsch_to_raw({"dataset": "activitynet", "train": "./train_feats.h5", "train_label": "",
                       "test": "./test_feats.h5", "test_label": "./re_label.mat", "query": "./query_feats.h5",
                       "query_label": "./q_label.mat", "num_class": 200, "hidden_size": 2048, "max_frames": 30},
                      Path("Anet.json"))
    assert raw["data"]["name"] == "activitynet" and raw["data"]["db_files"] == ["./test_feats.h5"]
    assert raw["data"]["query_files"] == ["./query_feats.h5"] and raw["data"]["query_labels"] == ["./q_label.mat"]
    assert raw["model"]["feature_dim"] == 2048


def test_yfcc_shard_lists_built_with_a_range_comprehension(tmp_path):
    cfg = tmp_path / "conmh_yfcc.py"
    cfg.write_text("dataset = 'yfcc'\ndata_root = '/d/yfcc/'\n"
                   "train_feat_path = [data_root + 'yfcc_train_feats_' + str(i) + '.h5' for i in range(1,10)]\n"
                   "test_feat_path = [data_root + 'yfcc_test_feats_' + str(i) + '.h5' for i in range(1,3)]\n"
                   "query_feat_path = [data_root + 'query1000_feats.h5']\n")
    c = load_config(cfg)
    assert c.data.train_files == [f"yfcc_train_feats_{i}.h5" for i in range(1, 10)]
    assert c.data.db_files == ["yfcc_test_feats_1.h5", "yfcc_test_feats_2.h5"]
    big = tmp_path / "big.py"
    big.write_text("x = [i for i in range(1000000000)]\n")
    with pytest.raises(ConfigError, match="a range of 1000000000 items"):
        read_python_assignments(big)


# --------------------------------------------------------------------------- CVNet test.py KEY VALUE pairs


def test_cvnet_test_keys_parse_as_yacs_does():
    from bitseek.config.foreign import cvnet_test_config

    c = cvnet_test_config(["MODEL.DEPTH", "101", "TEST.WEIGHTS", "w/CVPR2022_CVNet_R101.pyth", "TEST.DATA_DIR",
                           "/data/datasets", "TEST.SCALE_LIST", "[0.5, 1, 2.0]", "TEST.TOPK_LIST", "[100, 200]",
                           "TEST.DATASET_LIST", "['rparis6k']", "CUDNN.BENCHMARK", "True"])
    assert (c.depth, c.weights, c.data_dir) == (101, "w/CVPR2022_CVNet_R101.pyth", "/data/datasets")
    assert c.scale_list == [0.5, 1.0, 2.0] and c.topk_list == [100, 200] and c.dataset_list == ["rparis6k"]
    d = cvnet_test_config([])
    assert d.scale_list == [0.7071, 1.0, 1.4142] and d.topk_list == [100] and d.dataset_list == ["roxford5k", "rparis6k"]
    assert cvnet_test_config(["TEST.DATASET_LIST", "roxford5k,rparis6k"]).dataset_list == ["roxford5k", "rparis6k"]
    assert cvnet_test_config(["TEST.WEIGHTS", "123"]).weights == "123"  # a path is never a literal


@pytest.mark.parametrize("items, match", [
    (["MODEL.DEPHT", "50"], "did you mean 'MODEL.DEPTH'"),
    (["MODEL.DEPTH", "fifty"], "MODEL.DEPTH: expected a positive whole number"),
    (["TEST.TOPK_LIST", "[1.5]"], "TEST.TOPK_LIST: expected a list of positive numbers"),
    (["TEST.SCALE_LIST", "[]"], "TEST.SCALE_LIST"),
    (["TEST.DATASET_LIST", "[1]"], "TEST.DATASET_LIST: expected dataset names"),
    (["TEST.WEIGHTS"], "has no value"),
])
def test_cvnet_test_keys_refuse_mistakes(items, match):
    from bitseek.config.foreign import cvnet_test_config

    with pytest.raises(ConfigError, match=match):
        cvnet_test_config(items)
