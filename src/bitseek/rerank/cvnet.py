"""CVNet re-ranking over cached database features: pairs batched, the query side computed once.

The official test recomputes the backbone for every (query, candidate) pair. Here each database
image's features come from a cache, either

* its convolved pyramid (:class:`~bitseek.models.cvnet.rerank.Pyramid`: the 3 scales' 256-channel
  3x3-conv outputs, fp16; what ``bitseek retrieval test`` caches), so only the correlation and the
  4D convs run per pair, or
* its ``CVNet.rerank_features`` stage-3 map (1024 channels, fp16), projected here per pair;

and each query costs

* its own lifted pyramid (resize + 3x3 conv per scale, normalised, resized to full size) once, and
* per batch of candidates whose maps share a shape: their lifted pyramids, the two slabs of the
  9 cross-scale correlations that the first (stride-2) 4D conv reads, each one matrix product
  against the broadcast query (no 4D resize: :func:`bitseek.models.cvnet.rerank.lift_pyramid` says
  why that is the same number), the 4D-conv learner -- a single forward for the whole batch.

Candidates of different map sizes (portrait/landscape photos) go into different batches, since
the correlation tensor's shape is the map shape. A batch is also capped by ``memory_budget`` (bytes
of one batch's correlation slabs; by default 1 GiB on a GPU, 128 MiB on a CPU, where a pair of
1024-px maps is fastest alone). Scores stay on the model's device
until the query is done: one host copy per query, none per pair.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bitseek.errors import ConfigError, InputError
from bitseek.models.cvnet.rerank import Pyramid
from bitseek.registry import RERANKERS
from bitseek.rerank.base import MapSource, RerankInputs, ScoringReranker
from bitseek.rerank.fusion import FUSION_WEIGHT

__all__ = ["CVNetReranker", "build_cvnet_reranker", "map_tensor"]

DEFAULT_BATCH = 8
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of correlation slabs (+ first conv outputs) per batch, on a GPU
# On a CPU a batch larger than the caches only adds memory traffic: at 1024 px one pair is ~110 MB
# and scores fastest alone (benchmarks/bench_rerank.py), while small maps still batch.
CPU_MEMORY_BUDGET = 1 << 27


def map_tensor(m: Any, where: str) -> Tensor:
    """One cached map as a (1, C, H, W) tensor (numpy, memmap or torch; (C, H, W) or (1, C, H, W))."""
    t = m if isinstance(m, Tensor) else torch.from_numpy(np.array(m, copy=True))
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4 or t.shape[0] != 1 or not t.is_floating_point():
        raise InputError(f"{where}: a re-rank map must be a float (C, H, W) array, got {t.dtype} {tuple(t.shape)}")
    return t


class CVNetReranker(ScoringReranker):
    """Scores (query, candidate) pairs with a CVNet model from cached query and database maps."""

    name = "cvnet"

    def __init__(self, model: Any, query_maps: MapSource, db_maps: MapSource, *, batch_size: int = DEFAULT_BATCH,
                 memory_budget: int | None = None, weight: float = FUSION_WEIGHT) -> None:
        if not hasattr(model, "rerank") or not hasattr(model.rerank, "score_lifted"):
            raise ConfigError(f"re-ranker 'cvnet' needs a CVNet model, got {type(model).__name__}")
        p = next(model.rerank.parameters())
        self.device, self.dtype = p.device, p.dtype
        if memory_budget is None:
            memory_budget = CPU_MEMORY_BUDGET if self.device.type == "cpu" else DEFAULT_MEMORY_BUDGET
        if batch_size < 1 or memory_budget < 1:
            raise ConfigError(f"cvnet re-ranker: batch_size and memory_budget must be positive, got "
                              f"{batch_size} and {memory_budget}")
        self.model = model
        self.query_maps = query_maps
        self.db_maps = db_maps
        self.batch_size = int(batch_size)
        self.memory_budget = int(memory_budget)
        self.weight = float(weight)

    def _load(self, source: MapSource, i: int, where: str) -> Tensor | Pyramid:
        if not 0 <= int(i) < len(source):
            raise InputError(f"{where}: index {int(i)} out of range for {len(source)} maps")
        m = source[int(i)]
        if isinstance(m, Pyramid):
            return m
        t = map_tensor(m, f"{where}[{int(i)}]")
        cin = self.model.rerank.scale_convs[0].in_channels
        if t.shape[1] != cin:
            raise InputError(f"{where}[{int(i)}]: {t.shape[1]} channels, the re-ranker takes {cin}")
        return t

    def _lift(self, items: list[Any], where: str) -> Tensor:
        """One batch's lifted pyramids (all of one map size): cached levels lifted, raw maps projected."""
        rr = self.model.rerank
        if all(isinstance(p, Pyramid) for p in items):
            levels = [torch.stack([torch.as_tensor(p.levels[s]) for p in items])  # type: ignore[union-attr]
                      for s in range(len(items[0].levels))]
            return rr.lift_levels(levels, items[0].size, self.device)
        if any(isinstance(t, Pyramid) for t in items):
            raise InputError(f"{where}: a map source mixes pyramids and stage-3 maps")
        return rr.lift(torch.cat(items).to(self.device, self.dtype, non_blocking=True))  # type: ignore[arg-type]

    @staticmethod
    def _size(m: Tensor | Pyramid) -> tuple[int, int]:
        return tuple(m.size) if isinstance(m, Pyramid) else tuple(m.shape[-2:])  # type: ignore[return-value]

    @torch.inference_mode()
    def score_tensor(self, query: int, candidates: np.ndarray) -> Tensor:
        """(K,) match probabilities on the model's device (no host sync)."""
        fq = self._load(self.query_maps, query, "query_maps")
        qt = self._lift([fq], f"query_maps[{int(query)}]")
        hq, wq = self._size(fq)
        groups: dict[tuple[int, ...], list[tuple[int, Tensor | Pyramid]]] = defaultdict(list)
        for j, c in enumerate(np.asarray(candidates, dtype=np.int64)):
            fk = self._load(self.db_maps, c, "db_maps")
            groups[self._size(fk)].append((j, fk))
        out = torch.empty(len(candidates), device=self.device, dtype=self.dtype)
        s2 = len(self.model.rerank.scales) ** 2
        conv = self.model.rerank.learner.blocks[0][0].conv
        sq, sk = conv.stride
        o1 = conv.key_conv.out_channels
        for (hk, wk), items in groups.items():
            # the two correlation slabs, the first conv's outputs and their sum (bytes per pair)
            slabs = s2 * (hq * wq * -(-hk // sk) * -(-wk // sk) + -(-hq // sq) * -(-wq // sq) * hk * wk)
            first = 3 * o1 * -(-hq // sq) * -(-wq // sq) * -(-hk // sk) * -(-wk // sk)
            per_pair = (slabs + first) * qt.element_size()
            step = max(1, min(self.batch_size, self.memory_budget // max(per_pair, 1)))
            for s in range(0, len(items), step):
                chunk = items[s: s + step]
                kt = self._lift([t for _, t in chunk], f"db_maps[{int(candidates[chunk[0][0]])}]")
                scores = self.model.rerank.score_lifted(qt, kt, (hq, wq, hk, wk))
                idx = torch.as_tensor([j for j, _ in chunk], device=self.device)
                out[idx] = scores
        return out

    def score(self, query: int, candidates: np.ndarray) -> np.ndarray:
        return self.score_tensor(query, candidates).double().cpu().numpy()


@RERANKERS.register("cvnet")
def build_cvnet_reranker(inputs: RerankInputs, **options: Any) -> CVNetReranker:
    """CVNet correlation verification over cached stage-3 maps (sim + 0.5 x match probability)."""
    model, qm, dm = inputs.need("cvnet", "model", "query_maps", "db_maps")
    return CVNetReranker(model, qm, dm, **options)
