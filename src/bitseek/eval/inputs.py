"""Validation and preparation of the evaluator's inputs (codes and labels).

Every hashing metric refuses the same bad inputs with the same messages, so the checks live in
one place. Preparation also converts the inputs once into the forms the chunked kernels want:

* codes: both sides packed (``uint8``) -> 64-bit words for popcount distances; anything else ->
  float32 ``{-1, 0, +1}`` for matmul distances (exact: dot products of ±1/0 values are small
  integers, so the float32 result is exact and distances are integers or half-integers);
* labels: multi-hot rows -> bit words (``uint64``), so "shares at least one label" is an AND;
  integer class vectors stay integers and relevance is equality.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from bitseek._array import as_numpy
from bitseek.codes.bits import code_bits, popcount, to_signed, words
from bitseek.errors import InputError

__all__ = ["Codes", "Labels", "prepare_codes", "prepare_labels", "check_ks", "as_array"]


def as_array(x: Any, name: str) -> np.ndarray:
    """numpy view of arrays, torch tensors (any device) and sequences; None is refused by name."""
    return as_numpy(x, name)


# --------------------------------------------------------------------------- codes


@dataclass(frozen=True)
class Codes:
    """Query and database codes ready for chunked distance computation.

    ``packed``: both sides are bit words and distances come from popcount. Otherwise both are
    float32 ``{-1, 0, +1}`` and distances come from a matmul. ``ternary`` is True when a 0 entry
    exists, which makes half-integer distances possible. ``same``: the queries are the database.
    """

    query: np.ndarray
    db: np.ndarray
    bits: int
    packed: bool
    ternary: bool
    same: bool

    @property
    def n_query(self) -> int:
        return int(self.query.shape[0])

    @property
    def n_db(self) -> int:
        return int(self.db.shape[0])

    @cached_property
    def hamming_bytes(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(query, db) as packed bytes (zero-padded to 8-byte rows) for counting top-k, or None.

        Packed codes are viewed as they are; float codes without zeros are packed once (their
        Hamming distance equals ``0.5·(bits − q·d)`` exactly). Ternary codes have half-integer
        distances that bytes cannot express: None.
        """
        if self.packed:
            qb = self.query.view(np.uint8)
            return qb, (qb if self.same else self.db.view(np.uint8))
        if self.ternary:
            return None
        qb = words(np.packbits(self.query > 0, axis=1)).view(np.uint8)
        return qb, (qb if self.same else words(np.packbits(self.db > 0, axis=1)).view(np.uint8))

    @property
    def key_max(self) -> int:
        """Largest value :meth:`rank_key` can return."""
        return self.bits if self.packed else 2 * self.bits

    @property
    def key_per_bit(self) -> int:
        """Rank-key units per unit of Hamming distance (the key is 2·distance on the float path)."""
        return 1 if self.packed else 2

    def rank_key(self, rows: slice) -> np.ndarray:
        """int32 (r, n_db) integer key, monotone in the distance with the same ties.

        Packed: the Hamming distance itself. Float: ``bits − q·d`` = 2·distance, an exact integer
        even for ternary codes.
        """
        if self.packed:
            q = self.query[rows]
            acc = np.zeros((q.shape[0], self.n_db), dtype=np.int32)
            for w in range(q.shape[1]):
                acc += popcount(np.bitwise_xor(q[:, w, None], self.db[None, :, w]))
            return acc
        dot = self.query[rows] @ self.db.T
        np.subtract(np.float32(self.bits), dot, out=dot)
        return dot.astype(np.int32)

    def distance(self, rows: slice, dtype: np.dtype) -> np.ndarray:
        """(r, n_db) distances ``0.5·(bits − q·d)`` in ``dtype``, valued exactly as the reference's."""
        if self.packed:
            return self.rank_key(rows).astype(dtype)
        dot = self.query[rows] @ self.db.T
        if np.dtype(dtype) != np.float32:
            dot = dot.astype(dtype)
        # In-place 0.5·(bits − dot): every intermediate is an exact small (half-)integer.
        np.subtract(dot.dtype.type(self.bits), dot, out=dot)
        dot *= dot.dtype.type(0.5)
        return dot


def _check_code_matrix(a: np.ndarray, name: str) -> None:
    if a.ndim != 2:
        raise InputError(f"{name}: codes must be a 2-D (n, bits) array, got shape {a.shape}")
    if a.shape[0] == 0:
        raise InputError(f"{name}: empty code set (0 rows)")
    if a.shape[1] == 0:
        raise InputError(f"{name}: codes have 0 bits")


def prepare_codes(query_codes: Any, db_codes: Any | None) -> Codes:
    """Validate and convert codes; ``db_codes=None`` means the queries are the database."""
    q = as_array(query_codes, "query_codes")
    _check_code_matrix(q, "query_codes")
    same = db_codes is None
    d = q if same else as_array(db_codes, "db_codes")
    if not same:
        _check_code_matrix(d, "db_codes")
        qb, db = code_bits(q), code_bits(d)
        if qb != db:
            raise InputError(f"query_codes have {qb} bits but db_codes have {db} bits")
    if q.dtype == np.uint8 and d.dtype == np.uint8:
        qw = words(q)
        dw = qw if same else words(d)
        return Codes(qw, dw, code_bits(q), packed=True, ternary=False, same=same)
    qs = to_signed(q, "query_codes")
    ds = qs if same else to_signed(d, "db_codes")
    if qs.shape[1] > 2**23:
        raise InputError(f"codes have {qs.shape[1]} bits; at most 2**23 are supported")
    ternary = bool((qs == 0).any() or (not same and (ds == 0).any()))
    return Codes(qs, ds, qs.shape[1], packed=False, ternary=ternary, same=same)


