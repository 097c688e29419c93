"""Label matrices from MATLAB ``.mat`` files, every version the video-hashing releases use.

* v4/v5/v7 (what SSVH, BTH and ConMH ship) are read with ``scipy.io.loadmat``.
* v7.3 is HDF5 underneath. MATLAB stores arrays column-major, so a MATLAB ``n × C`` matrix appears
  in HDF5 as a ``C × n`` dataset; we transpose it back. Sparse v7.3 matrices (a group with
  ``data``/``ir``/``jc`` and a ``MATLAB_sparse`` row-count attribute) are rebuilt as CSC.

Labels are returned as float32 ``(n, classes)`` multi-hot matrices: the evaluator only asks whether
two rows share a label, and float32 holds 0/1 exactly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np
import scipy.io
import scipy.sparse

from bitseek.errors import FileFormatError

__all__ = ["load_label_matrix", "load_label_files", "mat_version", "mat_variables"]


def mat_version(path: Path) -> str:
    """'v73' for HDF5-based files, 'v5' for classic MAT files (v4/v6/v7), errors otherwise."""
    if not path.exists():
        raise FileFormatError(f"{path}: label file does not exist")
    if h5py.is_hdf5(path):
        return "v73"
    try:
        major, _ = scipy.io.matlab.matfile_version(str(path))
    except Exception as e:  # scipy raises MatReadError (empty/text), IndexError (cut header), ValueError …
        raise FileFormatError(f"{path}: not a MATLAB .mat file (empty, truncated header or another format: "
                              f"{type(e).__name__}: {e})") from None
    if major in (0, 1):
        return "v5"
    raise FileFormatError(f"{path}: unsupported MAT-file version {major}")


def _as_matrix(value: Any, path: Path, key: str) -> np.ndarray:
    if scipy.sparse.issparse(value):
        value = value.toarray()
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise FileFormatError(f"{path}: variable {key!r} is not a numeric matrix (dtype {arr.dtype})")
    if arr.ndim != 2:
        raise FileFormatError(
            f"{path}: variable {key!r} has shape {arr.shape}; expected a 2-D (videos, classes) matrix"
        )
    out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        raise FileFormatError(f"{path}: variable {key!r} contains NaN/inf")
    return out


def _load_v5(path: Path, key: str) -> np.ndarray:
    try:
        mat = scipy.io.loadmat(str(path), variable_names=[key])
    except Exception as e:  # any failure of scipy's parser means a damaged file (zlib, struct, MatReadError …)
        raise FileFormatError(f"{path}: cannot read MAT file (truncated or corrupt?): {type(e).__name__}: {e}") \
            from None
    if key not in mat:
        try:
            names = [w[0] for w in scipy.io.whosmat(str(path))]
        except Exception:  # the listing is only a hint in the error message
            names = []
        raise FileFormatError(f"{path}: no variable {key!r} (variables: {', '.join(names) or 'none'})")
    return _as_matrix(mat[key], path, key)


def _load_v73(path: Path, key: str) -> np.ndarray:
    try:
        fh = h5py.File(path, "r")
    except OSError as e:
        raise FileFormatError(f"{path}: cannot open v7.3 MAT file (truncated or corrupt?): {e}") from None
    with fh:
        if key not in fh:
            names = [k for k in fh.keys() if not k.startswith("#")]
            raise FileFormatError(f"{path}: no variable {key!r} (variables: {', '.join(names) or 'none'})")
        try:
            node = fh[key]
            if isinstance(node, h5py.Group):
                if "MATLAB_sparse" not in node.attrs or not {"data", "ir", "jc"} <= set(node.keys()):
                    raise FileFormatError(f"{path}: variable {key!r} is a struct/cell, not a label matrix")
                nrows = int(node.attrs["MATLAB_sparse"])
                jc = np.asarray(node["jc"], dtype=np.int64)
                csc = scipy.sparse.csc_matrix(
                    (np.asarray(node["data"]), np.asarray(node["ir"], dtype=np.int64), jc),
                    shape=(nrows, jc.size - 1),
                )
                return _as_matrix(csc, path, key)
            cls = node.attrs.get("MATLAB_class", b"")
            cls = cls.decode() if isinstance(cls, bytes) else str(cls)
            if cls in ("cell", "struct", "char"):
                raise FileFormatError(f"{path}: variable {key!r} is a MATLAB {cls}, not a label matrix")
            data = np.asarray(node[()])
        except FileFormatError:
            raise
        except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:  # h5py reports damage as any of these
            raise FileFormatError(f"{path}: cannot read variable {key!r} (corrupt file?): {e}") from None
    if data.ndim != 2:
        raise FileFormatError(f"{path}: variable {key!r} has shape {data.shape}; expected a 2-D matrix")
    return _as_matrix(data.T, path, key)  # column-major storage: HDF5 (C, n) is MATLAB (n, C)


def mat_variables(path: str | os.PathLike[str]) -> list[str]:
    """Names of the variables stored in a .mat file (any version)."""
    p = Path(path)
    if mat_version(p) == "v73":
        try:
            with h5py.File(p, "r") as fh:
                return [k for k in fh.keys() if not k.startswith("#")]
        except OSError as e:
            raise FileFormatError(f"{p}: cannot open v7.3 MAT file (truncated or corrupt?): {e}") from None
    try:
        return [w[0] for w in scipy.io.whosmat(str(p))]
    except Exception as e:  # see _load_v5
        raise FileFormatError(f"{p}: cannot read MAT file (truncated or corrupt?): {e}") from None


def load_label_matrix(path: str | os.PathLike[str], key: str | None = None) -> np.ndarray:
    """Read variable ``key`` of a .mat file (any version) as float32 (rows, classes).

    ``key=None`` takes the file's only variable, or ``labels`` when there are several.
    """
    p = Path(path)
    if not key:
        names = mat_variables(p)
        if len(names) == 1:
            key = names[0]
        elif "labels" in names:
            key = "labels"
        else:
            raise FileFormatError(f"{p}: holds variables {', '.join(names) or 'none'}; say which one holds "
                                  "the labels (e.g. re_label, q_label)")
    return _load_v73(p, key) if mat_version(p) == "v73" else _load_v5(p, key)


def load_label_files(paths: Sequence[str | os.PathLike[str]], key: str) -> np.ndarray:
    """Concatenate the label matrices of several files (e.g. YFCC's two test-label shards)."""
    mats = [load_label_matrix(p, key) for p in paths]
    if not mats:
        raise FileFormatError("no label files given")
    cols = {m.shape[1] for m in mats}
    if len(cols) > 1:
        detail = ", ".join(f"{Path(p).name}: {m.shape[1]}" for p, m in zip(paths, mats))
        raise FileFormatError(f"label shards disagree on the number of classes ({detail})")
    return mats[0] if len(mats) == 1 else np.concatenate(mats, axis=0)
