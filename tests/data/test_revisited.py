from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from bitseek.data.base import GndRelevance, LabelRelevance, RetrievalData
from bitseek.data.revisited import load_gnd, query_boxes
from bitseek.errors import FileFormatError

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "revisitop"


def test_the_gnd_loader_lives_in_data_and_the_old_path_still_imports_it():
    from bitseek.eval.revisited import load_gnd as old

    assert old is load_gnd


def test_query_boxes_and_refusals(tmp_path):
    obj = {"imlist": ["a", "b"], "qimlist": ["q"], "gnd": [{"bbx": [1, 2, 3.5, 4], "easy": [0], "hard": [], "junk": [1]}]}
    p = tmp_path / "gnd_x.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=3))
    assert query_boxes(load_gnd(p)) == [(1.0, 2.0, 3.5, 4.0)]
    p.write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [], "x": np.zeros(1)}))
    with pytest.raises(FileFormatError, match="refuses to load"):
        load_gnd(p)


def test_real_ground_truth_when_present():
    p = FIXTURES / "gnd_roxford5k.pkl"
    if not p.is_file():
        pytest.skip("revisitop fixture not available")
    g = load_gnd(p)
    boxes = query_boxes(g)
    assert len(boxes) == len(g["qimlist"]) == 70 and all(b is not None for b in boxes)


def test_retrieval_data_relevance_and_unambiguous_names():
    ql, dl = np.arange(4) % 2, np.arange(6) % 2
    d = RetrievalData([0] * 3, [1] * 4, [2] * 6, ql, dl)
    assert isinstance(d.relevance, LabelRelevance) and d.relevance.searched is dl
    assert d.searched == [2] * 6 and d.searched_labels is dl and not d.queries_are_database
    same = RetrievalData([0], [1] * 4, None, ql, None)
    assert same.searched is same.query and same.searched_labels is ql and same.queries_are_database
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert same.db is same.searched and same.database_labels is ql
    assert {type(x.message) for x in w} == {DeprecationWarning}
    g = RetrievalData([0], [1], [2], None, None, gnd={"gnd": []})
    assert isinstance(g.relevance, GndRelevance)


