"""``bitseek ingest`` and ``bitseek search --collection``: table, JSON, radius, and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("av", reason="video decoding needs PyAV (bitseek[collections])")

from bitseek.cli.main import main  # noqa: E402
from bitseek.media.samples import packaged_image, packaged_video  # noqa: E402


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> tuple[Path, Path]:
    src = tmp_path_factory.mktemp("src")
    root = tmp_path_factory.mktemp("cols") / "col"
    for n in ("chelsea.png", "coffee.png"):
        shutil.copy(packaged_image(n), src / n)
    shutil.copy(packaged_video("carphone_pristine.mp4"), src / "carphone.mp4")
    (src / "empty.png").write_bytes(b"")
    assert main(["-q", "ingest", str(src), "--collection", str(root), "--frames", "4"]) == 0
    return src, root


def test_ingest_reports(collection, capsys):
    src, root = collection
    assert main(["-q", "ingest", str(src), "--collection", str(root), "--json"]) == 0
    out, err = capsys.readouterr()
    rep = json.loads(out)
    assert rep["added"] == 0 and rep["unchanged"] == 3 and rep["items"] == 3
    assert f"skipped {(src / 'empty.png').resolve()}:" in err


def test_search_json_and_table(collection, capsys):
    src, root = collection
    assert main(["search", "--collection", str(root), "--image", str(src / "coffee.png"), "-k", "2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    res = doc["results"]
    assert len(res) == 2 and Path(res[0]["path"]).name == "coffee.png" and res[0]["score"] > 0.99
    assert {"id", "score", "distance", "path", "kind", "time"} <= set(res[0])
    assert res[0]["score"] >= res[1]["score"]
    assert all((r["time"] is None) == (r["kind"] == "image") for r in res)  # videos name their best frame

    assert main(["search", "--collection", str(root), "--video", str(src / "carphone.mp4")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split()[:6] == ["rank", "id", "score", "kind", "time", "path"]
    assert lines[2].split()[0] == "1" and lines[2].endswith("carphone.mp4") and "video" in lines[2]
    assert len(lines) == 2 + 3

    ids = {Path(r["path"]).name: r["id"] for r in res}
    assert main(["search", "--collection", str(root), "--id", str(ids["coffee.png"]), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["results"]
    assert ids["coffee.png"] not in [r["id"] for r in got] and len(got) == 2  # the item itself is left out

    assert main(["search", "--collection", str(root), "--image", str(src / "coffee.png"), "--radius", "0.95",
                 "--json"]) == 0
    near = json.loads(capsys.readouterr().out)["results"]
    assert [Path(r["path"]).name for r in near] == ["coffee.png"]


@pytest.mark.parametrize("argv, message", [
    (["--collection", "{root}"], "give exactly one query"),
    (["--collection", "{root}", "--id", "1", "--image", "{src}/coffee.png"], "got --image and --id"),
    (["--collection", "{root}", "--image", "{src}/nope.jpg"], "--image .*nope.jpg: no such file"),
    (["--collection", "{src}", "--id", "1"], "not a collection"),
    (["--collection", "{root}", "--id", "999"], "no item with id 999"),
    (["--collection", "{root}", "--id", "1", "--radius", "x"], "--radius 'x': expected a number"),
    (["--collection", "{root}", "--id", "1", "--index", "{root}/x"], "--index: not used with --collection"),
    (["--collection", "{root}", "--image", "{src}/empty.png"], "empty.png"),
    ([], "--index is required"),
])
def test_user_mistakes_are_one_line(collection, capsys, argv, message):
    src, root = collection
    argv = [a.format(src=src, root=root) for a in argv]
    assert main(["search", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bitseek search: error:")
    import re

    assert re.search(message, err), err


def test_ingest_mistakes(tmp_path, capsys):
    assert main(["ingest", str(tmp_path / "missing"), "--collection", str(tmp_path / "c")]) == 2
    assert "SRC" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main(["ingest", str(tmp_path), "--collection", str(tmp_path / "c"), "--model", "bogus"]) == 2
    assert "--model bogus: expected float, itq" in capsys.readouterr().err
