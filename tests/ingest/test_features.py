"""`bitseek train` learns ConMH / WSCH on a collection's features.h5 without labels, and
`bitseek ingest --model RUN/model` then encodes the collection with the trained codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="video decoding needs PyAV (bitseek[collections])")

from bitseek.cli.main import main  # noqa: E402
from bitseek.collection import Collection  # noqa: E402
from bitseek.config import load_config  # noqa: E402
from bitseek.media.samples import packaged_image, packaged_video  # noqa: E402

TINY = {
    "conmh": "hidden_size: 32\n  transformer_type: ''\n  depth: 1\n  heads: 2\n  decoder_dim: 16\n"
             "  decoder_depth: 1\n  decoder_heads: 2\n  mask_prob: 0.5",
    "wsch": "hidden_size: 32\n  decoder_size: 32\n  headdim: 16\n  d_state: 4\n  heads: 4\n  n_clusters: 4\n"
            "  pretrain_epochs: 1\n  kmeans_niter: 5",
}


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, Path]:
    from PIL import Image

    src = tmp_path_factory.mktemp("src")
    root = tmp_path_factory.mktemp("cols") / "col"
    for name in ("chelsea.png", "coffee.png", "astronaut.png"):
        img = np.asarray(Image.open(packaged_image(name)).convert("RGB"))
        for c in range(2):
            Image.fromarray(img[c * 40:, c * 40:]).save(src / f"{Path(name).stem}-{c}.png")
    for clip in ("carphone_pristine.mp4", "bikes.mp4"):
        shutil.copy(packaged_video(clip), src / clip)
    assert main(["-q", "ingest", str(src), "--collection", str(root), "--frames", "4"]) == 0
    return src, root


def test_packaged_recipes_point_at_a_collection(collection):
    _, root = collection
    for recipe in ("conmh/collection-64", "wsch/collection-64"):
        from bitseek.config.experiment import packaged_configs

        cfg = load_config(packaged_configs() / f"{recipe}.yaml", [f"data.root={root}"])
        assert cfg.data.name == "collection" and cfg.data.root == str(root)


@pytest.mark.parametrize("model", ["conmh", "wsch"])
def test_train_on_the_collection_then_encode_with_it(collection, tmp_path, model, capsys):
    src, root = collection
    run = tmp_path / "run"
    cfg = tmp_path / f"{model}.yaml"
    cfg.write_text(f"name: {model}-mine\nmodel:\n  name: {model}\n  bits: 16\n  feature_dim: auto\n"
                   f"  max_frames: auto\n  {TINY[model]}\ndata:\n  name: collection\n  root: {root}\n  batch_size: 4\n"
                   f"optim:\n  name: adam\n  lr: 1.0e-3\ntrain:\n  epochs: {2 if model == 'wsch' else 1}\n"
                   f"  out_dir: {run}\n")
    assert main(["-q", "train", "--config", str(cfg)]) == 0
    log = (run / "log.jsonl").read_text() if (run / "log.jsonl").exists() else ""
    assert (run / "model" / "config.json").is_file(), log
    capsys.readouterr()

    assert main(["-q", "ingest", str(src), "--collection", str(root), "--model", str(run)]) == 0
    assert f"model {model} 16-bit" in capsys.readouterr().out
    with Collection.open(root) as col:
        assert col.model.kind == "checkpoint" and col.index.engine == "flat" and col.index.dim == 16
        assert np.array_equal(np.sort(np.asarray(col.index.ids)), col.catalog.ids())
        hits = col.search_image(src / "coffee-0.png", k=3)
        assert hits[0].path.endswith("coffee-0.png") and isinstance(hits[0].distance, int)
    assert main(["-q", "ingest", str(src), "--collection", str(root), "--model", "float"]) == 0
