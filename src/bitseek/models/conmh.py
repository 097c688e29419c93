"""ConMH: Contrastive Masked Autoencoders for Self-Supervised Video Hashing (Wang et al., AAAI 2023).

A masked autoencoder over per-frame CNN features whose bottleneck is a ±1 code per frame:

* encoder: Linear D->hidden + fixed sinusoidal positions, then pre-norm Transformer blocks over the
  *visible* frames only, LayerNorm, Linear hidden->hidden;
* hash layer (per frame): Linear hidden->bits, LayerNorm(bits), straight-through hard-sigmoid binariser;
* decoder: Linear bits->decoder_dim (no bias) on the visible frames' binary codes + positions,
  learnable mask tokens + positions for the masked slots, a small Transformer, LayerNorm and
  Linear decoder_dim->D on the masked slots only, predicting their raw features.

Training draws two complementary masks per video from one permutation; the loss is the MSE on the
masked frames of each view (summed) plus ``a`` times the debiased contrastive loss between the two
views' mean visible-frame codes. The retrieval code is ``torch.sign`` of the mean frame code over
all frames with no masking (exact zeros kept: with an even frame count a bit can be 0).

Parameter layout and initialisation follow the official code (huangmozhi9527/ConMH, model/conmh.py),
so its released checkpoints import with :func:`bitseek.models.convert.load_official`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
from torch import Tensor, nn

from bitseek.errors import ConfigError, InputError
from bitseek.losses.dcl import dcl_loss
from bitseek.losses.distributed import gather_pairs
from bitseek.losses.reconstruction import mse_reconstruction
from bitseek.models.base import HashModel
from bitseek.models.layers.binarize import binarize_ste
from bitseek.models.layers.position import sinusoid_table
from bitseek.models.layers.transformer import Block, xavier_init_
from bitseek.models.masking import FrameMask, complementary_masks, gather_frames, num_visible, stack_views
from bitseek.models.convert import rename_by_prefix
from bitseek.models.spec import AUTO, InputField, require_resolved
from bitseek.registry import CONVERTERS, register_model

# Official ``transformer_type`` presets: encoder (depth, heads); the decoder is always 2 x 192 x 3.
PRESETS: dict[str, tuple[int, int]] = {"small": (12, 6), "base": (12, 12), "large": (24, 16), "mini": (1, 1)}
_DEFAULT_DEPTH, _DEFAULT_HEADS = 12, 6
# The hash layer's LayerNorm is a plain ``nn.LayerNorm(bits)`` in the official code (eps 1e-5),
# unlike the Transformer norms (eps 1e-6).
HASH_NORM_EPS = 1e-5
BLOCK_NORM_EPS = 1e-6


@dataclass
class ConMHConfig:
    """ConMH hyper-parameters (defaults: FCVID, 64 bits, ``transformer_type='small'`` shape)."""

    name: str = "conmh"
    bits: int = 64
    feature_dim: int = 4096
    max_frames: int = 25
    hidden_size: int = 256
    depth: int = _DEFAULT_DEPTH
    heads: int = _DEFAULT_HEADS
    mlp_ratio: float = 4.0
    decoder_dim: int = 192
    decoder_depth: int = 2
    decoder_heads: int = 3
    mask_prob: float = 0.75  # fraction of frames masked per view (0.75 FCVID/YFCC, 0.5 ActivityNet)
    a: float = 1.0  # DCL weight (1.0 FCVID/YFCC, 0.2 ActivityNet)
    temperature: float = 0.5
    tau_plus: float = 0.1  # DCL class prior (0.1 FCVID/YFCC, 0.05 ActivityNet)
    transformer_type: str = ""  # "" = use depth/heads; small | base | large | mini = official preset

    #: feature_dim must equal the data's; max_frames (the position table) must cover the data's frames
    INPUT_SPEC: ClassVar[dict[str, InputField]] = {
        "feature_dim": InputField("feature_dim"),
        "max_frames": InputField("frames", "at_least", "data.max_frames (frames per video)"),
    }

    def __post_init__(self) -> None:
        if self.transformer_type:
            if self.transformer_type not in PRESETS:
                raise ConfigError(f"model.transformer_type: {self.transformer_type!r} is not one of "
                                  f"{', '.join(PRESETS)} (or '' for explicit depth/heads)")
            depth, heads = PRESETS[self.transformer_type]
            for key, value, default, preset in (("depth", self.depth, _DEFAULT_DEPTH, depth),
                                                ("heads", self.heads, _DEFAULT_HEADS, heads)):
                if value not in (default, preset):
                    raise ConfigError(f"model.{key}={value} contradicts transformer_type="
                                      f"{self.transformer_type!r} ({key}={preset}); set one or the other")
            self.depth, self.heads = depth, heads
        positive = {"bits": self.bits, "feature_dim": self.feature_dim, "hidden_size": self.hidden_size,
                    "depth": self.depth, "heads": self.heads, "decoder_dim": self.decoder_dim,
                    "decoder_depth": self.decoder_depth, "decoder_heads": self.decoder_heads}
        for key, value in positive.items():
            if value < 1 and not (key == "feature_dim" and value == AUTO):
                raise ConfigError(f"model.{key} must be >= 1, got {value}")
        if self.heads > self.hidden_size or self.decoder_heads > self.decoder_dim:
            raise ConfigError(f"model: more heads than channels (heads={self.heads}, hidden_size={self.hidden_size}, "
                              f"decoder_heads={self.decoder_heads}, decoder_dim={self.decoder_dim})")
        if self.max_frames < 2 and self.max_frames != AUTO:
            raise ConfigError(f"model.max_frames must be >= 2, got {self.max_frames}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"model.mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"model.mask_prob must be in (0, 1), got {self.mask_prob}")
        masked = int(self.mask_prob * self.max_frames)
        if self.max_frames != AUTO and (masked < 1 or masked >= self.max_frames):
            raise ConfigError(f"model.mask_prob={self.mask_prob} masks {masked} of {self.max_frames} frames; "
                              "need at least one masked and one visible frame")
        if self.temperature <= 0:
            raise ConfigError(f"model.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.tau_plus < 1.0:
            raise ConfigError(f"model.tau_plus must be in [0, 1), got {self.tau_plus}")
        if self.a < 0:
            raise ConfigError(f"model.a (DCL weight) must be >= 0, got {self.a}")


class ConMH(HashModel):
    """ConMH model; see the module docstring. Inputs are ``batch["feats"]`` of shape (B, T, D)."""

    def __init__(self, cfg: ConMHConfig) -> None:
        super().__init__()
        require_resolved(cfg, "ConMH")
        self.cfg = cfg
        self.bits = cfg.bits
        h, d = cfg.hidden_size, cfg.decoder_dim
        # Encoder (official: encoder.patch_embed / blocks / norm / head).
        self.embed = nn.Linear(cfg.feature_dim, h)
        self.encoder_blocks = nn.ModuleList(
            Block(h, cfg.heads, cfg.mlp_ratio, qkv_bias=True, eps=BLOCK_NORM_EPS) for _ in range(cfg.depth))
        self.encoder_norm = nn.LayerNorm(h, eps=BLOCK_NORM_EPS)
        self.encoder_head = nn.Linear(h, h)
        # Hash layer (official: binary / ln).
        self.hash_fc = nn.Linear(h, cfg.bits)
        self.hash_norm = nn.LayerNorm(cfg.bits, eps=HASH_NORM_EPS)
        # Decoder (official: encoder_to_decoder / mask_token / decoder.blocks / decoder.norm / decoder.head).
        self.decoder_embed = nn.Linear(cfg.bits, d, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_blocks = nn.ModuleList(
            Block(d, cfg.decoder_heads, cfg.mlp_ratio, qkv_bias=True, eps=BLOCK_NORM_EPS)
            for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(d, eps=BLOCK_NORM_EPS)
        self.decoder_pred = nn.Linear(d, cfg.feature_dim)
        # Fixed positions: not parameters and not saved (rebuilt from the config).
        self.register_buffer("encoder_pos", sinusoid_table(cfg.max_frames, h), persistent=False)
        self.register_buffer("decoder_pos", sinusoid_table(cfg.max_frames, d), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation.

        Xavier-uniform weights and zero biases inside the encoder and decoder (their own
        ``apply(_init_weights)``); the hash layer and the bits->decoder projection keep PyTorch's
        default Linear init, because the official top-level module never applies its init to them;
        the mask token is truncated-normal with std 0.02 cut at ±0.02 (the official helper truncates
        at one standard deviation).
        """
        for module in (self.embed, self.encoder_blocks, self.encoder_norm, self.encoder_head,
                       self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(xavier_init_)
        for blocks in (self.encoder_blocks, self.decoder_blocks):
            for blk in blocks:
                nn.init.zeros_(blk.attn.q_bias)
                nn.init.zeros_(blk.attn.v_bias)
        self.hash_fc.reset_parameters()
        self.hash_norm.reset_parameters()
        self.decoder_embed.reset_parameters()
        nn.init.trunc_normal_(self.mask_token, mean=0.0, std=0.02, a=-0.02, b=0.02)

    # ------------------------------------------------------------------ pieces

    def _features(self, batch: dict[str, Tensor]) -> Tensor:
        """``batch["feats"]`` checked against the config (shape metadata only: no host sync)."""
        if "feats" not in batch:
            raise InputError(f"ConMH expects batch['feats'] (B, T, D); got keys {sorted(batch)}")
        x = batch["feats"]
        if x.ndim != 3:
            raise InputError(f"batch['feats'] must be (B, T, D), got shape {tuple(x.shape)}")
        if x.shape[2] != self.cfg.feature_dim:
            raise InputError(f"batch['feats'] has feature dim {x.shape[2]}, model expects {self.cfg.feature_dim}")
        if not 2 <= x.shape[1] <= self.cfg.max_frames:
            raise InputError(f"batch['feats'] has {x.shape[1]} frames, model supports 2..{self.cfg.max_frames}")
        if not x.is_floating_point():
            raise InputError(f"batch['feats'] must be floating point, got {x.dtype}")
        return x.to(self.embed.weight.dtype)

    def _embed(self, x: Tensor) -> Tensor:
        """Projected frames plus fixed positions, (B, T, hidden), before any masking."""
        h = self.embed(x)
        return h + self.encoder_pos[: x.shape[1]].to(h.dtype)

    def _pre_sign(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder blocks and head, then the hash layer before the sign: (encoder output, pre-sign code)."""
        for blk in self.encoder_blocks:
            h = blk(h)
        hidden = self.encoder_head(self.encoder_norm(h))
        return hidden, self.hash_norm(self.hash_fc(hidden))

    def _encode_tokens(self, h: Tensor) -> Tensor:
        """Encoder blocks + hash layer over the given (already selected) frame tokens -> ±1 codes."""
        return binarize_ste(self._pre_sign(h)[1])

    def frame_codes(self, x: Tensor, visible: Tensor | None = None) -> Tensor:
        """±1 codes (B, V, bits) of the visible frames (all T frames when ``visible`` is None)."""
        h = self._embed(x)
        return self._encode_tokens(h if visible is None else gather_frames(h, visible))

    def reconstruct(self, codes: Tensor, mask: FrameMask) -> Tensor:
        """Predicted raw features (B, M, D) of the masked frames, in ascending frame order."""
        z = self.decoder_embed(codes)
        pos = self.decoder_pos.to(z.dtype)
        visible = z + pos[mask.visible]
        hidden = self.mask_token.to(z.dtype) + pos[mask.masked]
        z = torch.cat([visible, hidden], dim=1)
        for blk in self.decoder_blocks:
            z = blk(z)
        return self.decoder_pred(self.decoder_norm(z[:, visible.shape[1]:]))

    def forward(self, x: Tensor, mask: FrameMask) -> tuple[Tensor, Tensor]:
        """One masked view: (predictions of masked frames (B, M, D), visible frame codes (B, V, bits))."""
        codes = self.frame_codes(x, mask.visible)
        return self.reconstruct(codes, mask), codes

    # ------------------------------------------------------------------ HashModel contract

    def training_step(self, batch: dict[str, Tensor], phase: str = "train") -> dict[str, Tensor]:
        """Two complementary masked views -> {"loss", "recon", "dcl"} (scalar tensors, no host sync).

        Both views are run as one stacked batch of 2B clips (they have the same number of visible
        frames): the same per-sample computation as the reference's two separate passes, with one
        kernel launch per layer, and the D->hidden frame projection runs on the visible frames only.
        """
        x = self._features(batch)
        b, t, _ = x.shape
        v = num_visible(t, self.cfg.mask_prob)
        if v >= t:
            raise InputError(f"mask_prob={self.cfg.mask_prob} masks no frame of a {t}-frame clip")
        first, second = complementary_masks(b, t, v, device=x.device)
        both = stack_views(first, second)
        # Only visible frames reach the encoder: project just those (2·V of T rows per clip, 14 of 25
        # at FCVID's mask 0.75) and add their positions, instead of projecting every frame per view.
        h = self.embed(gather_frames(x, both.visible))
        h = h + self.encoder_pos.to(h.dtype)[both.visible]
        codes = self._encode_tokens(h)
        pred = self.reconstruct(codes, both)
        # The reference adds the two views' F.mse_loss; both views mask the same number of frames,
        # so that sum is 2 x the mean over the stacked views (one pass, one backward buffer).
        recon = 2.0 * mse_reconstruction(pred, gather_frames(x, both.masked))
        mean_codes = codes.float().mean(dim=1)
        # under DDP the negatives are the whole global batch's (identity in one process)
        contrast = dcl_loss(*gather_pairs(mean_codes[:b], mean_codes[b:]), self.cfg.temperature, self.cfg.tau_plus)
        return {"loss": recon + self.cfg.a * contrast, "recon": recon.detach(), "dcl": contrast.detach()}

    @torch.no_grad()
    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """Video codes (B, bits) in {-1, 0, +1}: sign of the mean ±1 frame code over all frames."""
        codes = self.frame_codes(self._features(batch))
        return torch.sign(codes.float().mean(dim=1))

    @torch.no_grad()
    def features(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-frame float representations of all frames, the ones :meth:`encode` binarises.

        ``encoder_output`` (B, T, hidden) and ``pre_sign_code`` (B, T, bits), whose sign is
        :meth:`frame_codes`: they tell a weak representation from a lossy binarisation.
        """
        hidden, pre = self._pre_sign(self._embed(self._features(batch)))
        return {"encoder_output": hidden, "pre_sign_code": pre}


@register_model("conmh", ConMHConfig)
def build_conmh(cfg: ConMHConfig) -> ConMH:
    return ConMH(cfg)


# --------------------------------------------------------------------------- released checkpoints

# Official names (huangmozhi9527/ConMH, model/conmh.py, class Transformer) -> ours.
# Prefix rules, first match wins; the block internals (norm1, attn.qkv, attn.q_bias, attn.v_bias,
# attn.proj, norm2, mlp.fc1, mlp.fc2) have the same names on both sides.
CONMH_PREFIXES: tuple[tuple[str, str], ...] = (
    ("encoder.patch_embed.", "embed."),
    ("encoder.blocks.", "encoder_blocks."),
    ("encoder.norm.", "encoder_norm."),
    ("encoder.head.", "encoder_head."),
    ("binary.", "hash_fc."),
    ("ln.", "hash_norm."),
    ("encoder_to_decoder.", "decoder_embed."),
    ("decoder.blocks.", "decoder_blocks."),
    ("decoder.norm.", "decoder_norm."),
    ("decoder.head.", "decoder_pred."),
)
CONMH_EXACT: dict[str, str] = {"mask_token": "mask_token"}


@CONVERTERS.register("conmh")
def convert_conmh(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official ConMH state dict -> :class:`ConMH` state dict (every key renamed or an error)."""
    return rename_by_prefix(state_dict, CONMH_PREFIXES, CONMH_EXACT, "ConMH")
