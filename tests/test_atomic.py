"""Crash-safe writes: a reader sees the old file or the new one, and dead writers' temporaries go away."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitseek.atomic import atomic_open, atomic_write_bytes, atomic_write_text, sweep_stale_temporaries
from bitseek.errors import InputError

SRC = Path(__file__).resolve().parents[1] / "src"


def _temps(d: Path) -> list[Path]:
    return sorted(d.glob(".*.tmp"))


def test_write_replaces_the_whole_file(tmp_path) -> None:
    p = tmp_path / "sub" / "a.json"
    atomic_write_text(p, "x" * 1000)
    atomic_write_text(p, "short")
    assert p.read_text() == "short" and not _temps(p.parent)
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert (p.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_error_while_writing_keeps_the_old_file_and_no_temporary(tmp_path) -> None:
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(p) as fh:
            fh.write(b"new, half written")
            raise RuntimeError("disk full")
    assert p.read_bytes() == b"old" and not _temps(tmp_path)


def test_a_killed_writer_leaves_the_old_file_and_its_temporary_is_swept(tmp_path) -> None:
    p = tmp_path / "a.bin"
    p.write_bytes(b"old")
    code = ("import os, signal, sys\n"
            "from bitseek.atomic import atomic_open\n"
            "with atomic_open(sys.argv[1]) as fh:\n"
            "    fh.write(b'new'); fh.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    r = subprocess.run([sys.executable, "-c", code, str(p)], env=env, capture_output=True)
    assert r.returncode == -9
    assert p.read_bytes() == b"old"
    left = _temps(tmp_path)
    assert len(left) == 1 and left[0].read_bytes() == b"new"  # SIGKILL: nobody could clean up
    atomic_write_bytes(p, b"newer")  # the next save of the same file sweeps it
    assert p.read_bytes() == b"newer" and not _temps(tmp_path)


def test_sweep_spares_live_writers_and_young_unowned_files(tmp_path) -> None:
    host = "".join(c if c.isalnum() or c == "_" else "_" for c in socket.gethostname())[:32] or "host"
    mine = tmp_path / f".a.bin.{host}-{os.getpid()}.abcdefgh.tmp"
    parent = tmp_path / f".a.bin.{host}-{os.getppid()}.abcdefgh.tmp"  # alive: it started us
    young = tmp_path / ".b.bin.abcdefgh.tmp"  # no writer recorded, recent
    old = tmp_path / ".c.bin.ijklmnop.tmp"
    other = tmp_path / "notes.tmp"  # not one of ours at all
    for f in (mine, parent, young, old, other):
        f.write_bytes(b"x")
    two_days = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days, two_days))
    os.utime(other, (two_days, two_days))
    removed = sweep_stale_temporaries(tmp_path)
    assert removed == [old]
    assert mine.exists() and parent.exists() and young.exists() and other.exists()


def test_a_directory_target_is_a_user_error(tmp_path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(ValueError, match="only writes"):
        with atomic_open(tmp_path / "f", "rb"):
            pass
