"""CVNet's re-ranker as the engine trains it: frozen backbone, 2-way softmax, cross-entropy on pairs.

The paper (the authors released no training code) trains only the re-ranker on top of the frozen
backbone shared with the global model: the per-scale 3x3 projections, the 4D-conv blocks and the MLP.
A batch holds pairs (:mod:`bitseek.data.rerank_pairs`) as images (the backbone runs here, without
gradients) or as the backbone's stored stage-3 maps; the Hide-and-Seek cell masks of each side zero
cells of its map; the loss is the cross-entropy of the re-ranker's two logits against the pair's
target (1 = same landmark), i.e. the binary cross-entropy of the softmax's "same" probability that
retrieval uses as the score. BatchNorm statistics of the backbone stay as they are (eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from bitseek.data.rerank_pairs import apply_cell_mask
from bitseek.errors import InputError
from bitseek.models.base import Embedder, TrainableModel
from bitseek.models.cvnet.model import CVNet, CVNetConfig
from bitseek.registry import register_model

__all__ = ["CVNetRerank", "CVNetRerankConfig", "plain_cvnet_config"]


@dataclass
class CVNetRerankConfig(CVNetConfig):
    """The CVNet network's fields plus where its trained global model comes from."""

    name: str = "cvnet-rerank"
    # the CVNet weights to start from (global model + backbone): a model folder (``train_global``'s
    # <run>/cvnet) or a weights file in CVNet's naming; "" = only the config's own backbone init
    init: str = ""


def plain_cvnet_config(cfg: CVNetConfig) -> CVNetConfig:
    """The plain CVNet config inside a training config (what the exported network carries)."""
    return CVNetConfig(**{f.name: getattr(cfg, f.name) for f in fields(CVNetConfig) if f.name != "name"})


class CVNetRerank(TrainableModel, Embedder):
    """A CVNet whose re-rank head alone trains."""

    def __init__(self, cfg: CVNetRerankConfig, net: CVNet | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = net if net is not None else CVNet(plain_cvnet_config(cfg))
        for p in self.net.parameters():
            p.requires_grad_(False)
        for p in self.net.rerank.parameters():
            p.requires_grad_(True)
        self.dim = self.embed_dim = self.net.dim

    # ------------------------------------------------------------------ initialisation weights
    def pretrained_sources(self) -> dict[str, str]:
        if self.cfg.init:
            p = Path(self.cfg.init)
            return {"net": str(p / "model.safetensors" if p.is_dir() else p)}
        own = getattr(self.net, "pretrained_sources", None)
        return own() if callable(own) else {}

    def load_pretrained(self, part: str, state_dict: dict[str, Tensor], source: str) -> None:
        if part == "net":
            from bitseek.weights import load_state_into

            load_state_into(self.net, state_dict, source)
        else:
            self.net.load_pretrained(part, state_dict, source)  # type: ignore[operator]

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "CVNetRerank":
        super().train(mode)
        for name, m in self.net.named_children():
            if name != "rerank":
                m.eval()  # frozen: BatchNorm keeps its statistics
        return self

    # ------------------------------------------------------------------ training
    def _side(self, batch: dict[str, Tensor], side: str) -> Tensor:
        dtype = self.net.rerank.scale_convs[0].weight.dtype
        if f"{side}_map" in batch:
            f = batch[f"{side}_map"].to(dtype)
        elif f"{side}_image" in batch:
            with torch.no_grad():
                f = self.net.rerank_features(batch[f"{side}_image"].to(dtype))
        else:
            raise InputError(f"cvnet-rerank training needs batch key '{side}_map' or '{side}_image', got {sorted(batch)}")
        mask = batch.get(f"{side}_mask")
        return apply_cell_mask(f, mask) if mask is not None else f

    def training_step(self, batch: dict[str, Tensor], phase: str = "train") -> dict[str, Tensor]:
        if "target" not in batch:
            raise InputError(f"cvnet-rerank training needs batch key 'target', got {sorted(batch)}")
        target = batch["target"].long()
        logits = self.net.rerank.logits(self._side(batch, "query"), self._side(batch, "key"))
        loss = F.cross_entropy(logits.float(), target)
        with torch.no_grad():
            out = {"accuracy": (logits.argmax(1) == target).float().mean()}
            hard = batch.get("hard")
            if hard is not None:
                out["hard_share"] = hard.float().sum() / (target == 0).sum().clamp(min=1)
        return {"loss": loss, **out}

    # ------------------------------------------------------------------ retrieval
    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.net.embed(batch)


@register_model("cvnet-rerank", CVNetRerankConfig)
def build_cvnet_rerank(cfg: CVNetRerankConfig) -> CVNetRerank:
    """CVNet with its re-rank head trainable and everything else frozen."""
    return CVNetRerank(cfg)
