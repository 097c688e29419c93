"""Crash-safe file writes: write to a temporary file in the same folder, fsync, then rename.

A reader therefore sees either the old complete file or the new complete file, never a partial one.

A process killed with SIGKILL cannot remove its temporary file, so temporaries carry the writer's
host and process id in their name (``.NAME.HOST-PID.XXXXXXXX.tmp``) and the next save of the same
target sweeps those whose writer is gone; :func:`sweep_stale_temporaries` does the same for a whole
folder when a run or index is opened. A temporary of a live writer is never touched.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

log = logging.getLogger(__name__)

# Temporaries without a recognisable writer (another tool, an older bitseek) count as stale after this long.
UNOWNED_STALE_SECONDS = 24 * 3600

_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_]*)-(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
_OLD_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32] or "host"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(path: Path, now: float) -> bool:
    m = _TMP_RE.match(path.name)
    if m is not None:
        pid = int(m.group("pid"))
        if m.group("host") == _host():
            return pid != os.getpid() and not _pid_alive(pid)
    elif _OLD_TMP_RE.match(path.name) is None:
        return False
    try:
        return now - path.stat().st_mtime > UNOWNED_STALE_SECONDS
    except FileNotFoundError:
        return False


def sweep_stale_temporaries(directory: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Remove temporaries in ``directory`` (only those of target ``name`` if given) left by dead writers."""
    d = Path(directory)
    pattern = f".{glob.escape(name)}.*.tmp" if name is not None else ".*.tmp"
    removed: list[Path] = []
    now = time.time()
    try:
        candidates = list(d.glob(pattern))
    except OSError:
        return removed
    for p in candidates:
        if not _is_stale(p, now):
            continue
        try:
            p.unlink()
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
        removed.append(p)
        log.info("removed a temporary file left by an interrupted save: %s", p)
    return removed


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_prefix(target_name: str) -> str:
    """The ``mkstemp``/``mkdtemp`` prefix for a temporary of ``target_name`` that a sweep can attribute."""
    return f".{target_name}.{_host()}-{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that open files themselves (h5py, faiss);
    on a clean exit it is fsynced and renamed over ``path``, on an error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_dir():
        from bitseek.errors import InputError

        raise InputError(f"{target}: is a directory; give a file path to write")
    sweep_stale_temporaries(target.parent, target.name)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target.name), suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a plain open() would
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing through :func:`atomic_path`: readers see the old file or the new one."""
    if "w" not in mode:
        raise ValueError(f"atomic_open only writes; got mode {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)
