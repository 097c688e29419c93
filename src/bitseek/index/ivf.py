"""Inverted-file Hamming index (faiss ``IndexBinaryIVF``): k-means lists, scan ``nprobe`` of them.

For large k-NN over clustered (learned) codes. It must be trained before use. faiss IVF stores the
ids it is given and does not renumber rows on removal, so this backend hands faiss our ids directly
(``labels_are_ids``) and ties among returned results are ordered by id.
"""

from __future__ import annotations

from typing import Mapping

import faiss
import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.index.binary import BinaryIndex

__all__ = ["BinaryIVFIndex"]


class BinaryIVFIndex(BinaryIndex):
    """``ivf{nlist}`` with option ``nprobe`` (lists scanned per query, default 1 as in faiss)."""

    backend = "ivf"
    exact = False
    labels_are_ids = True
    name_patterns = (r"ivf(?P<nlist>[0-9]+)",)
    options_spec = {"nprobe": (1, 1)}
    faiss_type = faiss.IndexBinaryIVF

    def __init__(
        self, bits: int, params: Mapping[str, int] | None = None, options: Mapping[str, int] | None = None
    ) -> None:
        nlist = int((params or {}).get("nlist", 0))
        if nlist < 1:
            raise ConfigError(f"ivf index: nlist must be >= 1, got {nlist}")
        super().__init__(bits, {"nlist": nlist}, options)

    @property
    def nlist(self) -> int:
        return self.params["nlist"]

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

    def _after_restore(self) -> None:
        self._quantizer = None  # the deserialised index owns its quantizer
