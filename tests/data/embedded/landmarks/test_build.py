"""The built-in landmark benchmark: revisitop layout, loader round trip, labels, determinism, evaluation."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

for _mod in ("skimage", "pywt", "sklearn", "matplotlib"):
    pytest.importorskip(_mod, reason="the landmark photographs ship inside this package (bitseek[landmarks])")

from bitseek.data.embedded.landmarks import (DISTRACTOR_DIR, DISTRACTOR_LIST, MANIFEST, NAME, TRAIN_DIR,  # noqa: E402
                                             build_landmarks, read_manifest)
from bitseek.data.embedded.landmarks.geometry import label_pair, pair_geometry  # noqa: E402
from bitseek.data.embedded.landmarks.render import View, occlusion_mask  # noqa: E402
from bitseek.data.embedded.landmarks.sources import DISTRACTORS, TEST, TRAIN  # noqa: E402
from bitseek.data.revisited import RevisitedConfig, load_gnd, load_revisited  # noqa: E402
from bitseek.errors import ConfigError  # noqa: E402
from bitseek.eval.revisited import evaluate  # noqa: E402

REAL = Path(__file__).resolve().parents[5] / "shared" / "fixtures" / "revisitop" / "gnd_roxford5k.pkl"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_landmarks(tmp_path_factory.mktemp("lm") / "tiny", size="tiny", seed=0)


def _gnd(root: Path) -> dict:
    return load_gnd(root / NAME / f"gnd_{NAME}.pkl")


def test_layout_and_loader_round_trip(tiny):
    raw = (tiny / NAME / f"gnd_{NAME}.pkl").read_bytes()
    assert raw[:2] == b"\x80\x03"  # protocol 3, as revisitop's files
    g = _gnd(tiny)
    assert list(g) == ["gnd", "imlist", "qimlist"]
    assert not set(g["qimlist"]) & set(g["imlist"])  # queries are not in the database
    assert len(set(g["imlist"])) == len(g["imlist"])
    for name, q in zip(g["qimlist"], g["gnd"]):
        assert list(q) == ["bbx", "easy", "hard", "junk"]
        assert all(type(v) is float for v in q["bbx"]) and len(q["bbx"]) == 4
        w, h = Image.open(tiny / NAME / "jpg" / f"{name}.jpg").size
        x1, y1, x2, y2 = q["bbx"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        for k in ("easy", "hard", "junk"):
            assert q[k] == sorted(q[k]) and all(type(i) is int for i in q[k])
        assert not (set(q["easy"]) & set(q["hard"]) or set(q["easy"]) & set(q["junk"])
                    or set(q["hard"]) & set(q["junk"]))
        assert q["easy"] and q["hard"]  # tiny is usable under all three protocols
    for n in g["imlist"] + g["qimlist"]:
        assert (tiny / NAME / "jpg" / f"{n}.jpg").is_file()
    data = load_revisited(RevisitedConfig(name=NAME, root=str(tiny / NAME), max_size=0))
    item = data.query[0]
    x1, y1, x2, y2 = g["gnd"][0]["bbx"]
    assert item["image"].shape[0] == 3 and abs(item["image"].shape[2] - (x2 - x1)) <= 1
    assert len(data.database) == len(g["imlist"])


@pytest.mark.skipif(not REAL.is_file(), reason="real revisitop ground truth not in ../shared/fixtures")
def test_same_structure_as_the_real_roxford_file(tiny):
    real = pickle.loads(REAL.read_bytes())
    ours = pickle.loads((tiny / NAME / f"gnd_{NAME}.pkl").read_bytes())
    assert list(ours) == list(real)
    assert list(ours["gnd"][0]) == list(real["gnd"][0])
    assert {type(v) for v in ours["gnd"][0]["bbx"]} <= {float, int}
    assert type(ours["imlist"][0]) is type(real["imlist"][0]) is str


def test_labels_follow_the_recorded_geometry(tiny):
    """Every (query, database) label in the pickle equals the rule applied to the recorded views."""
    g = _gnd(tiny)
    views = json.loads((tiny / NAME / "views.json").read_text())
    db_views = {n: View.from_json(views[n]) for n in g["imlist"]}
    masks = {n: occlusion_mask(v) for n, v in db_views.items()}
    for qn, q in zip(g["qimlist"], g["gnd"]):
        qv = View.from_json(views[qn])
        want: dict[str, list[int]] = {"easy": [], "hard": [], "junk": []}
        for i, n in enumerate(g["imlist"]):
            if views[n]["scene"] != views[qn]["scene"]:
                continue  # other photographs never share content
            v = db_views[n]
            lab = label_pair(pair_geometry(qv.homography, tuple(q["bbx"]), v.homography, v.size, masks[n]),
                             photometric_severe=bool(v.severe))
            if lab != "negative":
                want[lab].append(i)
        assert {k: q[k] for k in want} == want


def test_same_scene_negatives_exist(tiny):
    """Views of another part of the query's photograph are negatives: colour alone cannot separate them."""
    g = _gnd(tiny)
    views = json.loads((tiny / NAME / "views.json").read_text())
    n_same_scene_neg = 0
    for qn, q in zip(g["qimlist"], g["gnd"]):
        labelled = set(q["easy"]) | set(q["hard"]) | set(q["junk"])
        for i, n in enumerate(g["imlist"]):
            same = views[n]["scene"] == views[qn]["scene"]
            if not same:
                assert i not in labelled
            n_same_scene_neg += same and i not in labelled
    assert n_same_scene_neg > 0


