"""CVNet's global model as the engine trains it: CurricularFace + momentum contrast, weighted sum.

The authors released no training code; the paper trains the global network (backbone, GeM with a
learnable p, whitening FC) on GLDv2-clean with a CurricularFace margin loss plus a momentum-contrastive
loss whose momentum encoder is an EMA of the online network and whose FIFO queue holds momentum
descriptors with their landmark ids (positives = same landmark). Per step:

1. the momentum encoder moves towards the online network (``momentum``; MoCo's order: before the keys);
2. online descriptors ``q`` -> :class:`~bitseek.losses.curricularface.CurricularFace` loss;
3. momentum descriptors of the same images (no gradient) are gathered over ranks -> the contrastive
   loss against them and the queue (:mod:`bitseek.losses.moco`) -> enqueued;
4. ``loss = curricularface + contrastive_weight * contrastive``.

The re-rank head is not touched here (its parameters are frozen while the global model trains). The
queue, the curriculum ``t`` and the momentum encoder are buffers/frozen parameters of this module, so a
checkpoint resumes the run exactly. :attr:`net` is the plain :class:`~bitseek.models.cvnet.CVNet`
that retrieval uses (``bitseek.train.cvnet.train_global`` exports it on its own).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bitseek.errors import ConfigError, InputError
from bitseek.losses.curricularface import CurricularFace
from bitseek.losses.moco import LabelledQueue, ema_update, gather_keys, momentum_contrastive_loss
from bitseek.models.base import Embedder, TrainableModel
from bitseek.models.cvnet.model import CVNet, CVNetConfig
from bitseek.models.spec import AUTO, InputField, require_resolved
from bitseek.registry import register_model

__all__ = ["CVNetGlobal", "CVNetGlobalConfig", "cvnet_config_of"]


@dataclass
class CVNetGlobalConfig(CVNetConfig):
    """The CVNet network's fields plus the global-training losses."""

    name: str = "cvnet-global"
    num_classes: int = AUTO  # landmarks in the training set (auto: from the data)
    margin: float = 0.5  # CurricularFace m
    scale: float = 64.0  # CurricularFace s
    t_alpha: float = 0.01  # EMA rate of the curriculum parameter t
    contrastive_weight: float = 1.0  # weight of the momentum-contrastive loss (0 = CurricularFace only)
    temperature: float = 0.1
    queue_size: int = 4096
    momentum: float = 0.999  # momentum encoder EMA
    freeze_bn: bool = False  # keep the backbone's BatchNorm statistics fixed (small CPU batches)
    freeze_backbone: bool = False  # train only GeM's p and the whitening FC (tiny training sets)
    head_lr_mult: float = 1.0  # learning rate of the CurricularFace class weights / that of the network

    INPUT_SPEC: ClassVar[dict[str, InputField]] = {"num_classes": InputField("num_classes")}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes != AUTO and self.num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2 (landmarks in the training set), got {self.num_classes}")
        if self.contrastive_weight < 0 or self.temperature <= 0 or self.queue_size < 1:
            raise ConfigError(f"model.contrastive_weight >= 0, model.temperature > 0 and model.queue_size >= 1 needed; "
                              f"got {self.contrastive_weight}, {self.temperature}, {self.queue_size}")
        if self.head_lr_mult <= 0:
            raise ConfigError(f"model.head_lr_mult must be > 0, got {self.head_lr_mult}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"model.momentum must be in [0, 1), got {self.momentum}")


def cvnet_config_of(cfg: CVNetGlobalConfig) -> CVNetConfig:
    """The plain CVNet config inside a global-training config (what the exported network carries)."""
    return CVNetConfig(**{f.name: getattr(cfg, f.name) for f in fields(CVNetConfig) if f.name != "name"})


class CVNetGlobal(TrainableModel, Embedder):
    """Online CVNet + CurricularFace head + momentum encoder + labelled queue."""

    def __init__(self, cfg: CVNetGlobalConfig) -> None:
        super().__init__()
        require_resolved(cfg, "cvnet-global")
        self.cfg = cfg
        self.net = CVNet(cvnet_config_of(cfg))
        for p in self.net.rerank.parameters():
            p.requires_grad_(False)
        if cfg.freeze_backbone:
            for p in self.net.backbone.parameters():
                p.requires_grad_(False)
        self.dim = self.embed_dim = cfg.reduction_dim
        self.head = CurricularFace(cfg.reduction_dim, cfg.num_classes, cfg.margin, cfg.scale, cfg.t_alpha)
        self.key_net = self._momentum_copy()
        self.queue = LabelledQueue(cfg.queue_size, cfg.reduction_dim)

    def _momentum_copy(self) -> CVNet:
        key = copy.deepcopy(self.net)
        del key.rerank  # the keys are global descriptors only
        for p in key.parameters():
            p.requires_grad_(False)
        return key.eval()

    # ------------------------------------------------------------------ initialisation weights
    def pretrained_sources(self) -> dict[str, str]:
        return self.net.pretrained_sources()

    def load_pretrained(self, part: str, state_dict: dict[str, Tensor], source: str) -> None:
        """Load into the online network and start the momentum encoder from the same weights."""
        self.net.load_pretrained(part, state_dict, source)
        ema_update(self.key_net, self.net, 0.0)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "CVNetGlobal":
        super().train(mode)
        self.key_net.eval()
        if mode and self.cfg.freeze_bn:
            for m in self.net.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def param_groups(self) -> list[dict[str, Any]]:
        """The network, and the class weights at ``head_lr_mult`` times its rate (the schedule keeps the ratio)."""
        net = [p for p in self.net.parameters() if p.requires_grad]
        return [{"params": net}, {"params": list(self.head.parameters()), "lr_mult": self.cfg.head_lr_mult}]

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor], phase: str = "train") -> dict[str, Tensor]:
        if "image" not in batch or "label" not in batch:
            raise InputError(f"cvnet-global training needs batch keys 'image' and 'label', got {sorted(batch)}")
        x, y = batch["image"], batch["label"]
        y = (y.argmax(dim=1) if y.dim() == 2 else y).long()  # class ids, or one-hot rows
        x = x.to(self.net.whiten.weight.dtype)  # float32 images into a float64 model (tests) or as they are
        cfg = self.cfg
        q = self.net.global_descriptor(x)
        cf, _ = self.head(q, y)
        out = {"curricularface": cf}
        loss = cf
        if cfg.contrastive_weight > 0:
            with torch.no_grad():
                ema_update(self.key_net, self.net, cfg.momentum)
                keys, key_labels = gather_keys(self.key_net.global_descriptor(x), y)
            con = momentum_contrastive_loss(q, y, keys, key_labels, self.queue, cfg.temperature)
            self.queue.enqueue(keys, key_labels)
            loss = loss + cfg.contrastive_weight * con
            out["contrastive"] = con
        out["t"] = self.head.t.detach().reshape(())
        return {"loss": loss, **out}

    # ------------------------------------------------------------------ retrieval
    def exports(self) -> dict[str, tuple[nn.Module, CVNetConfig]]:
        """What retrieval and the re-ranker's training load: the plain CVNet (saved as ``<run>/cvnet``)."""
        return {"cvnet": (self.net, self.net.cfg)}

    @torch.no_grad()
    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        return self.net.embed(batch)


@register_model("cvnet-global", CVNetGlobalConfig)
def build_cvnet_global(cfg: CVNetGlobalConfig) -> CVNetGlobal:
    """CVNet's global model with its training losses (CurricularFace + momentum contrast)."""
    return CVNetGlobal(cfg)
