"""`bitseek index` / `bitseek search`: readable table, --json, no padding, radius rules, search-time
options, training-sample capping, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitseek.cli.main import main
from bitseek.codes import CodeSet, hamming


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(3)
    db = CodeSet.from_signed(np.where(rng.standard_normal((12, 16)) > 0, 1.0, -1.0), ids=np.arange(500, 512),
                             meta={"path": [f"clips/v{i}.mp4" for i in range(12)]})
    q = CodeSet.from_signed(np.where(rng.standard_normal((3, 16)) > 0, 1.0, -1.0), ids=[70, 71, 72])
    db.save(tmp_path / "db.codes")
    q.save(tmp_path / "q.codes")
    assert main(["index", "--codes", str(tmp_path / "db.codes"), "--out", str(tmp_path / "db.index")]) == 0
    return tmp_path, db, q


def _search(capsys, tmp_path, *extra):
    assert main(["search", "--index", str(tmp_path / "db.index"), "--queries", str(tmp_path / "q.codes"), *extra]) == 0
    return capsys.readouterr().out


def test_table_has_rank_id_distance_and_metadata(files, capsys):
    tmp_path, db, q = files
    out = _search(capsys, tmp_path, "-k", "3")
    d = hamming(q.codes, db.codes)
    order = np.lexsort((np.arange(12), d[0]))[:3]
    lines = out.splitlines()
    at = lines.index("query 70: 3 hit(s)")
    assert lines[at + 1].split() == ["rank", "id", "distance", "path"]
    for r, j in enumerate(order):
        assert lines[at + 2 + r].split() == [str(r + 1), str(500 + j), str(d[0, j]), f"clips/v{j}.mp4"]


def test_json_has_no_padding_when_k_exceeds_the_database(files, capsys):
    tmp_path, db, q = files
    doc = json.loads(_search(capsys, tmp_path, "-k", "50", "--json"))
    assert doc["engine"] == "flat" and doc["k"] == 50
    for r in doc["results"]:
        assert len(r["ids"]) == len(r["distances"]) == 12 and -1 not in r["ids"]
        assert all(isinstance(x, int) for x in r["distances"])
        assert r["meta"]["path"] == [f"clips/v{i - 500}.mp4" for i in r["ids"]]


def test_radius_gives_integer_distances_and_k_caps_it(files, capsys):
    tmp_path, db, q = files
    d = hamming(q.codes, db.codes)
    full = json.loads(_search(capsys, tmp_path, "--radius", "8", "--json"))["results"]
    capped = json.loads(_search(capsys, tmp_path, "--radius", "8", "-k", "2", "--json"))["results"]
    for row, a, b in zip(d, full, capped):
        want = np.lexsort((np.arange(12), row))
        want = want[row[want] <= 8]
        assert a["ids"] == (want + 500).tolist() and a["distances"] == row[want].tolist()
        assert all(type(x) is int for x in a["distances"])
        assert b["ids"] == a["ids"][:2] and b["distances"] == a["distances"][:2]


def test_search_time_options(tmp_path, capsys):
    rng = np.random.default_rng(0)
    db = CodeSet(rng.integers(0, 256, (400, 2), dtype=np.uint8), np.arange(400), 16)
    db.save(tmp_path / "db.codes")
    CodeSet(db.codes[:5], np.arange(5), 16).save(tmp_path / "q.codes")
    assert main(["index", "--codes", str(tmp_path / "db.codes"), "--spec", "ivf8", "--train-size", "100",
                 "--out", str(tmp_path / "db.index")]) == 0
    assert "ivf8,nprobe=1" in capsys.readouterr().out
    wide = json.loads(_search(capsys, tmp_path, "-k", "1", "--nprobe", "8", "--json"))
    assert wide["params"] == {"nprobe": 8}
    assert [r["ids"][0] for r in wide["results"]] == list(range(5)) and all(r["distances"][0] == 0 for r in wide["results"])
    assert main(["search", "--index", str(tmp_path / "db.index"), "--queries", str(tmp_path / "q.codes"),
                 "--ef", "40"]) == 2
    assert capsys.readouterr().err.strip() == \
        "bitseek search: error: --ef: a ivf8,nprobe=1 index has no ef_search (it takes: nprobe)"


def test_index_caps_the_training_sample(tmp_path, monkeypatch):
    import bitseek.index.spec as spec_module

    rng = np.random.default_rng(0)
    CodeSet(rng.integers(0, 256, (300, 2), dtype=np.uint8), np.arange(300), 16).save(tmp_path / "db.codes")
    seen = []
    real = spec_module.index_from_codeset

    def spy(codeset, spec, train_size=None, seed=0, **kw):
        seen.append(train_size)
        return real(codeset, spec, train_size=train_size, seed=seed, **kw)

    monkeypatch.setattr(spec_module, "index_from_codeset", spy)
    monkeypatch.setattr("bitseek.index.index_from_codeset", spy)
    assert main(["index", "--codes", str(tmp_path / "db.codes"), "--spec", "ivf4", "--train-size", "50",
                 "--out", str(tmp_path / "db.index")]) == 0
    assert seen == [50]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--index", "{q}", "--queries", "{q}"], "--index .*q.codes: this is a code set; build an index first"),
        (["--index", "{i}", "--queries", "{i}"], "--queries .*db.index: this is an index file"),
        (["--index", "{i}", "--queries", "{q}", "--radius", "2.5"], "--radius '2.5': expected a whole number"),
        (["--index", "{i}", "--queries", "{q}", "--nprobe", "4"], "--nprobe: a flat index has no nprobe"),
        (["--index", "{i}", "--queries", "{d}/missing.codes"], "--queries .*missing.codes: no such file"),
    ],
)
def test_user_mistakes_are_one_line(files, capsys, args, message):
    tmp_path, _, _ = files
    fill = {"q": str(tmp_path / "q.codes"), "i": str(tmp_path / "db.index"), "d": str(tmp_path)}
    assert main(["search", *[a.format(**fill) for a in args]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    import re

    assert re.search(message, err), err


def test_auto_index_reports_and_records_its_tuning(tmp_path, capsys):
    from bitseek.codes.synthetic import ClusteredCodes

    pop = ClusteredCodes(bits=64, clusters=128, spread=0.7, seed=2)
    CodeSet(pop.sample(25_000), np.arange(25_000), 64).save(tmp_path / "db.codes")
    CodeSet(pop.sample(20, stream=1), np.arange(20), 64).save(tmp_path / "q.codes")
    assert main(["index", "--codes", str(tmp_path / "db.codes"), "--spec", "auto", "--target-recall", "0.95",
                 "--out", str(tmp_path / "db.index")]) == 0
    out = capsys.readouterr().out
    assert "auto chose ivf" in out and "(target 0.95)" in out and "x the exact scan" in out
    from bitseek.index import load_index

    assert load_index(tmp_path / "db.index").tuning["target_recall"] == 0.95
    doc = json.loads(_search(capsys, tmp_path, "-k", "5", "--recall", "0.9", "--json"))
    assert doc["engine"] == "auto" and doc["params"] == {"recall": 0.9} and len(doc["results"]) == 20


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--spec", "auto", "--target-recall", "1.5"], "--target-recall must be in \\(0, 1\\]"),
        (["--spec", "auto", "--target-recall", "0"], "--target-recall must be in \\(0, 1\\]"),
        (["--spec", "flat", "--target-recall", "0.9"], "--target-recall: needs --spec auto"),
        (["--spec", "auto"], "too few to tune an auto index: need at least 500"),
    ],
)
def test_auto_index_mistakes_are_one_line(tmp_path, capsys, extra, message):
    import re

    CodeSet(np.random.default_rng(0).integers(0, 256, (300, 8), dtype=np.uint8), np.arange(300), 64).save(
        tmp_path / "db.codes")
    assert main(["index", "--codes", str(tmp_path / "db.codes"), *extra, "--out", str(tmp_path / "x.index")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_search_mmap_equals_loaded(files, capsys):
    tmp_path, _, _ = files
    loaded = json.loads(_search(capsys, tmp_path, "-k", "5", "--json"))
    mapped = json.loads(_search(capsys, tmp_path, "-k", "5", "--json", "--mmap"))
    assert mapped["results"] == loaded["results"]


def test_search_mmap_ivf_equals_loaded(files, capsys):
    tmp_path, _, _ = files
    assert main(["index", "--codes", str(tmp_path / "db.codes"), "--spec", "ivf2", "--out", str(tmp_path / "db.index")]) == 0
    capsys.readouterr()
    loaded = json.loads(_search(capsys, tmp_path, "-k", "5", "--json", "--nprobe", "2"))
    mapped = json.loads(_search(capsys, tmp_path, "-k", "5", "--json", "--nprobe", "2", "--mmap"))
    assert mapped["results"] == loaded["results"] and any(r["ids"] for r in mapped["results"])
