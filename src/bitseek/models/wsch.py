"""WSCH: wide-shallow masked autoencoder for self-supervised video hashing, with cyclic multi-task learning.

Architecture (reference: ``model.py`` of github.com/anon271/WSCH):

* encoder, on the visible frames only and without any positional encoding:
  LayerNorm(D) -> Linear D->H (no bias) -> one Mamba-2 style block (SSD, width 2H) -> one pre-norm
  4-head attention block (no q/k/v bias), both residual;
* hash layer per frame: Linear H->bits, LayerNorm, straight-through hard-sigmoid/round binariser;
  the video code is the mean of the ±1 frame codes, L2-normalised (training) or its sign (retrieval);
* decoder, in code space: the visible frame codes plus one learned mask token per masked frame ->
  Linear bits->H' -> one pre-norm 4-head attention block -> Linear H'->D for the masked slots.

Training (the reference ``pretrain.py`` then ``train.py``, here one run of the shared engine):

* epochs ``[0, pretrain_epochs)``: phase ``"recon"`` with mask ratio ``p1`` (3 visible frames of 25),
  loss = cosine reconstruction of the masked frames of two complementary views;
* every later epoch: ``before_epoch`` encodes the whole training set under two ``p1`` views and
  re-clusters the signs of the 2N codes with k-means (warm-started from the previous centres,
  centres = sign), then phase ``"cluster"`` (reconstruction + a * cluster loss) and phase
  ``"contrastive"`` (reconstruction + b * DCL), both with mask ratio ``p2``.

The phase depends only on the epoch index and the centres are a buffer, so checkpoints carry them
and a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bitseek.cluster import kmeans
from bitseek.collective import is_distributed, rank, shared_generator
from bitseek.errors import ConfigError, FileFormatError, InputError
from bitseek.losses.cluster import cluster_assignment_loss
from bitseek.losses.dcl import dcl_loss
from bitseek.losses.distributed import gather_pairs
from bitseek.models.base import EpochContext, HashModel
from bitseek.models.layers.binarize import binarize_ste
from bitseek.models.layers.ssd import Mamba2Block
from bitseek.models.layers.transformer import Attention
from bitseek.models.spec import AUTO, InputField, require_resolved
from bitseek.models.masking import FrameMask, complementary_masks, gather_frames, num_visible
from bitseek.registry import CONVERTERS, register_model

__all__ = ["WSCHConfig", "WSCH", "build_wsch", "cosine_reconstruction", "PHASES", "convert_official",
           "config_from_official"]

PHASES = ("recon", "cluster", "contrastive")


@dataclass
class WSCHConfig:
    """Hyper-parameters; defaults are the reference ``run.py`` values (ActivityNet, 64 bits)."""

    name: str = "wsch"
    bits: int = 64
    feature_dim: int = 4096  # D: 4096 (VGG, FCVID/YFCC) or 2048 (ResNet-50, ActivityNet)
    max_frames: int = 25  # T; only checked against the input (WSCH has no positional table)
    hidden_size: int = 1024  # H, the single wide layer
    decoder_size: int = 1024
    expand: int = 2  # SSD width = expand * H
    d_state: int = 64
    headdim: int = 128
    d_conv: int = 4
    chunk_size: int = 0  # SSD chunk length; 0 = whole sequence as one chunk (reference)
    heads: int = 4
    p1: float = 0.9  # mask ratio for pretraining and for the k-means codes
    p2: float = 0.6  # mask ratio for the cluster and contrastive passes
    a: float = 0.02  # cluster-loss weight
    b: float = 1.0  # DCL weight
    clus_temperature: float = 0.2
    n_clusters: int = 800
    temperature: float = 0.5  # DCL
    tau_plus: float = 0.1  # DCL class prior
    pretrain_epochs: int = 100
    kmeans_niter: int = 25  # faiss Lloyd iterations per cycle

    #: WSCH has no position table: the data's frame count must match exactly
    INPUT_SPEC: ClassVar[dict[str, InputField]] = {
        "feature_dim": InputField("feature_dim"),
        "max_frames": InputField("frames", "equal", "data.max_frames (frames per video)"),
    }

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        for key in ("bits", "feature_dim", "max_frames", "hidden_size", "decoder_size", "expand", "d_state",
                    "headdim", "d_conv", "heads", "n_clusters", "kmeans_niter"):
            if key in self.INPUT_SPEC and getattr(self, key) == AUTO:
                continue
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("chunk_size", "pretrain_epochs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"model.{key} must be >= 0, got {getattr(self, key)}")
        if (self.expand * self.hidden_size) % self.headdim:
            raise ConfigError(f"model.headdim ({self.headdim}) must divide expand*hidden_size "
                              f"({self.expand * self.hidden_size})")
        for key, dim in (("hidden_size", self.hidden_size), ("decoder_size", self.decoder_size)):
            if dim % self.heads:
                raise ConfigError(f"model.heads ({self.heads}) must divide model.{key} ({dim})")
        for key in ("p1", "p2"):
            p = getattr(self, key)
            if not 0.0 < p < 1.0:
                raise ConfigError(f"model.{key} (mask ratio) must be in (0, 1), got {p}")
            visible = self.max_frames - int(p * self.max_frames)
            if self.max_frames != AUTO and not 1 <= visible < self.max_frames:
                raise ConfigError(f"model.{key}={p} leaves {visible} of {self.max_frames} frames visible; "
                                  "need at least 1 visible and 1 masked")
        for key in ("clus_temperature", "temperature"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"model.{key} must be > 0, got {getattr(self, key)}")
        if not 0.0 <= self.tau_plus < 1.0:
            raise ConfigError(f"model.tau_plus must be in [0, 1), got {self.tau_plus}")
        if self.a < 0 or self.b < 0:
            raise ConfigError(f"model.a and model.b must be >= 0, got a={self.a}, b={self.b}")


def cosine_reconstruction(pred: Tensor, target: Tensor) -> Tensor:
    """1 - mean cosine similarity between predicted and true frame features (WSCH's reconstruction).

    Scale-free, unlike ConMH's MSE, so the raw CNN feature magnitude does not matter. Float32.
    """
    if pred.shape != target.shape:
        raise InputError(f"reconstruction: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.numel() == 0:
        raise InputError("reconstruction: empty prediction (no masked frames?)")
    with torch.autocast(device_type=pred.device.type, enabled=False):
        return 1.0 - F.cosine_similarity(pred.float(), target.float(), dim=-1).mean()


class AttentionBlock(nn.Module):
    """``x + attn(LayerNorm(x))``: WSCH's attention layer (no MLP, no q/k/v bias)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, qkv_bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attn(self.norm(x))


class WSCHEncoder(nn.Module):
    """Visible frame features (B, V, D) -> per-frame hidden states (B, V, H)."""

    def __init__(self, cfg: WSCHConfig) -> None:
        super().__init__()
        self.in_norm = nn.LayerNorm(cfg.feature_dim)
        self.in_proj = nn.Linear(cfg.feature_dim, cfg.hidden_size, bias=False)
        self.mixer = Mamba2Block(cfg.hidden_size, expand=cfg.expand, d_state=cfg.d_state, headdim=cfg.headdim,
                                 d_conv=cfg.d_conv, chunk_size=cfg.chunk_size)
        self.attn = AttentionBlock(cfg.hidden_size, cfg.heads)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(self.mixer(self.in_proj(self.in_norm(x))))


class HashHead(nn.Module):
    """Per-frame ±1 codes: Linear -> LayerNorm -> straight-through binariser."""

    def __init__(self, dim: int, bits: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, bits)
        self.norm = nn.LayerNorm(bits)

    def forward(self, x: Tensor) -> Tensor:
        return binarize_ste(self.norm(self.proj(x)))


class WSCHDecoder(nn.Module):
    """Visible frame codes + mask tokens (code space) -> predicted features of the masked frames.

    There are no positions: every mask token sees the same keys, so all masked slots of a video get
    the same prediction (as in the reference). Only the masked slots go through the output layer.
    """

    def __init__(self, bits: int, dim: int, out_dim: int, heads: int) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, bits))
        self.embed = nn.Linear(bits, dim, bias=False)
        self.attn = AttentionBlock(dim, heads)
        self.out_proj = nn.Linear(dim, out_dim)

    def forward(self, codes: Tensor, n_masked: int) -> Tensor:
        b, v, bits = codes.shape
        tokens = torch.cat([codes, self.mask_token.to(codes.dtype).expand(b, n_masked, bits)], dim=1)
        x = self.attn(self.embed(tokens))
        return self.out_proj(x[:, v:] if n_masked else x)  # reference: no masked frames -> all slots


