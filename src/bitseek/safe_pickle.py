"""The one safe unpickler: an explicit allow-list of globals and an allocation budget tied to the file size.

Data files in the pickle format (CIFAR-10's python batches, revisitop's ``gnd_*.pkl``) can name any
callable, and pickle calls it. Two defences, both here so every reader gets them:

* only globals on the reader's allow-list resolve (``find_class`` is the single door through which
  GLOBAL, STACK_GLOBAL, INST, OBJ and the extension registry reach code); anything else is refused
  before it runs;
* callables that allocate from a number in the file (``bytearray(2**40)``, numpy's
  ``_reconstruct`` with a huge shape) are wrapped so that no single allocation exceeds the file's own
  size and all of them together stay within a small multiple of it — the bytes of a real array come
  from the file, so a legitimate file never needs more.
"""

from __future__ import annotations

import codecs
import io
import math
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from bitseek.errors import FileFormatError

__all__ = ["ALLOW_NOTHING", "ALLOW_NUMPY_ARRAYS", "Budget", "PickleRefused", "SafeUnpickler", "load_file", "loads"]


class PickleRefused(FileFormatError):
    """The file names a global outside the allow-list, or asks for an allocation it cannot justify."""

    def __init__(self, message: str, reason: str, global_name: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.global_name = global_name


class _Refused(pickle.UnpicklingError):
    def __init__(self, reason: str, global_name: str | None = None) -> None:
        super().__init__(reason)
        self.global_name = global_name

AllowList = Mapping[tuple[str, str], Callable[["Budget"], Any]]

# Slack for small objects (dtype descriptors, headers) so tiny files still load.
_SLACK = 1 << 20


class Budget:
    """Bytes a load may allocate from sizes written in the file: each at most the file, all at most 4x it."""

    def __init__(self, file_bytes: int) -> None:
        self.per_item = int(file_bytes) + _SLACK
        self.left = 4 * int(file_bytes) + _SLACK

    def take(self, nbytes: int, what: str) -> None:
        if nbytes < 0:
            raise pickle.UnpicklingError(f"{what}: negative size")
        if nbytes > self.per_item or nbytes > self.left:
            raise pickle.UnpicklingError(f"{what} asks for {nbytes} bytes, more than a file of this size can "
                                         "hold (corrupt or crafted file)")
        self.left -= nbytes


def _sized_buffer(kind: type) -> Callable[[Budget], Any]:
    def make(budget: Budget) -> Callable[..., Any]:
        def build(*args: Any) -> Any:
            if args and isinstance(args[0], int) and not isinstance(args[0], bool):
                budget.take(args[0], f"{kind.__name__}({args[0]})")
            elif args and hasattr(args[0], "__len__"):
                budget.take(len(args[0]), kind.__name__)
            return kind(*args)
        return build
    return make


def _plain(obj: Any) -> Callable[[Budget], Any]:
    return lambda budget: obj


def _latin1_encode(budget: Budget) -> Callable[..., bytes]:
    """Python 3 pickles of ``bytes`` (protocol < 3) call ``_codecs.encode(str, 'latin1')``."""

    def encode(text: str, encoding: str = "latin1") -> bytes:
        if codecs.lookup(encoding).name != "iso8859-1":
            raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
        return text.encode("latin1")
    return encode


def _reconstruct(budget: Budget) -> Callable[..., Any]:
    from numpy._core import multiarray

    def build(subtype: Any, shape: Any, dtype: Any) -> Any:
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError("numpy _reconstruct may only build plain ndarrays")
        try:
            dims = [int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,))]
            itemsize = np.dtype(dtype).itemsize if not isinstance(dtype, bytes) else np.dtype(dtype.decode()).itemsize
        except (TypeError, ValueError) as e:
            raise pickle.UnpicklingError(f"numpy _reconstruct: bad shape or dtype ({e})") from None
        if any(d < 0 for d in dims):
            raise pickle.UnpicklingError(f"numpy _reconstruct: negative shape {dims}")
        budget.take(math.prod(dims) * max(itemsize, 1), f"an array of shape {tuple(dims)}")
        return multiarray._reconstruct(subtype, shape, dtype)
    return build


