"""Inverted-file Hamming index (faiss ``IndexBinaryIVF``): k-means lists, scan ``nprobe`` of them.

For large k-NN over clustered (learned) codes. It must be trained before use. faiss IVF stores the
ids it is given and does not renumber rows on removal, so this engine hands faiss our ids directly
(``labels_are_ids``) and ties among returned results are ordered by id.

``nprobe`` per call: k-NN passes it as ``faiss.SearchParametersIVF``. faiss's binary IVF range
search only reads the shared ``nprobe`` member, so a range search with another ``nprobe`` probes
the lists here (coarse assignment by the quantizer, then exact Hamming over the probed lists),
which gives the same hits without touching shared state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faiss
import numpy as np

from bitseek.codes import hamming
from bitseek.errors import ConfigError, InputError
from bitseek.index.faiss.binary import BinaryIndex
from bitseek.index.faiss.validate import PayloadInfo, inspect_binary

__all__ = ["BinaryIVFIndex"]


class BinaryIVFIndex(BinaryIndex):
    """``ivf{nlist}`` with option ``nprobe`` (lists scanned per query, default 1 as in faiss)."""

    engine = "ivf"
    exact = False
    labels_are_ids = True
    name_patterns = (r"ivf(?P<nlist>[0-9]+)",)
    options_spec = {"nprobe": (1, 1)}
    search_params = {"nprobe": 1}
    faiss_type = faiss.IndexBinaryIVF

    def __init__(
        self, bits: int, params: Mapping[str, Any] | None = None, options: Mapping[str, int] | None = None, **kw: Any
    ) -> None:
        nlist = int((params or {}).get("nlist", 0))
        if nlist < 1:
            raise ConfigError(f"ivf index: nlist must be >= 1, got {nlist}")
        super().__init__(bits, {"nlist": nlist}, options, **kw)

    @property
    def nlist(self) -> int:
        return int(self.params["nlist"])

    def _build(self) -> None:
        # the Python wrapper does not keep the quantizer alive for us
        self._quantizer = faiss.IndexBinaryFlat(self.bits)
        self._faiss = faiss.IndexBinaryIVF(self._quantizer, self.bits, self.nlist)

    def _name(self) -> str:
        return f"ivf{self.nlist}"

    def _apply_options(self) -> None:
        self._faiss.nprobe = min(self._options["nprobe"], self.nlist)

    @property
    def is_trained(self) -> bool:
        return bool(self._faiss.is_trained)

    def _untrained_message(self) -> str:
        return f"{self.spec} index is not trained: call index.train(codes) with at least {self.nlist} codes first"

    def _train(self, x: np.ndarray) -> None:
        if self._faiss.ntotal > 0:
            raise InputError(
                f"train(): the {self.spec} index already holds {self._faiss.ntotal} codes; retraining would "
                "orphan them (build a new index)"
            )
        if x.shape[0] < self.nlist:
            raise InputError(f"train(): {x.shape[0]} training codes for {self.nlist} lists; need at least {self.nlist}")
        if self._faiss.is_trained:
            self._build()
            self._apply_options()
        self._faiss.train(x)

    def _add_rows(self, x: np.ndarray, ids: np.ndarray) -> None:
        self._faiss.add_with_ids(x, ids)

    def _remove_rows(self, slots: np.ndarray, ids: np.ndarray) -> None:
        removed = self._faiss.remove_ids(faiss.IDSelectorBatch(ids))
        if removed != len(ids):
            raise RuntimeError(f"faiss removed {removed} rows, expected {len(ids)}")
        self._idmap.delete(slots)

    def _nprobe(self, opts: dict[str, int]) -> int:
        return min(opts["nprobe"], self.nlist)

    def _knn(self, q: np.ndarray, k: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        params = faiss.SearchParametersIVF()
        params.nprobe = self._nprobe(opts)
        return self._faiss.search(q, k, params=params)

    def _range(self, q: np.ndarray, radius: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nprobe = self._nprobe(opts)
        if nprobe == int(self._faiss.nprobe):
            return super()._range(q, radius, opts)
        return self._range_probed(q, radius, nprobe)

    def _range_probed(self, q: np.ndarray, radius: int, nprobe: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Range search over ``nprobe`` lists per query, one pass per probed list."""
        _, assign = self._faiss.quantizer.search(q, nprobe)
        query = np.repeat(np.arange(q.shape[0], dtype=np.int64), nprobe)
        lists = assign.reshape(-1)
        ok = lists >= 0
        query, lists = query[ok], lists[ok]
        order = np.argsort(lists, kind="stable")
        query, lists = query[order], lists[order]
        starts = np.flatnonzero(np.r_[True, lists[1:] != lists[:-1]]) if lists.size else np.empty(0, np.int64)
        ends = np.r_[starts[1:], lists.size]
        invlists, cs = self._faiss.invlists, int(self._faiss.code_size)
        got_q, got_d, got_i = [np.empty(0, np.int64)], [np.empty(0, np.int32)], [np.empty(0, np.int64)]
        for a, b in zip(starts.tolist(), ends.tolist()):
            lst = int(lists[a])
            n = int(invlists.list_size(lst))
            if n == 0:
                continue
            codes = faiss.rev_swig_ptr(invlists.get_codes(lst), n * cs).reshape(n, cs)
            ids = faiss.rev_swig_ptr(invlists.get_ids(lst), n)
            qs = query[a:b]
            dist = hamming(q[qs], codes)
            r, c = np.nonzero(dist <= radius)
            got_q.append(qs[r])
            got_d.append(dist[r, c].astype(np.int32))
            got_i.append(np.asarray(ids[c], dtype=np.int64))
        qi = np.concatenate(got_q)
        by_query = np.argsort(qi, kind="stable")
        lims = np.zeros(q.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(qi, minlength=q.shape[0]), out=lims[1:])
        return lims, np.concatenate(got_d)[by_query], np.concatenate(got_i)[by_query]

    @classmethod
    def _inspect(cls, buf: np.ndarray) -> PayloadInfo:
        return cls._check_payload(inspect_binary(buf))

    @classmethod
    def _check_payload(cls, info: PayloadInfo) -> PayloadInfo:
        if info.fourcc != "IBwF" or info.children["quantizer"].fourcc != "IBxF":
            raise InputError(f"payload is a {info.fourcc} index, an ivf index holds IBwF over an IBxF quantizer")
        return info

    @classmethod
    def _header_params(cls, params: dict[str, Any], info: PayloadInfo) -> dict[str, Any]:
        out = super()._header_params(params, info)
        if out.get("nlist") != info.fields["nlist"]:
            raise InputError(f"header says nlist={out.get('nlist')}, the payload holds {info.fields['nlist']} lists")
        return out

    def _after_restore(self) -> None:
        self._quantizer = None  # the deserialised index owns its quantizer
