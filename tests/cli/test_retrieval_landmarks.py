"""End to end on the built-in landmark benchmark: ``bitseek data landmarks`` -> ``bitseek retrieval test``
(extraction into the feature cache -> global search -> binary first stage -> CVNet re-rank ->
revisited Easy/Medium/Hard mAP), offline, random R50 weights, one scale so it takes seconds."""

from __future__ import annotations

import json
import pickle

import pytest

pytest.importorskip("cv2", reason="the CVNet protocol needs opencv-python-headless (bitseek[cvnet])")

from bitseek.cli.main import main  # noqa: E402


def test_landmarks_benchmark_extract_search_rerank_report(tmp_path, capsys):
    data = tmp_path / "lm"
    assert main(["data", "landmarks", "--out", str(data), "--size", "tiny"]) == 0
    gnd = pickle.loads((data / "landmarks" / "gnd_landmarks.pkl").read_bytes())
    n_q, n_db = len(gnd["qimlist"]), len(gnd["imlist"])
    n_d = len((data / "revisitop1m" / "revisitop1m.txt").read_text().split())
    capsys.readouterr()
    argv = ["retrieval", "test", "MODEL.DEPTH", "50", "TEST.WEIGHTS", "random", "TEST.DATA_DIR", str(data),
            "TEST.DATASET_LIST", "['landmarks']", "TEST.SCALE_LIST", "[1.0]", "TEST.TOPK_LIST", "[5]",
            "--plus1m", str(data / "revisitop1m"), "--first-stage", "itq:32", "--cache", str(tmp_path / "cache"),
            "--out", str(tmp_path / "out.json"), "-q"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # revisitop's report: global, the binary first stage, re-ranked -- E/M/H mAP and mP@k each
    assert out.count(">> landmarks: mAP E: ") == 3 and out.count(">> landmarks: mP@k[1, 5, 10] E: ") == 3
    assert ">> landmarks: re-ranked top-5 with cvnet; shortlist: gnd" in out
    rep = json.loads((tmp_path / "out.json").read_text())
    assert rep["first_stage"] == "itq:32" and rep["rerank"] == "cvnet" and rep["shortlist_mode"] == "gnd"
    r = rep["datasets"]["landmarks"]
    assert (r["n_query"], r["n_db"], r["n_distractors"]) == (n_q, n_db, n_d)
    fs = r["first_stage"]
    # the default depth (1000) holds the whole database: re-scored by float, the Hamming shortlist is
    # the exact float ranking, so the binary stage costs nothing here
    assert fs["shortlist_L"] == n_db + n_d and fs["recall_at_k"]["recall"] == 1.0
    assert fs["map"]["binary_top_L"] == fs["map"]["float_full"] == {p: v["map"] for p, v in r["global"].items()}
    assert fs["bytes_per_image"]["binary_code"] == 4
    (rk,) = r["rerank"]
    assert rk["k"] == 5 and 0 < rk["n_pairs"] <= 3 * 5 * n_q
    for res in (r["global"], rk["results"]):
        assert set(res) == {"easy", "medium", "hard"} and all(0.0 <= v["map"] <= 100.0 for v in res.values())
    # the re-rank cache holds convolved pyramids, for the database and only the distractors that reached a shortlist
    kinds = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "cache").iterdir())
    assert kinds == ["landmarks-db-global", "landmarks-db-pyramid", "landmarks-query-global",
                     "landmarks-query-pyramid", "revisitop1m-global", "revisitop1m-pyramid"]