# --------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class Labels:
    """Query and database labels; relevance = sharing at least one label.

    ``kind="multi"``: rows are bit words (uint64) of a multi-hot matrix.
    ``kind="class"``: integer class ids, relevance is equality.
    """

    kind: Literal["multi", "class"]
    query: np.ndarray
    db: np.ndarray

    def relevant_at(self, rows: slice, idx: np.ndarray) -> np.ndarray:
        """bool (r, k): is database item ``idx[i, j]`` relevant to query ``rows[i]``."""
        if self.kind == "class":
            return self.db[idx] == self.query[rows, None]
        q = self.query[rows]
        out = np.zeros(idx.shape, dtype=bool)
        for w in range(q.shape[1]):  # one word at a time keeps memory at O(r·k)
            out |= (self.db[idx, w] & q[:, w, None]) != 0
        return out

    def relevant_all(self, rows: slice) -> np.ndarray:
        """bool (r, n_db) relevance of every database item to the queries ``rows``."""
        if self.kind == "class":
            return self.query[rows, None] == self.db[None, :]
        q = self.query[rows]
        out = np.zeros((q.shape[0], self.db.shape[0]), dtype=bool)
        for w in range(q.shape[1]):
            out |= (q[:, w, None] & self.db[None, :, w]) != 0
        return out


def _label_form(a: np.ndarray, name: str) -> Literal["multi", "class"]:
    if a.ndim == 1:
        if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number):
            raise InputError(f"{name}: a 1-D label vector must hold integer class ids, got dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise InputError(f"{name}: labels contain NaN or inf")
            if (a != np.round(a)).any():
                raise InputError(f"{name}: a 1-D label vector must hold integer class ids, found non-integers")
        if a.size and a.min() < 0:
            raise InputError(f"{name}: class ids must be >= 0, found {a.min()}")
        return "class"
    if a.ndim == 2:
        if a.shape[1] == 0:
            raise InputError(f"{name}: label matrix has 0 columns")
        if a.dtype != np.bool_:
            if not np.issubdtype(a.dtype, np.number):
                raise InputError(f"{name}: labels must be numeric or boolean, got dtype {a.dtype}")
            if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
                raise InputError(f"{name}: labels contain NaN")
            ok = (a == 0) | (a == 1)
            if not ok.all():
                raise InputError(
                    f"{name}: a 2-D label matrix must be multi-hot 0/1, found {a[~ok].flat[0]!r}; "
                    "pass integer class ids as a 1-D vector"
                )
        return "multi"
    raise InputError(f"{name}: labels must be a 1-D class vector or a 2-D multi-hot matrix, got shape {a.shape}")


def _label_words(a: np.ndarray) -> np.ndarray:
    return words(np.packbits(a != 0, axis=1))


def prepare_labels(query_labels: Any, db_labels: Any | None, codes: Codes) -> Labels:
    """Validate labels against each other and against the code rows."""
    return prepare_labels_for(query_labels, db_labels, codes.n_query, codes.n_db, codes.same)


def prepare_labels_for(query_labels: Any, db_labels: Any | None, n_query: int, n_db: int | None,
                       same: bool) -> Labels:
    """Validate labels for ``n_query`` queries against ``n_db`` database rows (None: any count).

    ``same`` says the queries are the database, so ``db_labels`` must be None.
    """
    ql = as_array(query_labels, "query_labels")
    if same:
        if db_labels is not None:
            raise InputError(
                "db_labels given without db_codes: with db_codes=None the queries are the database "
                "and query_labels serve both sides"
            )
        dl = ql
    else:
        if db_labels is None:
            raise InputError("db_labels missing: db_codes were given, so the database needs its own labels")
        dl = as_array(db_labels, "db_labels")
    qk = _label_form(ql, "query_labels")
    dk = qk if dl is ql else _label_form(dl, "db_labels")
    if qk != dk:
        raise InputError(
            f"query_labels are {'a class vector' if qk == 'class' else 'a multi-hot matrix'} but db_labels are "
            f"{'a class vector' if dk == 'class' else 'a multi-hot matrix'}; use the same form on both sides"
        )
    if ql.shape[0] != n_query:
        raise InputError(f"query_labels have {ql.shape[0]} rows but there are {n_query} queries")
    if n_db is not None and dl.shape[0] != n_db:
        raise InputError(f"db_labels have {dl.shape[0]} rows but there are {n_db} database items")
    if qk == "multi" and ql.shape[1] != dl.shape[1]:
        raise InputError(f"query_labels have {ql.shape[1]} label columns but db_labels have {dl.shape[1]}")
    if qk == "class":
        qv = ql.astype(np.int64)
        return Labels("class", qv, qv if dl is ql else dl.astype(np.int64))
    qw = _label_words(ql)
    return Labels("multi", qw, qw if dl is ql else _label_words(dl))


# --------------------------------------------------------------------------- cut-offs


def check_ks(ks: Any, n_db: int, name: str = "ks") -> list[int]:
    """Cut-offs as a de-duplicated list of ints in [1, n_db] (order kept)."""
    if isinstance(ks, (int, np.integer)):
        ks = [ks]
    try:
        vals = list(ks)
    except TypeError:
        raise InputError(f"{name}: expected an int or a sequence of ints, got {type(ks).__name__}") from None
    if not vals:
        raise InputError(f"{name}: no cut-off given")
    out: list[int] = []
    for k in vals:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InputError(f"{name}: cut-offs must be integers, got {k!r}")
        k = int(k)
        if k < 1:
            raise InputError(f"{name}: cut-offs must be >= 1, got {k}")
        if k > n_db:
            raise InputError(f"{name}: cut-off {k} is larger than the database ({n_db} items)")
        if k not in out:
            out.append(k)
    return out
