"""Landmark training sets: class folders and GLDv2's CSV + nested folders, with one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bitseek.data.base import load_data
from bitseek.data.landmark_train import (BGR_MEAN, BGR_STD, GLDv2Config, LandmarkFolderConfig, LandmarkTrainTransform,
                                         gldv2_image_path, read_gldv2_csv)
from bitseek.errors import ConfigError, FileFormatError


def _photo(path: Path, seed: int, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def test_class_folders(tmp_path):
    for c, name in enumerate(["bridge", "abbey"]):
        for i in range(3):
            _photo(tmp_path / name / f"{i}.png", 10 * c + i)
    data = load_data(LandmarkFolderConfig(root=str(tmp_path), image_size=16))
    assert data.info["num_classes"] == 2 and data.info["class_names"] == ["abbey", "bridge"]
    assert len(data.train) == 6 and data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    item = data.train[4]
    assert item["image"].shape == (3, 16, 16) and item["label"] == 1 and item["index"] == 4
    data.train.set_epoch(0)
    a, b = data.train[2]["image"], data.train[2]["image"]
    assert torch.equal(a, b)  # per-item generator: the same crop for the same (seed, epoch, index)
    data.train.set_epoch(1)
    assert not torch.equal(a, data.train[2]["image"])


def _gldv2(root: Path, clean: bool = True) -> list[str]:
    ids = ["abc0001", "abd0002", "bcd0003", "fff0004", "fee0005"]
    lids = ["17", "17", "5", "5", "1000"]
    for k, i in enumerate(ids):
        _photo(gldv2_image_path(root, i), k)
    if clean:
        rows = {}
        for i, lid in zip(ids, lids):
            rows.setdefault(lid, []).append(i)
        text = "landmark_id,images\n" + "".join(f"{lid},{' '.join(v)}\n" for lid, v in rows.items())
        (root / "train_clean.csv").write_text(text)
    else:
        (root / "train.csv").write_text("id,url,landmark_id\n" + "".join(f"{i},http://x/{i}.jpg,{lid}\n"
                                                                       for i, lid in zip(ids, lids)))
    return ids


@pytest.mark.parametrize("clean", [True, False])
def test_gldv2_layouts(tmp_path, clean):
    ids = _gldv2(tmp_path, clean)
    assert gldv2_image_path(tmp_path, "abc0001") == tmp_path / "train" / "a" / "b" / "c" / "abc0001.jpg"
    data = load_data(GLDv2Config(root=str(tmp_path), image_size=16))
    assert data.info["class_names"] == ["5", "17", "1000"]  # numeric order of landmark ids
    labels = dict(zip([Path(p).stem for p in data.train.paths], data.train.labels.tolist()))
    assert labels == {ids[0]: 1, ids[1]: 1, ids[2]: 0, ids[3]: 0, ids[4]: 2}
    assert data.train[0]["image"].shape == (3, 16, 16)


def test_gldv2_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="train_clean.csv or train.csv"):
        load_data(GLDv2Config(root=str(tmp_path)))
    ids = _gldv2(tmp_path)
    gldv2_image_path(tmp_path, ids[2]).unlink()
    with pytest.raises(FileFormatError) as e:
        load_data(GLDv2Config(root=str(tmp_path)))
    msg = str(e.value)
    assert "\n" not in msg and "1 of 5 listed images are missing" in msg and "bcd0003.jpg" in msg and "on_missing" in msg
    data = load_data(GLDv2Config(root=str(tmp_path), on_missing="skip", image_size=16))
    assert len(data.train) == 4 and data.info["missing"] == 1
    (tmp_path / "bad.csv").write_text("landmark,files\n1,abc\n")
    with pytest.raises(FileFormatError, match="needs columns landmark_id,images") as e:
        read_gldv2_csv(tmp_path / "bad.csv")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="data.root"):
        load_data(GLDv2Config())


def test_transform_is_cvnet_bgr_normalisation():
    img = Image.new("RGB", (20, 20), (200, 100, 50))
    t = LandmarkTrainTransform(size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    x = t(img, torch.Generator().manual_seed(0))
    want = [(v / 255 - m) / s for v, m, s in zip((50, 100, 200), BGR_MEAN, BGR_STD)]  # B, G, R
    assert torch.allclose(x[:, 3, 3], torch.tensor(want), atol=1e-5)
    with pytest.raises(ConfigError, match="crop_scale"):
        LandmarkTrainTransform(scale=(0.0, 1.0))
