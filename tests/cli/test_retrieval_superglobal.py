"""``bitseek retrieval test`` with SuperGlobal: the SupG.* pooling switches and ``--rerank superglobal``,
checked against the same steps done by hand (SuperGlobal pooling, max over scales, MDescAug +
RerankwMDA of the plain top-K), with its own feature cache."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2", reason="the CVNet protocol needs opencv-python-headless (bitseek[cvnet])")

from bitseek.cli.main import main  # noqa: E402

SEED, N_DB = 4, 6


def _write(root: Path) -> dict:
    """revisitop layout, images large enough for regional GeM at scale 0.7071 (stage-4 map >= 3x3)."""
    rng = np.random.default_rng(1)
    bases = [rng.integers(0, 255, (220, 260, 3), dtype=np.uint8) for _ in range(2)]
    jpg = root / "roxford5k" / "jpg"
    jpg.mkdir(parents=True)

    def view(b: np.ndarray, h: int, w: int) -> np.ndarray:
        y, x = int(rng.integers(0, b.shape[0] - h)), int(rng.integers(0, b.shape[1] - w))
        return np.clip(b[y:y + h, x:x + w].astype(np.int16) + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)

    names = [f"db{i}" for i in range(N_DB)]
    for i, n in enumerate(names):
        cv2.imwrite(str(jpg / f"{n}.jpg"), view(bases[i % 2], 140 + 8 * (i % 3), 150))
    for j in range(2):
        cv2.imwrite(str(jpg / f"q{j}.jpg"), view(bases[j], 150, 160))
    gnd = {"imlist": names, "qimlist": ["q0", "q1"],
           "gnd": [{"bbx": [2.0, 1.5, 148.9, 145.2], "easy": [0, 2], "hard": [4], "junk": []},
                   {"bbx": [0.0, 0.0, 150.0, 150.0], "easy": [1], "hard": [3], "junk": [5]}]}
    (root / "roxford5k" / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(gnd, protocol=2))
    return gnd


def _by_hand(root: Path, gnd: dict, k: int) -> tuple[dict, dict]:
    from bitseek.data.revisited import read_bgr
    from bitseek.encode.multiscale import DEFAULT_SCALES, MultiScaleImages, multiscale_descriptors
    from bitseek.eval.revisited import evaluate
    from bitseek.models.cvnet import combine_scales, superglobal_config
    from bitseek.registry import MODELS
    from bitseek.rerank import superglobal_ranks

    torch.manual_seed(SEED)
    model = MODELS.create(superglobal_config(50)).eval()
    jpg = root / "roxford5k" / "jpg"
    qp = [jpg / f"{n}.jpg" for n in gnd["qimlist"]]
    dp = [jpg / f"{n}.jpg" for n in gnd["imlist"]]
    qi = MultiScaleImages(lambda i: read_bgr(qp[i]), 2, DEFAULT_SCALES, [g["bbx"] for g in gnd["gnd"]])
    di = MultiScaleImages(lambda i: read_bgr(dp[i]), len(dp), DEFAULT_SCALES)
    with torch.no_grad():
        Q, X = multiscale_descriptors(model, qi), multiscale_descriptors(model, di)
        # the extraction really took the max over scales
        xs = [t[None] for t in di[0]]
        one = combine_scales([model.global_descriptor(x) for x in xs], "max")
        np.testing.assert_allclose(X[0], one[0].numpy(), rtol=1e-5, atol=1e-6)
    ranks = np.argsort(-(X @ Q.T), axis=0)
    return ({p: r.map for p, r in evaluate(ranks, gnd).items()},
            {p: r.map for p, r in evaluate(superglobal_ranks(Q, X, ranks, m=k), gnd).items()})


def test_supg_pooling_and_superglobal_rerank_end_to_end(tmp_path, capsys) -> None:
    root = tmp_path / "data"
    gnd = _write(root)
    base = ["retrieval", "test", "MODEL.DEPTH", "50", "TEST.WEIGHTS", "random", "TEST.DATA_DIR", str(root),
            "TEST.DATASET_LIST", "['roxford5k']", "TEST.TOPK_LIST", "[4]", "--seed", str(SEED),
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out.json"), "--device", "cpu"]
    sg = ["SupG.gemp", "True", "SupG.rgem", "True", "SupG.sgem", "True", "SupG.relup", "True"]
    assert main([*base, *sg, "--rerank", "superglobal", "--shortlist", "plain"]) == 0
    out = capsys.readouterr().out
    assert "re-ranked top-4 with superglobal; shortlist: plain" in out
    rep = json.loads((tmp_path / "out.json").read_text())
    assert rep["model"]["pooling"] == "relup0.014-rgem2.5x5-gemp4.6-l2fc-scalemax"
    r = rep["datasets"]["roxford5k"]
    glob, rer = _by_hand(root, gnd, 4)
    assert {p: v["map"] for p, v in r["global"].items()} == glob
    (rk,) = r["rerank"]
    assert rk["reranker"] == "superglobal" and rk["k"] == 4
    assert {p: v["map"] for p, v in rk["results"].items()} == rer
    # CVNet's own pooling is keyed apart: a plain run extracts again instead of reading these descriptors
    assert main([*base, "--rerank", "none"]) == 0
    assert json.loads((tmp_path / "out.json").read_text())["model"]["pooling"] == "cvnet"
    assert len(list((tmp_path / "cache").glob("roxford5k-db-global-*"))) == 2


def test_supg_values_must_be_booleans(tmp_path, capsys) -> None:
    assert main(["retrieval", "test", "MODEL.DEPTH", "50", "TEST.WEIGHTS", "random", "TEST.DATA_DIR",
                 str(tmp_path), "SupG.gemp", "4.6"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SUPG.GEMP: expected True or False" in err
