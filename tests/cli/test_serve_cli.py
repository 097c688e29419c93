"""``bitseek serve``: bad flags and folders are one line and exit code 2."""

from __future__ import annotations

import socket

import pytest

from bitseek.cli.main import main

pytest.importorskip("fastapi", reason="serve needs the 'serve' extra")


@pytest.mark.parametrize("argv,fragment", [
    (["--port", "70000"], "--port"), (["--port", "x"], "--port"), (["--max-upload-mb", "0"], "--max-upload-mb"),
    (["--timeout", "-1"], "--timeout"), (["--max-k", "0"], "--max-k"), (["--workers", "0"], "--workers"),
])
def test_bad_flags_are_usage_errors(tmp_path, capsys, argv, fragment):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--collection", str(tmp_path), *argv])
    assert e.value.code == 2 and fragment in capsys.readouterr().err


def test_taken_port_is_one_line(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert main(["serve", "--collection", str(tmp_path), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--port" in err[0] and "Traceback" not in err[0]


def test_not_a_collection_is_one_line(tmp_path, capsys):
    pytest.importorskip("bitseek.collection", reason="the Collection API lands with `bitseek ingest`")
    assert main(["serve", "--collection", str(tmp_path / "nothing"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing" in err[0]
