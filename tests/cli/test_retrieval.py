"""``bitseek retrieval test`` end to end on a tiny revisitop-layout dataset, R50 with random weights.

The printed and JSON numbers are checked against the same steps done by hand (multi-scale
descriptors, inner-product ranking, revisitop evaluation, CVNet re-ranking of the gnd-aware
shortlist), so a wrong wiring -- crops not applied, distractors in the wrong place, the re-ranked
ranks not used -- changes a number and fails.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2", reason="the CVNet protocol needs opencv-python-headless (bitseek[cvnet])")

from bitseek.cli.main import main  # noqa: E402

N_DB, SEED = 8, 3


def _scene(rng: np.random.Generator, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """A view of one 'landmark' (a random texture) at some offset, plus noise."""
    y, x = int(rng.integers(0, base.shape[0] - h)), int(rng.integers(0, base.shape[1] - w))
    v = base[y:y + h, x:x + w].astype(np.int16) + rng.integers(-20, 20, (h, w, 3))
    return np.clip(v, 0, 255).astype(np.uint8)


def write_tiny_revisitop(root: Path, name: str = "roxford5k", seed: int = 0) -> dict:
    """revisitop layout: <root>/<name>/gnd_<name>.pkl + jpg/, 2 landmarks, 8 database images, 2 queries."""
    rng = np.random.default_rng(seed)
    bases = [rng.integers(0, 255, (140, 180, 3), dtype=np.uint8) for _ in range(2)]
    jpg = root / name / "jpg"
    jpg.mkdir(parents=True)
    names = [f"db{i}" for i in range(N_DB)]
    for i, n in enumerate(names):
        cv2.imwrite(str(jpg / f"{n}.jpg"), _scene(rng, 64 + 8 * (i % 3), 96 - 8 * (i % 2), bases[i % 2]))
    for j in range(2):
        cv2.imwrite(str(jpg / f"q{j}.jpg"), _scene(rng, 90, 100, bases[j]))
    gnd = {"imlist": names, "qimlist": ["q0", "q1"],
           "gnd": [{"bbx": [4.7, 3.2, 93.9, 80.6], "easy": [0, 2], "hard": [4], "junk": [6]},
                   {"bbx": [0.0, 5.5, 88.0, 90.0], "easy": [1], "hard": [3, 5], "junk": [7]}]}
    (root / name / f"gnd_{name}.pkl").write_bytes(pickle.dumps(gnd, protocol=2))
    return gnd


def write_distractors(root: Path, n: int = 3) -> Path:
    d = root / "revisitop1m"
    rng = np.random.default_rng(9)
    (d / "jpg" / "a").mkdir(parents=True)
    lines = []
    for i in range(n):
        cv2.imwrite(str(d / "jpg" / "a" / f"x{i}.jpg"), rng.integers(0, 255, (60, 70, 3), dtype=np.uint8))
        lines.append(f"a/x{i}.jpg")
    (d / "revisitop1m.txt").write_text("\n".join(lines) + "\n")
    return d


def _by_hand(root: Path, gnd: dict, k: int, distractors: Path | None = None) -> tuple[dict, dict]:
    """Global and re-ranked E/M/H mAP computed step by step with the library's parts."""
    from bitseek.data.revisited import read_bgr, read_distractors
    from bitseek.encode.multiscale import DEFAULT_SCALES, MultiScaleImages, multiscale_descriptors, rerank_pyramids
    from bitseek.eval.revisited import evaluate
    from bitseek.registry import MODELS
    from bitseek.rerank import RerankInputs, build_reranker, ranked_scores, rerank_ranks

    torch.manual_seed(SEED)
    model = MODELS.create(MODELS.config("cvnet", depth=50)).eval()
    jpg = root / "roxford5k" / "jpg"
    qp = [jpg / f"{n}.jpg" for n in gnd["qimlist"]]
    dp = [jpg / f"{n}.jpg" for n in gnd["imlist"]]
    if distractors is not None:
        dp += read_distractors(distractors)
    qi = MultiScaleImages(lambda i: read_bgr(qp[i]), len(qp), DEFAULT_SCALES, [g["bbx"] for g in gnd["gnd"]])
    di = MultiScaleImages(lambda i: read_bgr(dp[i]), len(dp), DEFAULT_SCALES)
    with torch.no_grad():
        Q, X = multiscale_descriptors(model, qi), multiscale_descriptors(model, di)
        sim = X @ Q.T
        ranks = np.argsort(-sim, axis=0)
        rr = build_reranker("cvnet", RerankInputs(model=model, query_maps=rerank_pyramids(model, qi),
                                                  db_maps=rerank_pyramids(model, di)))
        res = rerank_ranks(ranks, ranked_scores(sim, ranks), rr, mode="gnd", k=k, gnd=gnd)
    return ({p: r.map for p, r in evaluate(ranks, gnd).items()},
            {p: r.map for p, r in evaluate(res.ranks, gnd).items()})