def _tiny_revisitop(root: Path) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "jpg").mkdir(parents=True)
    names = [f"im{i}" for i in range(8)]
    qnames = ["q0", "q1"]
    for n in names + qnames:
        arr = rng.integers(0, 255, size=(int(rng.integers(30, 50)), int(rng.integers(30, 60)), 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "jpg" / f"{n}.jpg", quality=95)
    gnd = {"imlist": names, "qimlist": qnames,
           "gnd": [{"bbx": [2.4, 3.6, 20.5, 25.0], "easy": [0, 3], "hard": [5], "junk": [7]},
                   {"bbx": [0, 0, 10, 12], "easy": [1], "hard": [2, 6], "junk": []}]}
    (root / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(gnd, protocol=3))
    return gnd


def test_revisited_dataset_crops_queries_and_carries_its_ground_truth(tmp_path):
    import torch

    from bitseek import pipeline
    from bitseek.config import load_config
    from bitseek.data.base import load_data
    from bitseek.eval import revisited
    from bitseek.models.base import Embedder

    gnd = _tiny_revisitop(tmp_path / "roxford5k")
    cfg = load_config(raw={"name": "t", "model": {"name": "lsh", "bits": 8},
                           "data": {"name": "roxford5k", "root": str(tmp_path / "roxford5k"), "max_size": 40},
                           "train": {"device": "cpu", "progress": False, "out_dir": str(tmp_path / "run")}})
    data = load_data(cfg.data)
    assert isinstance(data.relevance, GndRelevance) and len(data.query) == 2 and len(data.searched) == 8
    q0 = data.query[0]["image"]
    assert tuple(q0.shape[1:]) == (21, 18)  # PIL rounds the box (2.4, 3.6, 20.5, 25.0) to (2, 4, 20, 25)
    assert max(data.searched[0]["image"].shape[1:]) <= 40

    class ColourEmbedder(Embedder):
        dim = 3

        def training_step(self, batch, phase="train"):
            return {"loss": torch.zeros(())}

        def embed(self, batch):
            return torch.nn.functional.normalize(batch["image"].mean(dim=(2, 3)), dim=1)

    model = ColourEmbedder()
    rows = pipeline.evaluate(cfg, model, data)  # eval.protocol auto -> revisited
    with torch.no_grad():
        qx = torch.cat([model.embed({"image": data.query[i]["image"][None]}) for i in range(2)]).numpy()
        dx = torch.cat([model.embed({"image": data.searched[i]["image"][None]}) for i in range(8)]).numpy()
    exp = revisited.evaluate(np.argsort(-(qx @ dx.T), axis=1, kind="stable").T, gnd)
    got = {r["metric"]: r["value"] for r in rows}
    assert [got["mAP-E"], got["mAP-M"], got["mAP-H"]] == [exp[p].map for p in ("easy", "medium", "hard")]


def test_revisited_dataset_names_a_missing_image(tmp_path):
    from bitseek.data.base import load_data
    from bitseek.data.revisited import ROxford5kConfig

    _tiny_revisitop(tmp_path)
    (tmp_path / "jpg" / "im3.jpg").unlink()
    with pytest.raises(FileFormatError, match="im3.jpg: missing image"):
        load_data(ROxford5kConfig(root=str(tmp_path)))


# --------------------------------------------------------------------------- CVNet's test layout


def test_revisitop_images_in_cvnet_layout_checks_every_image(tmp_path):
    from bitseek.data.revisited import revisitop_images

    gnd = _tiny_revisitop(tmp_path / "roxford5k")
    imgs = revisitop_images(tmp_path, "roxford5k")
    assert [p.name for p in imgs.database] == [f"{n}.jpg" for n in gnd["imlist"]]
    assert [p.name for p in imgs.query] == ["q0.jpg", "q1.jpg"] and imgs.boxes[0] == (2.4, 3.6, 20.5, 25.0)
    (tmp_path / "roxford5k" / "jpg" / "q1.jpg").unlink()
    with pytest.raises(FileFormatError, match=r"q1\.jpg: missing image 'q1' named by the ground truth .*gnd_roxford5k"):
        revisitop_images(tmp_path, "roxford5k")
    from bitseek.errors import ConfigError

    with pytest.raises(ConfigError, match="no folder .*rparis6k"):
        revisitop_images(tmp_path, "rparis6k")


def test_revisitop_images_refuse_out_of_range_gnd_indices(tmp_path):
    from bitseek.data.revisited import revisitop_images

    gnd = _tiny_revisitop(tmp_path / "roxford5k")
    gnd["gnd"][1]["hard"] = [2, 8]  # 8 database images: index 8 does not exist
    (tmp_path / "roxford5k" / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(gnd, protocol=3))
    with pytest.raises(FileFormatError, match=r"gnd_roxford5k\.pkl: gnd\[1\]\['hard'\]: index 8 outside the 8"):
        revisitop_images(tmp_path, "roxford5k")


def test_read_distractors_keeps_the_list_order_and_refuses_escapes(tmp_path):
    from bitseek.data.revisited import read_distractors
    from bitseek.errors import ConfigError

    d = tmp_path / "revisitop1m"
    d.mkdir()
    (d / "revisitop1m.txt").write_text("b/2.jpg\na/1.jpg\n\n")
    want = [d / "jpg" / "b/2.jpg", d / "jpg" / "a/1.jpg"]
    assert read_distractors(d) == want and read_distractors(tmp_path) == want
    (d / "revisitop1m.txt").write_text("../../etc/passwd\n")
    with pytest.raises(FileFormatError, match="not a path inside"):
        read_distractors(d)
    with pytest.raises(ConfigError, match="--plus1m: no revisitop1m.txt"):
        read_distractors(tmp_path / "nowhere")


def test_read_bgr_names_missing_truncated_and_corrupt_files(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="the CVNet protocol needs opencv-python-headless (bitseek[cvnet])")
    from bitseek.data.image_io import CorruptImageError
    from bitseek.data.revisited import read_bgr

    im = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), im)
    assert read_bgr(good).shape == (40, 50, 3) and np.array_equal(read_bgr(good), cv2.imread(str(good)))
    data = good.read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])  # OpenCV alone would decode this, grey-filled
    (tmp_path / "junk.jpg").write_bytes(b"<html>not an image</html>")
    with pytest.raises(CorruptImageError, match=r"half\.jpg: truncated or corrupt JPEG"):
        read_bgr(tmp_path / "half.jpg")
    with pytest.raises(CorruptImageError, match=r"junk\.jpg: corrupt or not an image"):
        read_bgr(tmp_path / "junk.jpg")
    with pytest.raises(CorruptImageError, match=r"gone\.jpg: missing image file"):
        read_bgr(tmp_path / "gone.jpg")