def test_distractors_and_train_split(tiny):
    lines = (tiny / DISTRACTOR_DIR / DISTRACTOR_LIST).read_text().splitlines()
    man = read_manifest(tiny)
    assert len(lines) == man["sizes"]["distractors"] > 0
    assert all(line.endswith(".jpg") and (tiny / DISTRACTOR_DIR / "jpg" / line).is_file() for line in lines)
    classes = sorted(p.name for p in (tiny / TRAIN_DIR).iterdir() if p.is_dir())
    assert classes == sorted(man["train_classes"]) and len(classes) == man["sizes"]["train_classes"]
    assert sum(len(list((tiny / TRAIN_DIR / c).glob("*.jpg"))) for c in classes) == man["sizes"]["train_images"]
    src = man["sources"]
    assert not set(src["test"]) & set(src["train"]) and not set(src["test"]) & set(src["distractors"])
    assert not set(src["train"]) & set(src["distractors"])
    files = {p.file for p in TEST + TRAIN + DISTRACTORS}
    assert len(files) == len(TEST + TRAIN + DISTRACTORS)  # no photograph in two pools


def test_deterministic_and_idempotent(tiny, tmp_path):
    man = read_manifest(tiny)
    other = build_landmarks(tmp_path / "again", size="tiny", seed=0)
    assert read_manifest(other)["files"] == man["files"]  # the same bytes, file by file
    assert (other / NAME / f"gnd_{NAME}.pkl").read_bytes() == (tiny / NAME / f"gnd_{NAME}.pkl").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in other.rglob("*") if p.is_file()}
    build_landmarks(other, size="tiny", seed=0)
    assert {p: p.stat().st_mtime_ns for p in other.rglob("*") if p.is_file()} == stamps  # reused untouched
    victim = other / NAME / "jpg" / f"{_gnd(other)['imlist'][0]}.jpg"
    victim.write_bytes(b"truncated")
    build_landmarks(other, size="tiny", seed=0)  # an incomplete build is rebuilt
    assert read_manifest(other)["files"] == man["files"]
    assert not [p for p in other.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    seed1 = build_landmarks(tmp_path / "seed1", size="tiny", seed=1)
    assert read_manifest(seed1)["files"] != man["files"]


def test_refuses_a_foreign_folder_and_unknown_size(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        build_landmarks(tmp_path / "x", size="tiny")
    with pytest.raises(ConfigError, match="size must be one of"):
        build_landmarks(tmp_path / "y", size="huge")
    assert (tmp_path / "x" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "x" / MANIFEST).exists()


def test_evaluator_oracle_random_and_colour_histogram(tiny):
    g = _gnd(tiny)
    n_db, nq = len(g["imlist"]), len(g["qimlist"])
    oracle = np.empty((n_db, nq), dtype=np.int64)
    for j, q in enumerate(g["gnd"]):
        first = q["easy"] + q["hard"] + q["junk"]
        oracle[:, j] = first + [i for i in range(n_db) if i not in set(first)]
    assert {p: r.map for p, r in evaluate(oracle, g).items()} == {"easy": 100.0, "medium": 100.0, "hard": 100.0}
    rng = np.random.default_rng(0)
    runs = [evaluate(np.stack([rng.permutation(n_db) for _ in range(nq)], 1), g) for _ in range(30)]
    rand = {p: float(np.mean([r[p].map for r in runs])) for p in ("easy", "medium", "hard")}
    rate = 100 * np.mean([(len(q["easy"]) + len(q["hard"])) / (n_db - len(q["junk"])) for q in g["gnd"]])
    assert 0.5 * rate < rand["medium"] < 2.0 * rate  # chance level

    def hist(im: Image.Image) -> np.ndarray:
        a = np.asarray(im.convert("RGB")).reshape(-1, 3) // 32
        h = np.sqrt(np.bincount(a[:, 0] * 64 + a[:, 1] * 8 + a[:, 2], minlength=512).astype(float))
        return h / np.linalg.norm(h)

    jpg = tiny / NAME / "jpg"
    x = np.stack([hist(Image.open(jpg / f"{n}.jpg")) for n in g["imlist"]])
    qd = np.stack([hist(Image.open(jpg / f"{n}.jpg").crop(tuple(q["bbx"]))) for n, q in zip(g["qimlist"], g["gnd"])])
    res = evaluate(np.argsort(-(qd @ x.T), axis=1, kind="stable").T, g)
    for p, r in res.items():
        assert rand[p] + 10 < r.map < 95.0, (p, r.map, rand[p])  # informative, not solved


def test_read_by_the_cvnet_test_readers(tiny):
    """``TEST.DATA_DIR`` = the build root, ``--plus1m`` = the build root: CVNet's readers accept both."""
    from bitseek.data.revisited import read_distractors, revisitop_images

    imgs = revisitop_images(tiny, NAME)
    g = _gnd(tiny)
    assert len(imgs.query) == len(g["qimlist"]) and len(imgs.database) == len(g["imlist"])
    assert imgs.boxes[0] == tuple(g["gnd"][0]["bbx"])
    paths = read_distractors(tiny)
    assert len(paths) == read_manifest(tiny)["sizes"]["distractors"] and all(p.is_file() for p in paths)


def test_dataset_preset_builds_and_reads(tiny, tmp_path):
    from bitseek.data.base import load_data
    from bitseek.data.embedded.landmarks import LandmarksConfig
    from bitseek.registry import DATASETS

    assert "landmarks" in DATASETS.names()
    data = load_data(LandmarksConfig(root=str(tiny), size="tiny", max_size=64))
    g = _gnd(tiny)
    assert len(data.query) == len(g["qimlist"]) and len(data.searched) == len(g["imlist"])
    assert data.gnd["imlist"] == g["imlist"] and max(data.searched[0]["image"].shape[1:]) <= 64
    with pytest.raises(ConfigError, match="landmarks.size"):
        load_data(LandmarksConfig(root=str(tmp_path / "x"), size="huge"))


def test_a_killed_build_leaves_nothing_that_counts(tiny, tmp_path):
    """Without the manifest (written last) a folder is rebuilt; a dead build's temporary folder is swept."""
    import shutil

    root = tmp_path / "killed"
    shutil.copytree(tiny, root)
    (root / MANIFEST).unlink()  # as if killed before the manifest
    dead = root / ".landmarks-build.999999999.x.tmp"
    dead.mkdir()
    (dead / "part.jpg").write_bytes(b"half")
    build_landmarks(root, size="tiny", seed=0)
    assert read_manifest(root)["files"] == read_manifest(tiny)["files"]
    assert not dead.exists()