def _run(root: Path, tmp: Path, *extra: str) -> int:
    return main(["retrieval", "test", "MODEL.DEPTH", "50", "TEST.WEIGHTS", "random", "TEST.DATA_DIR", str(root),
                 "TEST.DATASET_LIST", "['roxford5k']", "TEST.TOPK_LIST", "[3]", "--seed", str(SEED),
                 "--cache", str(tmp / "cache"), "--out", str(tmp / "out.json"), "--chunk", "3", *extra])


def test_retrieval_test_end_to_end_with_distractors_and_cvnet_rerank(tmp_path, capsys):
    root = tmp_path / "data"
    gnd = write_tiny_revisitop(root)
    d = write_distractors(tmp_path)
    assert _run(root, tmp_path, "--plus1m", str(d), "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert out.startswith("WEIGHTS: random (seed 3) -- an untrained network")
    assert out.count(">> roxford5k: mAP E: ") == 2 and out.count(">> roxford5k: mP@k[1, 5, 10] E: ") == 2
    assert "re-ranked top-3 with cvnet; shortlist: gnd" in out
    rep = json.loads((tmp_path / "out.json").read_text())
    assert rep["weights"]["random"] is True and rep["scales"] == [0.7071, 1.0, 1.4142]
    r = rep["datasets"]["roxford5k"]
    assert (r["n_query"], r["n_db"], r["n_distractors"]) == (2, N_DB, 3)
    glob, rer = _by_hand(root, gnd, 3, d)
    assert {p: v["map"] for p, v in r["global"].items()} == glob
    (rk,) = r["rerank"]
    assert rk["k"] == 3 and rk["shortlist_mode"] == "gnd" and rk["reranker"] == "cvnet"
    # fp16 cached pyramids vs fp16 pyramids by hand: the same scores, so the same ranking and mAP
    assert {p: v["map"] for p, v in rk["results"].items()} == rer
    # only the distractors that reach a shortlist got their maps extracted
    (mdir,) = (tmp_path / "cache").glob("revisitop1m-pyramid-*")
    assert json.loads((mdir / "manifest.json").read_text())["n_rows"] <= 3
    assert sorted(p.name.split("-")[0] + "-" + p.name.split("-")[1] for p in (tmp_path / "cache").iterdir()) == [
        "revisitop1m-global", "revisitop1m-pyramid", "roxford5k-db", "roxford5k-db", "roxford5k-query",
        "roxford5k-query"]


def test_retrieval_test_global_only_matches_by_hand_and_reuses_its_cache(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    gnd = write_tiny_revisitop(root)
    assert _run(root, tmp_path, "--rerank", "none", "--crop", "round") == 0
    first = json.loads((tmp_path / "out.json").read_text())
    assert first["query_crop"] == "round" and first["datasets"]["roxford5k"]["rerank"] == []
    # a second run reads the cache: extraction must not run again
    from bitseek.encode import revisited_cache

    monkeypatch.setattr(revisited_cache.FeatureCache, "_write_chunk",
                        lambda *a, **k: pytest.fail("extracted again despite a complete cache"))
    assert _run(root, tmp_path, "--rerank", "none", "--crop", "round") == 0
    assert json.loads((tmp_path / "out.json").read_text())["datasets"] == first["datasets"]
    # the crop rule is part of the key: truncate needs its own query extraction (and gives its own numbers)
    monkeypatch.undo()
    assert _run(root, tmp_path, "--rerank", "none") == 0
    assert len(list((tmp_path / "cache").glob("roxford5k-query-global-*"))) == 2
    glob, _ = _by_hand_global(root, gnd)
    assert {p: v["map"] for p, v in json.loads((tmp_path / "out.json").read_text())["datasets"]["roxford5k"]
            ["global"].items()} == glob


def _by_hand_global(root: Path, gnd: dict) -> tuple[dict, None]:
    from bitseek.data.revisited import read_bgr
    from bitseek.encode.multiscale import DEFAULT_SCALES, MultiScaleImages, multiscale_descriptors
    from bitseek.eval.revisited import evaluate
    from bitseek.registry import MODELS

    torch.manual_seed(SEED)
    model = MODELS.create(MODELS.config("cvnet", depth=50)).eval()
    jpg = root / "roxford5k" / "jpg"
    qp = [jpg / f"{n}.jpg" for n in gnd["qimlist"]]
    dp = [jpg / f"{n}.jpg" for n in gnd["imlist"]]
    qi = MultiScaleImages(lambda i: read_bgr(qp[i]), 2, DEFAULT_SCALES, [g["bbx"] for g in gnd["gnd"]])
    di = MultiScaleImages(lambda i: read_bgr(dp[i]), len(dp), DEFAULT_SCALES)
    with torch.no_grad():
        Q, X = multiscale_descriptors(model, qi), multiscale_descriptors(model, di)
    return {p: r.map for p, r in evaluate(np.argsort(-(X @ Q.T), axis=0), gnd).items()}, None


# ----------------------------------------------------------------------------- bad input: one line, exit 2


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_keys_and_values_are_one_line(tmp_path, capsys):
    base = ["retrieval", "test", "MODEL.DEPTH", "50", "TEST.WEIGHTS", "random"]
    assert main([*base, "TEST.DATA_DIRR", str(tmp_path)]) == 2
    assert "unknown key 'TEST.DATA_DIRR'; did you mean 'TEST.DATA_DIR'?" in _err(capsys)
    assert main([*base, "TEST.DATA_DIR", str(tmp_path), "TEST.SCALE_LIST", "[0.5, -1]"]) == 2
    assert "TEST.SCALE_LIST: expected a list of positive numbers" in _err(capsys)
    assert main([*base, "TEST.DATA_DIR"]) == 2
    assert "has no value" in _err(capsys)
    assert main(base) == 2
    assert "TEST.DATA_DIR is required" in _err(capsys)


def test_a_pyth_of_the_wrong_depth_is_named(tmp_path, capsys):
    # the blocks of a ResNet-101 stage 3 (23 of them) are enough for the depth check, which comes first
    sd = {f"encoder_q.s3.b{i}.f.a.weight": torch.zeros(1) for i in range(1, 24)}
    p = tmp_path / "CVPR2022_CVNet_R101.pyth"
    torch.save({"model_state": sd}, p)
    write_tiny_revisitop(tmp_path / "data")
    assert main(["retrieval", "test", "MODEL.DEPTH", "50", "TEST.WEIGHTS", str(p), "TEST.DATA_DIR",
                 str(tmp_path / "data"), "TEST.DATASET_LIST", "roxford5k", "--out", str(tmp_path / "o.json")]) == 2
    err = _err(capsys)
    assert str(p) in err and "ResNet-101 model but the config says depth=50" in err


def test_bad_data_is_named_before_or_during_extraction(tmp_path, capsys):
    root = tmp_path / "data"
    gnd = write_tiny_revisitop(root)
    args = ["--rerank", "none", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o.json")]
    cmd = ["retrieval", "test", "MODEL.DEPTH", "50", "TEST.WEIGHTS", "random", "TEST.DATA_DIR", str(root),
           "TEST.DATASET_LIST", "['roxford5k']", *args]
    gfile = root / "roxford5k" / "gnd_roxford5k.pkl"
    bad = json.loads(json.dumps(gnd))
    bad["gnd"][0]["junk"] = [N_DB + 4]
    gfile.write_bytes(pickle.dumps(bad, protocol=2))
    assert main(cmd) == 2
    assert f"{gfile}: gnd[0]['junk']: index {N_DB + 4} outside the {N_DB} database images" in _err(capsys)
    gfile.write_bytes(pickle.dumps(gnd, protocol=2))
    (root / "roxford5k" / "jpg" / "db5.jpg").unlink()
    assert main(cmd) == 2
    assert "db5.jpg: missing image 'db5' named by the ground truth" in _err(capsys)
    good = (root / "roxford5k" / "jpg" / "db4.jpg").read_bytes()
    (root / "roxford5k" / "jpg" / "db5.jpg").write_bytes(good[: len(good) // 2])
    assert main(cmd) == 2
    assert "db5.jpg: truncated or corrupt JPEG" in _err(capsys)
    assert not (tmp_path / "o.json").exists()
    assert not [p for p in (tmp_path / "c").rglob("*") if p.suffix == ".tmp"]


def test_binary_first_stage_from_the_cli_matches_by_hand(tmp_path, capsys):
    """--first-stage itq:BITS: ITQ codes of the database -> Hamming top-L -> float re-scoring, then the
    re-ranker on that shortlist; every number equals the same chain run with the library's parts."""
    from bitseek.data.revisited import read_bgr, read_distractors
    from bitseek.encode.multiscale import DEFAULT_SCALES, MultiScaleImages, multiscale_descriptors, rerank_pyramids
    from bitseek.eval.revisited import evaluate
    from bitseek.registry import MODELS
    from bitseek.rerank import RerankInputs, build_reranker, rerank_ranks
    from bitseek.rerank.binary import binary_first_stage

    root = tmp_path / "data"
    gnd = write_tiny_revisitop(root)
    d = write_distractors(tmp_path)  # 11 database rows: enough to fit 8 ITQ bits
    assert _run(root, tmp_path, "--plus1m", str(d), "--first-stage", "itq:8", "--first-stage-depth", "6",
                "--shortlist", "plain") == 0
    out = capsys.readouterr().out
    assert ">> roxford5k: first stage itq:8: Hamming top-6" in out and "mAP cost of the binary first stage" in out
    rep = json.loads((tmp_path / "out.json").read_text())
    assert rep["first_stage"] == "itq:8" and rep["first_stage_depth"] == 6
    r = rep["datasets"]["roxford5k"]
    fs = r["first_stage"]
    assert fs["kind"] == "itq" and fs["bits"] == 8 and fs["shortlist_L"] == 6 and fs["n_db"] == N_DB + 3
    assert fs["bytes_per_image"]["binary_code"] == 1 and fs["bytes_per_image"]["float_descriptor"] == 2048 * 4

    torch.manual_seed(SEED)
    model = MODELS.create(MODELS.config("cvnet", depth=50)).eval()
    jpg = root / "roxford5k" / "jpg"
    qp = [jpg / f"{n}.jpg" for n in gnd["qimlist"]]
    dp = [jpg / f"{n}.jpg" for n in gnd["imlist"]] + read_distractors(d)
    qi = MultiScaleImages(lambda i: read_bgr(qp[i]), len(qp), DEFAULT_SCALES, [g["bbx"] for g in gnd["gnd"]])
    di = MultiScaleImages(lambda i: read_bgr(dp[i]), len(dp), DEFAULT_SCALES)
    with torch.no_grad():
        Q, X = multiscale_descriptors(model, qi), multiscale_descriptors(model, di)
        st = binary_first_stage(Q, X, bits=8, shortlist=6, seed=SEED)
        rr = build_reranker("cvnet", RerankInputs(model=model, query_maps=rerank_pyramids(model, qi),
                                                  db_maps=rerank_pyramids(model, di)))
        res = rerank_ranks(st.ranks, st.scores, rr, mode="plain", k=3)
    assert fs["map"]["binary_top_L"] == {p: v.map for p, v in evaluate(st.ranks, gnd).items()}
    assert fs["map"]["float_full"] == {p: v["map"] for p, v in r["global"].items()}
    (rk,) = r["rerank"]
    assert {p: v["map"] for p, v in rk["results"].items()} == {p: v.map for p, v in evaluate(res.ranks, gnd).items()}


def test_bad_first_stage_is_one_line(tmp_path, capsys):
    root = tmp_path / "data"
    write_tiny_revisitop(root)
    with pytest.raises(SystemExit) as e:
        _run(root, tmp_path, "--first-stage", "itq:12")
    assert e.value.code == 2
    assert "--first-stage: 'itq:12' is not float (exact inner product" in capsys.readouterr().err
