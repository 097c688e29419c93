"""``bitseek data landmarks``: builds the benchmark, reports where; a bad folder is one line and exit code 2."""

from __future__ import annotations

import pytest

from bitseek.cli.main import main

for _mod in ("skimage", "pywt", "sklearn", "matplotlib"):
    pytest.importorskip(_mod, reason="the landmark photographs ship inside this package (bitseek[landmarks])")


def test_data_landmarks_builds_and_reuses(tmp_path, capsys):
    out = tmp_path / "lm"
    assert main(["data", "landmarks", "--out", str(out), "--size", "tiny", "--seed", "2"]) == 0
    text = capsys.readouterr().out
    from bitseek.data.embedded.landmarks import read_manifest

    n_q = read_manifest(out)["sizes"]["queries"]
    assert "gnd_landmarks.pkl" in text and "revisitop1m.txt" in text and f"{n_q} queries" in text
    assert (out / "landmarks" / "gnd_landmarks.pkl").is_file()
    assert main(["data", "landmarks", "--out", str(out), "--size", "tiny", "--seed", "2"]) == 0


def test_data_landmarks_refuses_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("x")
    assert main(["data", "landmarks", "--out", str(tmp_path), "--size", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds other files" in err[0] and "Traceback" not in err[0]


def test_data_needs_a_dataset(capsys):
    with pytest.raises(SystemExit) as e:
        main(["data"])
    assert e.value.code == 2
