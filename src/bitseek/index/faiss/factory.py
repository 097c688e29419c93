"""``faiss:<factory>``: any binary structure faiss's ``index_binary_factory`` builds, behind the
same contract (ids, removal, padding, tie order, per-call parameters, checked files).

For structures the named engines do not cover, e.g. ``faiss:BIVF1024_HNSW32`` (an IVF whose coarse
quantizer is an HNSW graph). Rows keep their insertion slot as faiss label; removal tombstones the
slot and, once removed rows outnumber live ones, rebuilds from the codes faiss reconstructs. The
factories accepted are those whose results faiss can reconstruct and clone: ``BFlat``, ``BIVF…``
and ``BHNSW…`` (``BHash`` is covered by the ``multihash`` engine).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import faiss
import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.index.faiss.binary import BinaryIndex
from bitseek.index.faiss.validate import PayloadInfo, inspect_binary

__all__ = ["FaissFactoryIndex"]

_FORMS = {"BFlat": "flat", "BIVF": "ivf", "BHNSW": "hnsw"}


def _kind(factory: str) -> str:
    for prefix, kind in _FORMS.items():
        if factory == prefix or (prefix != "BFlat" and re.fullmatch(rf"{prefix}[0-9]+(_\w+)?", factory)):
            return kind
    raise ConfigError(
        f"faiss:{factory}: supported binary factories are BFlat, BIVF<nlist>[_<quantizer>] and BHNSW<M> "
        "(for BHash use the mih<nhash> engine)"
    )


class FaissFactoryIndex(BinaryIndex):
    """A faiss binary index made by ``faiss.index_binary_factory(bits, factory)``."""

    engine = "faiss"
    sort_ties = True
    tombstones = True
    name_patterns = ()  # reached through the "faiss:" prefix of the spec grammar

    def __init__(
        self, bits: int, params: Mapping[str, Any] | None = None, options: Mapping[str, int] | None = None, **kw: Any
    ) -> None:
        factory = str((params or {}).get("factory", ""))
        self.kind = _kind(factory)
        # per instance: which options exist depends on the structure the factory string names
        self.options_spec = self.options_for({"factory": factory})
        self.search_params = {k: lo for k, (_, lo) in self.options_spec.items()}
        self.exact = self.kind == "flat"
        super().__init__(bits, {"factory": factory}, options, **kw)

    @classmethod
    def options_for(cls, params: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
        """Options of the structure ``params["factory"]`` names (IVF: nprobe, HNSW: ef_search)."""
        kind = _kind(str(params.get("factory", "")))
        return {"ivf": {"nprobe": (1, 1)}, "hnsw": {"ef_search": (16, 1)}}.get(kind, {})

    @property
    def factory(self) -> str:
        return str(self.params["factory"])

    def _build(self) -> None:
        try:
            self._faiss = faiss.index_binary_factory(self.bits, self.factory)
        except RuntimeError as e:
            raise ConfigError(f"faiss:{self.factory}: faiss cannot build it ({str(e).splitlines()[-1]})") from None

    def _name(self) -> str:
        return f"faiss:{self.factory}"

    @property
    def is_trained(self) -> bool:
        return bool(self._faiss.is_trained)

    def _apply_options(self) -> None:
        if self.kind == "ivf":
            self._faiss.nprobe = min(self._options["nprobe"], int(self._faiss.nlist))
        elif self.kind == "hnsw":
            self._faiss.hnsw.efSearch = self._options["ef_search"]

    def _train(self, x: np.ndarray) -> None:
        if self._faiss.ntotal > 0:
            raise InputError(f"train(): the {self.spec} index already holds codes; build a new index to retrain")
        self._faiss.train(x)

    def _params(self, k: int, opts: dict[str, int]) -> Any:
        if self.kind == "ivf":
            p = faiss.SearchParametersIVF()
            p.nprobe = opts["nprobe"]
            return p
        if self.kind == "hnsw":
            p = faiss.SearchParametersHNSW()
            p.efSearch = max(opts["ef_search"], k)
            return p
        return None

    def _knn(self, q: np.ndarray, k: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        return self._faiss.search(q, k, params=self._params(k, opts))

    def _range(self, q: np.ndarray, radius: int, opts: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.kind == "hnsw":
            raise InputError(f"range_search(): faiss:{self.factory} has no range search (use the hnsw<M> engine)")
        if self.kind == "ivf" and opts["nprobe"] != self._options["nprobe"]:
            raise InputError(
                f"range_search(): faiss:{self.factory} range search uses the index's nprobe="
                f"{self._options['nprobe']}; per-call nprobe needs the ivf<nlist> engine"
            )
        return super()._range(q, radius, opts)

    def _remove_rows(self, slots: np.ndarray, ids: np.ndarray) -> None:
        self._idmap.kill(slots)
        if self._idmap.n_dead > self._idmap.n_alive:
            self.compact()

    def compact(self) -> None:
        """Rebuild from the live rows (reconstructed by faiss, order kept), keeping any training."""
        with self._lock.write():
            if self._idmap.n_dead == 0:
                return
            old = self._faiss
            if self.kind == "ivf":
                old.make_direct_map(True)
            live = old.reconstruct_n(0, int(old.ntotal))[self._idmap.slot_ids >= 0]
            new = faiss.clone_binary_index(old)
            new.reset()
            if live.shape[0]:
                new.add(np.ascontiguousarray(live))
            if self.kind == "ivf":
                old.make_direct_map(False)
                new.make_direct_map(False)
            self._faiss = new
            self._apply_options()
            self._idmap.compact()

    @classmethod
    def _inspect(cls, buf: np.ndarray) -> PayloadInfo:
        info = inspect_binary(buf)
        if info.fourcc not in ("IBxF", "IBwF", "IBHf"):
            raise InputError(f"payload is a {info.fourcc} index, which the faiss engine does not hold")
        return info

    @classmethod
    def _header_params(cls, params: dict[str, Any], info: PayloadInfo) -> dict[str, Any]:
        factory = str(params.get("factory", ""))
        want = {"flat": "IBxF", "ivf": "IBwF", "hnsw": "IBHf"}[_kind(factory)]
        if info.fourcc != want:
            raise InputError(f"header says faiss:{factory}, the payload is a {info.fourcc} index")
        return {"factory": factory}

    def _restore_faiss(self, buf: np.ndarray, info: PayloadInfo) -> None:
        idx = faiss.deserialize_index_binary(np.ascontiguousarray(buf))
        if int(idx.d) != self.bits:
            raise InputError(f"payload holds {idx.d}-bit codes, the header says {self.bits}")
        self._faiss = idx