def _frombuffer(budget: Budget) -> Callable[..., Any]:
    from numpy._core import numeric

    def build(buf: Any, dtype: Any, shape: Any, order: str) -> Any:
        return numeric._frombuffer(buf, dtype, shape, order)  # a view of bytes already in the file
    return build


def _scalar(budget: Budget) -> Callable[..., Any]:
    from numpy._core import multiarray

    return multiarray.scalar


def _numpy_allow_list() -> dict[tuple[str, str], Callable[[Budget], Any]]:
    allowed: dict[tuple[str, str], Callable[[Budget], Any]] = {("_codecs", "encode"): _latin1_encode}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _reconstruct
        allowed[(mod, "scalar")] = _scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = _frombuffer
    allowed[("numpy", "ndarray")] = _plain(np.ndarray)
    allowed[("numpy", "dtype")] = _plain(np.dtype)
    for mod in ("builtins", "__builtin__"):
        for name, obj in (("list", list), ("dict", dict), ("tuple", tuple), ("set", set), ("frozenset", frozenset),
                          ("str", str), ("int", int), ("float", float), ("complex", complex), ("bool", bool)):
            allowed[(mod, name)] = _plain(obj)
        allowed[(mod, "bytes")] = _sized_buffer(bytes)
        allowed[(mod, "bytearray")] = _sized_buffer(bytearray)
    return allowed


#: numpy arrays, dtypes and inert builtin containers (CIFAR-10 python batches).
ALLOW_NUMPY_ARRAYS: AllowList = _numpy_allow_list()
#: no global at all: dicts, lists, strings and numbers, which pickle builds with its own opcodes (revisitop gnd).
ALLOW_NOTHING: AllowList = {}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only ``allowed`` globals, each bound to this load's allocation budget."""

    def __init__(self, file: io.BufferedIOBase, allowed: AllowList, budget: Budget, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = allowed
        self._budget = budget

    def find_class(self, module: str, name: str) -> Any:
        factory = self._allowed.get((module, name))
        if factory is None:
            raise _Refused(f"global {module}.{name} is not allowed in a data file", f"{module}.{name}")
        return factory(self._budget)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a data file")


def loads(data: bytes, allowed: AllowList, where: str = "pickle", encoding: str = "ASCII") -> Any:
    """Unpickle ``data`` under ``allowed``; every failure is a FileFormatError naming ``where``."""
    try:
        return SafeUnpickler(io.BytesIO(data), allowed, Budget(len(data)), encoding=encoding).load()
    except _Refused as e:
        raise PickleRefused(f"{where}: refused or invalid pickle ({e})", str(e), e.global_name) from None
    except pickle.UnpicklingError as e:
        raise PickleRefused(f"{where}: refused or invalid pickle ({e})", str(e)) from None
    except MemoryError:
        raise FileFormatError(f"{where}: asks for more memory than this machine has (corrupt or crafted)") from None
    except Exception as e:  # truncated (EOFError), wrong opcodes (ValueError, KeyError, IndexError …)
        raise FileFormatError(f"{where}: corrupt pickle ({type(e).__name__}: {e})") from None


def load_file(path: str | os.PathLike[str], allowed: AllowList, encoding: str = "ASCII") -> Any:
    """Read and unpickle a file under ``allowed`` (see :func:`loads`)."""
    p = Path(path)
    if not p.exists():
        raise FileFormatError(f"{p}: file not found")
    if not p.is_file():
        raise FileFormatError(f"{p}: is not a file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise FileFormatError(f"{p}: cannot read ({e.strerror or e})") from None
    return loads(data, allowed, str(p), encoding=encoding)
