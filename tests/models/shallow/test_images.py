"""Issue 11 item 10: the shallow baselines train, encode and evaluate on image datasets from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from bitseek.cli.main import main
from bitseek.codes import CodeSet
from bitseek.errors import InputError
from bitseek.models.shallow import vectors
from bitseek.models.shallow.base import MAX_COVARIANCE_DIM
from bitseek.registry import create_model


def _photos(root, per_class=8):
    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "light", "red")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = np.full((20, 20, 3), 40 + 90 * c, np.float64)
            if name == "red":
                base[..., 1:] = 20
            img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")


@pytest.mark.parametrize("method", ["itq", "lsh", "pcah", "sh"])
def test_shallow_baselines_on_an_image_folder_end_to_end(tmp_path, method, capsys):
    _photos(tmp_path / "photos")
    cfg = {"name": f"{method}-photos", "model": {"name": method, "bits": 8},
           "data": {"name": "image-folder", "root": str(tmp_path / "photos"), "image_size": 8, "resize": 8,
                    "query": 6, "train": 0.5},
           "train": {"out_dir": str(tmp_path / "run"), "progress": False},
           "eval": {"protocol": "map_at_topk", "topk": 0}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(path)]) == 0
    assert main(["eval", "--config", str(path)]) == 0
    assert main(["encode", "--config", str(path), "--split", "database", "--out", str(tmp_path / "db.codes")]) == 0
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    values = [r["value"] for r in metrics["results"] if r["metric"].startswith("mAP")]
    assert values and all(0.0 < v <= 1.0 for v in values)
    cs = CodeSet.load(tmp_path / "db.codes")
    assert cs.bits == 8 and len(cs) > 0
    capsys.readouterr()


def test_image_batches_are_flattened_and_encoded_like_their_pixel_vectors():
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.standard_normal((30, 3, 4, 4)).astype(np.float32))
    flat = images.reshape(30, -1)
    m = create_model("itq", bits=8).fit(images)  # (N, C, H, W) fits on pixels
    assert m.feature_dim == 48
    torch.testing.assert_close(vectors({"image": images}), flat)
    np.testing.assert_array_equal(m.encode({"image": images}).numpy(), m.encode({"feats": flat}).numpy())
    np.testing.assert_array_equal(m.encode({"image": images.numpy()}), m.encode({"feats": flat}).numpy())


def test_pixel_vectors_too_large_for_a_covariance_are_refused_with_advice():
    side = int(np.ceil(np.sqrt((MAX_COVARIANCE_DIM + 1) / 3)))
    big = np.zeros((3, 3, side, side), np.float32)
    with pytest.raises(InputError, match="data.image_size"):
        create_model("itq", bits=8).fit(big)