class WSCH(HashModel):
    """The WSCH model with its training phases; see the module docstring."""

    def __init__(self, cfg: WSCHConfig) -> None:
        super().__init__()
        require_resolved(cfg, "WSCH")
        self.cfg = cfg
        self.bits = cfg.bits
        self.encoder = WSCHEncoder(cfg)
        self.hash = HashHead(cfg.hidden_size, cfg.bits)
        self.decoder = WSCHDecoder(cfg.bits, cfg.decoder_size, cfg.feature_dim, cfg.heads)
        # k-means state: the centres (sign vectors) and how many rows of them are valid (0 = none yet)
        self.register_buffer("cluster_centers", torch.zeros(cfg.n_clusters, cfg.bits))
        self.register_buffer("cluster_count", torch.zeros((), dtype=torch.int64))
        self._active_clusters = 0  # host mirror of cluster_count, so training steps never read the device
        self.register_load_state_dict_post_hook(WSCH._sync_cluster_count)

    # ------------------------------------------------------------------ state
    @staticmethod
    def _sync_cluster_count(module: nn.Module, incompatible: object) -> None:
        module._active_clusters = int(module.cluster_count)  # type: ignore[assignment]

    @property
    def active_clusters(self) -> int:
        """Number of valid cluster centres (0 before the first k-means step)."""
        return self._active_clusters

    # ------------------------------------------------------------------ forward
    def _check_feats(self, batch: dict[str, Tensor]) -> Tensor:
        feats = batch.get("feats")
        if feats is None:
            raise InputError(f"WSCH: batch has no 'feats' (keys: {sorted(batch)})")
        if feats.dim() != 3 or feats.shape[-1] != self.cfg.feature_dim:
            raise InputError(f"WSCH: batch['feats'] must be (B, T, {self.cfg.feature_dim}), got {tuple(feats.shape)}")
        if feats.shape[1] != self.cfg.max_frames:
            raise InputError(f"WSCH: batch['feats'] has {feats.shape[1]} frames, model.max_frames is "
                             f"{self.cfg.max_frames}")
        return feats

    def frame_codes(self, frames: Tensor) -> Tensor:
        """±1 codes (B, V, bits) of a sequence of (visible) frames."""
        return self.hash(self.encoder(frames))

    def forward(self, feats: Tensor, mask: FrameMask) -> tuple[Tensor, Tensor]:
        """Masked pass: (reconstruction of the masked frames (B, T-V, D), normalised video code (B, bits))."""
        codes = self.frame_codes(gather_frames(feats, mask.visible))
        recon = self.decoder(codes, mask.masked.shape[1])
        return recon, F.normalize(codes.mean(dim=1), dim=-1)

    def _two_views(self, feats: Tensor, mask_ratio: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Both complementary views in one pass over 2B sequences.

        Returns the reconstructions and targets of the masked frames (view 1 rows, then view 2
        rows) and the two views' normalised codes. Batching the views is exact: nothing mixes
        information across samples. Frames are gathered per view, never copying the full input.
        """
        b, t, _ = feats.shape
        m1, m2 = complementary_masks(b, t, num_visible(t, mask_ratio), device=feats.device)
        visible = torch.cat([gather_frames(feats, m1.visible), gather_frames(feats, m2.visible)])
        target = torch.cat([gather_frames(feats, m1.masked), gather_frames(feats, m2.masked)])
        codes = self.frame_codes(visible)
        recon = self.decoder(codes, t - visible.shape[1])
        z = F.normalize(codes.mean(dim=1), dim=-1)
        return recon, target, z[:b], z[b:]

    @torch.no_grad()
    def view_codes(self, feats: Tensor, mask_ratio: float) -> Tensor:
        """Normalised codes of two complementary views of each video, (2B, bits): view 1 then view 2."""
        b, t, _ = feats.shape
        m1, m2 = complementary_masks(b, t, num_visible(t, mask_ratio), device=feats.device)
        visible = torch.cat([gather_frames(feats, m1.visible), gather_frames(feats, m2.visible)])
        return F.normalize(self.frame_codes(visible).mean(dim=1), dim=-1)

    @torch.no_grad()
    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """Retrieval codes: sign of the mean frame code over all frames ({-1, 0, +1}; 0 only for even T)."""
        feats = self._check_feats(batch)
        return torch.sign(self.frame_codes(feats).mean(dim=1)).float()

    # ------------------------------------------------------------------ training
    def epoch_phases(self, epoch: int) -> list[str]:
        return ["recon"] if epoch < self.cfg.pretrain_epochs else ["cluster", "contrastive"]

    def training_step(self, batch: dict[str, Tensor], phase: str = "recon") -> dict[str, Tensor]:
        if phase not in PHASES:
            raise InputError(f"WSCH: unknown phase {phase!r} (one of {', '.join(PHASES)})")
        feats = self._check_feats(batch)
        cfg = self.cfg
        b = feats.shape[0]
        recon, target, z1, z2 = self._two_views(feats, cfg.p1 if phase == "recon" else cfg.p2)
        # sum over the two views of each view's mean cosine loss, as the reference
        rec = cosine_reconstruction(recon[:b], target[:b]) + cosine_reconstruction(recon[b:], target[b:])
        out = {"recon": rec.detach()}  # components are for logging; only "loss" carries gradients
        if phase == "recon":
            out["loss"] = rec
        elif phase == "cluster":
            k = self._active_clusters
            if k == 0:
                raise InputError("WSCH: phase 'cluster' needs cluster centres; call before_epoch(epoch) for an "
                                 f"epoch >= pretrain_epochs ({cfg.pretrain_epochs}) first")
            centres = self.cluster_centers[:k]
            clus = (cluster_assignment_loss(z1, centres, cfg.clus_temperature)
                    + cluster_assignment_loss(z2, centres, cfg.clus_temperature))
            out["cluster"] = clus.detach()
            out["loss"] = rec + cfg.a * clus
        else:
            con = dcl_loss(*gather_pairs(z1, z2), cfg.temperature, cfg.tau_plus)  # global-batch negatives
            out["contrastive"] = con.detach()
            out["loss"] = rec + cfg.b * con
        return out

    def before_epoch(self, epoch: int, ctx: EpochContext) -> None:
        """After pretraining: re-cluster the training codes (the "clustering" step of each cycle)."""
        if epoch >= self.cfg.pretrain_epochs:
            self.update_clusters(ctx)

    @torch.no_grad()
    def update_clusters(self, ctx: EpochContext) -> dict[str, float]:
        """Encode every training video under two ``p1`` views, k-means the signs, store sign(centres).

        The k-means seed is drawn from torch's global generator, which the engine seeds and
        checkpoints, so the clustering is deterministic given the experiment seed and a resumed run
        repeats it exactly. Warm start from the previous centres when there are any of the same count.
        Under DDP every rank encodes its block of each global batch; ``ctx.gather_batches`` reassembles
        the global batches, so k-means sees every item once, in the order one process would give it.
        Rank 0 clusters and broadcasts the centres.
        """
        views1, views2 = [], []
        for batch in ctx.batches(shuffle=False):
            v = self.view_codes(self._check_feats(batch), self.cfg.p1)
            views1.append(v[: v.shape[0] // 2])
            views2.append(v[v.shape[0] // 2:])
        # per global batch: view-1 codes then view-2 codes, as the reference collects them
        chunks = [torch.cat([a, b]) for a, b in zip(ctx.gather_batches(views1), ctx.gather_batches(views2))]
        codes = (torch.cat(chunks) if chunks else self.cluster_centers.new_zeros(0, self.bits)).sign().float()
        if codes.shape[0] == 0:
            raise InputError("WSCH: the training set is empty; cannot cluster its codes")
        k = min(self.cfg.n_clusters, codes.shape[0])
        if k < self.cfg.n_clusters:
            warnings.warn(f"WSCH: n_clusters={self.cfg.n_clusters} is more than the {codes.shape[0]} training "
                          f"codes; clustering into {k} centres", stacklevel=2)
        init = self.cluster_centers[:k].cpu().numpy() if self._active_clusters == k else None
        gen = shared_generator()  # under DDP: the stream every rank shares (one process: the default one)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device if gen is not None else "cpu"))
        info = {"clusters": float(k), "objective": float("nan"), "warm_started": float(init is not None)}
        centres = self.cluster_centers.new_zeros(k, self.bits)
        if rank() == 0:  # one k-means, shared with every rank below
            result = kmeans(codes.cpu().numpy(), k, init=init, niter=self.cfg.kmeans_niter, seed=seed)
            centres = torch.from_numpy(result.centroids).sign().to(self.cluster_centers)
            info["objective"] = result.objective
        if is_distributed():
            torch.distributed.broadcast(centres, src=0)
        self.cluster_centers.zero_()
        self.cluster_centers[:k] = centres
        self.cluster_count.fill_(k)
        self._active_clusters = k
        return info


@register_model("wsch", WSCHConfig)
def build_wsch(cfg: WSCHConfig) -> WSCH:
    return WSCH(cfg)


# ---------------------------------------------------------------------- released checkpoints

# reference name prefix -> ours (longest prefixes first where they nest)
_RENAMES: tuple[tuple[str, str], ...] = (
    ("En.Norm1.", "encoder.mixer.norm."),
    ("En.Norm.", "encoder.in_norm."),
    ("En.in_proj.", "encoder.in_proj."),
    ("En.expand_proj.", "encoder.mixer.in_proj."),
    ("En.conv.", "encoder.mixer.conv."),
    ("En.ssm.", "encoder.mixer.ssd."),
    ("En.out_proj.", "encoder.mixer.out_proj."),
    ("En.norm1.", "encoder.attn.norm."),
    ("En.att1.linear_output.", "encoder.attn.attn.proj."),
    ("hash.linear.", "hash.proj."),
    ("hash.ln.", "hash.norm."),
    ("De.mask_token", "decoder.mask_token"),
    ("De.encoder_to_decoder.", "decoder.embed."),
    ("De.norm.", "decoder.attn.norm."),
    ("De.att.linear_output.", "decoder.attn.attn.proj."),
    ("De.out_proj.", "decoder.out_proj."),
    ("cluster_centers", "cluster_centers"),
)
# separate q/k/v projections in the reference, one fused [q | k | v] projection here
_QKV = {"En.att1.": "encoder.attn.attn.qkv.weight", "De.att.": "decoder.attn.attn.qkv.weight"}


def _unwrap(state: Mapping[str, Any], source: str) -> dict[str, Tensor]:
    """Accept ``model.state_dict()`` or the reference's saved ``{'berthash': ..., 'optimizer': ...}``."""
    if "berthash" in state and isinstance(state["berthash"], Mapping):
        state = state["berthash"]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise FileFormatError(f"{source}: entry {key!r} is not a tensor (is this a WSCH state dict?)")
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def config_from_official(state: Mapping[str, Any], source: str = "WSCH checkpoint") -> dict[str, int]:
    """Model sizes read off the reference tensors (bits, feature_dim, widths, SSD shape, n_clusters)."""
    sd = _unwrap(state, source)
    need = ("hash.ln.weight", "En.Norm.weight", "En.in_proj.weight", "De.encoder_to_decoder.weight",
            "En.ssm.dt_bias", "En.ssm.x_proj.weight", "En.expand_proj.weight", "En.conv.weight", "cluster_centers")
    missing = [k for k in need if k not in sd]
    if missing:
        raise FileFormatError(f"{source}: not a reference WSCH state dict; missing {missing}")
    hidden = int(sd["En.in_proj.weight"].shape[0])
    inner = int(sd["En.expand_proj.weight"].shape[0]) // 2
    nheads = int(sd["En.ssm.dt_bias"].shape[0])
    if inner % hidden or inner % nheads:
        raise FileFormatError(f"{source}: inconsistent SSD shapes (hidden {hidden}, inner {inner}, heads {nheads})")
    return {
        "bits": int(sd["hash.ln.weight"].shape[0]),
        "feature_dim": int(sd["En.Norm.weight"].shape[0]),
        "hidden_size": hidden,
        "decoder_size": int(sd["De.encoder_to_decoder.weight"].shape[0]),
        "expand": inner // hidden,
        "headdim": inner // nheads,
        "d_state": (int(sd["En.ssm.x_proj.weight"].shape[0]) - nheads) // 2,
        "d_conv": int(sd["En.conv.weight"].shape[-1]),
        "n_clusters": int(sd["cluster_centers"].shape[0]),
    }


def convert_official(state: Mapping[str, Any], source: str = "WSCH checkpoint") -> dict[str, Tensor]:
    """Map a reference WSCH state dict onto this model's parameter names.

    The attention q/k/v weights are stacked into one fused projection, and ``cluster_count`` is set
    to ``n_clusters`` when the released centres are non-zero (a main-stage checkpoint) and to 0 for
    a pretraining checkpoint, whose centres are still the initial zeros. Unknown or missing
    reference keys raise FileFormatError listing them.
    """
    sd = _unwrap(state, source)
    out: dict[str, Tensor] = {}
    used: set[str] = set()
    for ref, ours in _QKV.items():
        parts = [f"{ref}linear_{n}.weight" for n in "qkv"]
        missing = [p for p in parts if p not in sd]
        if missing:
            raise FileFormatError(f"{source}: missing attention weights {missing}")
        shapes = {tuple(sd[p].shape) for p in parts}
        if len(shapes) != 1:
            raise FileFormatError(f"{source}: q/k/v weights of {ref!r} differ in shape: {sorted(shapes)}")
        out[ours] = torch.cat([sd[p] for p in parts], dim=0)
        used.update(parts)
    for key, value in sd.items():
        if key in used:
            continue
        for ref, ours in _RENAMES:
            if key.startswith(ref):
                out[ours + key[len(ref):]] = value
                break
        else:
            unknown = sorted(k for k in sd if k not in used and not any(k.startswith(r) for r, _ in _RENAMES))
            raise FileFormatError(f"{source}: unexpected reference keys {unknown[:10]}")
    if "cluster_centers" not in out:
        raise FileFormatError(f"{source}: missing 'cluster_centers'")
    centres = out["cluster_centers"]
    out["cluster_count"] = torch.tensor(centres.shape[0] if bool(centres.abs().sum() > 0) else 0, dtype=torch.int64)
    return out


@CONVERTERS.register("wsch")
def convert_wsch(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official WSCH state dict (anon271/WSCH ``model.py``) -> :class:`WSCH` state dict."""
    return convert_official(state_dict, "WSCH checkpoint")
