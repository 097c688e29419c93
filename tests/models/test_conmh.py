"""ConMH: model behaviour, training, configs and import of official checkpoints."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bitseek.config import build_experiment, from_dict, load_yaml
from bitseek.errors import ConfigError, FileFormatError, InputError
from bitseek.models import conmh as conmh_module
from bitseek.models.conmh import ConMH, ConMHConfig
from bitseek.models.convert import (CONVERTERS, convert_state_dict, load_official, read_checkpoint,
                                    unwrap_checkpoint)
from bitseek.models.masking import complementary_masks, gather_frames, random_mask
from bitseek.registry import DATASETS, MODELS, create_model

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]


def tiny_cfg(**kw) -> ConMHConfig:
    # hidden 24 with 5 heads reproduces the head_dim quirk (inner width 20 != 24) at toy size
    base = dict(bits=8, feature_dim=16, max_frames=8, hidden_size=24, depth=2, heads=5,
                decoder_dim=12, decoder_depth=1, decoder_heads=3, mask_prob=0.75)
    base.update(kw)
    return ConMHConfig(**base)


def tiny_model(seed: int = 0, **kw) -> ConMH:
    torch.manual_seed(seed)
    return ConMH(tiny_cfg(**kw))


# --------------------------------------------------------------------------- model behaviour


def test_decoder_predicts_masked_frames_from_visible_frames_only():
    model = tiny_model()
    torch.manual_seed(5)
    x = torch.randn(3, 8, 16)
    mask = random_mask(3, 8, 2)
    pred, codes = model(x, mask)
    assert pred.shape == (3, 6, 16) and codes.shape == (3, 2, 8)
    # changing the masked frames changes nothing: the encoder never sees them
    x2 = x.clone()
    x2.scatter_(1, mask.masked.unsqueeze(-1).expand(-1, -1, 16), torch.randn(3, 6, 16))
    pred2, codes2 = model(x2, mask)
    assert torch.equal(pred, pred2) and torch.equal(codes, codes2)
    # the same clip with a different mask predicts a different set of frames
    other = random_mask(3, 8, 2)
    assert model(x, other)[0].shape == (3, 6, 16)


def test_encode_is_sign_of_mean_frame_code_over_all_frames():
    model = tiny_model()
    x = torch.randn(5, 7, 16)
    codes = model.encode({"feats": x})
    frames = model.frame_codes(x)
    assert frames.shape == (5, 7, 8) and set(frames.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(codes, torch.sign(frames.mean(1)))
    assert not codes.requires_grad


def test_zeros_only_with_even_frame_count():
    model = tiny_model(bits=16)
    torch.manual_seed(3)
    odd = model.encode({"feats": torch.randn(64, 7, 16)})
    even = model.encode({"feats": torch.randn(64, 8, 16)})
    for c in (odd, even):
        assert set(c.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert not (odd == 0).any()
    assert (even == 0).any()


def test_all_parameters_get_gradients_and_outputs_are_scalars():
    model = tiny_model()
    out = model.training_step({"feats": torch.randn(4, 8, 16), "index": torch.arange(4)})
    assert set(out) == {"loss", "recon", "dcl"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
    assert not out["recon"].requires_grad and not out["dcl"].requires_grad
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_step_equals_two_separate_reference_views(monkeypatch):
    """Stacking the views, projecting visible frames only and the one-pass MSE are optimisations:
    the loss and every gradient equal the reference's two separate passes with F.mse_loss."""
    model = tiny_model(a=0.7, tau_plus=0.05)
    torch.manual_seed(7)
    x = torch.randn(5, 8, 16)
    first, second = complementary_masks(5, 8, 2)
    monkeypatch.setattr(conmh_module, "complementary_masks", lambda *a, **k: (first, second))
    out = model.training_step({"feats": x})
    ours = torch.autograd.grad(out["loss"], list(model.parameters()))
    recon = 0.0
    means = []
    rows = torch.arange(5).unsqueeze(1)
    for m in (first, second):
        pred, codes = model(x, m)
        recon = recon + F.mse_loss(pred, x[rows, m.masked])
        means.append(codes.mean(1))
    from bitseek.losses import dcl_loss

    contrast = dcl_loss(means[0], means[1], 0.5, 0.05)
    torch.testing.assert_close(out["recon"], recon.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["dcl"], contrast.detach(), rtol=1e-5, atol=1e-6)
    reference = recon + 0.7 * contrast
    torch.testing.assert_close(out["loss"].detach(), reference.detach(), rtol=1e-5, atol=1e-6)
    for (name, _), g, r in zip(model.named_parameters(), ours, torch.autograd.grad(reference, list(model.parameters()))):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_a_few_steps_reduce_the_loss():
    model = tiny_model(seed=1, mask_prob=0.5)
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 2
    x = centres[torch.arange(32) % 4][:, None, :] + 0.3 * torch.randn(32, 8, 16, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    torch.manual_seed(2)
    losses = []
    for _ in range(40):
        out = model.training_step({"feats": x})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_mixed_precision_step_is_finite():
    # The engine runs AMP on GPU; bf16 autocast on CPU exercises the same dtype paths.
    model = tiny_model()
    x = torch.randn(4, 8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.training_step({"feats": x})
        codes = model.encode({"feats": x})
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    assert set(codes.unique().tolist()) <= {-1.0, 0.0, 1.0}
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_batch_size_one():
    model = tiny_model()
    out = model.training_step({"feats": torch.randn(1, 8, 16)})
    assert torch.isfinite(out["loss"]) and out["dcl"].item() == 0.0
    out["loss"].backward()
    assert model.encode({"feats": torch.randn(1, 8, 16)}).shape == (1, 8)


@pytest.mark.parametrize("chunk", [1, 4, 5, 12])
def test_encoding_in_batches_equals_one_batch(chunk):
    # 12 clips in batches of 4 (divides the count: the official evaluation crashed there) or 5.
    model = tiny_model()
    x = torch.randn(12, 8, 16)
    full = model.encode({"feats": x})
    parts = torch.cat([model.encode({"feats": x[i:i + chunk]}) for i in range(0, 12, chunk)])
    assert parts.shape == full.shape and torch.equal(parts, full)


def test_fewer_frames_than_max_frames():
    model = tiny_model(max_frames=10)
    out = model.training_step({"feats": torch.randn(3, 8, 16)})
    assert torch.isfinite(out["loss"])


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(InputError, match="feature dim"):
        model.encode({"feats": torch.randn(2, 8, 15)})
    with pytest.raises(InputError, match=r"\(B, T, D\)"):
        model.training_step({"feats": torch.randn(8, 16)})
    with pytest.raises(InputError, match="frames"):
        model.encode({"feats": torch.randn(2, 9, 16)})
    with pytest.raises(InputError, match="feats"):
        model.training_step({"image": torch.randn(2, 3, 4, 4)})
    with pytest.raises(InputError, match="floating"):
        model.encode({"feats": torch.ones(2, 8, 16, dtype=torch.int64)})
    light = tiny_model(mask_prob=0.4)  # int(0.4 * 2) = 0: a 2-frame clip would have nothing to reconstruct
    with pytest.raises(InputError, match="masks no frame"):
        light.training_step({"feats": torch.randn(2, 2, 16)})


def test_no_cuda_calls_in_conmh_sources():
    src = REPO / "src" / "bitseek"
    files = [src / "models" / "conmh.py", src / "models" / "masking.py", src / "models" / "convert.py",
             *(src / "models" / "layers").glob("*.py"), *(src / "losses").glob("*.py")]
    pattern = re.compile(r"\.cuda\(|device\s*=\s*['\"]cuda")
    for f in files:
        assert not pattern.search(f.read_text()), f"{f} hard-codes CUDA"


# --------------------------------------------------------------------------- config and registry


def test_registry_and_presets():
    assert "conmh" in MODELS.names()
    model = create_model("conmh", bits=16, feature_dim=32, max_frames=6, transformer_type="mini",
                         hidden_size=32, decoder_dim=12, mask_prob=0.5)
    assert isinstance(model, ConMH) and model.bits == 16
    assert model.cfg.depth == 1 and model.cfg.heads == 1 and len(model.encoder_blocks) == 1
    assert ConMHConfig(transformer_type="large").depth == 24
    assert ConMHConfig(transformer_type="base", heads=12).heads == 12


@pytest.mark.parametrize("kw,match", [
    (dict(transformer_type="huge"), "transformer_type"),
    (dict(transformer_type="mini", depth=3), "contradicts"),
    (dict(mask_prob=1.0), "mask_prob"),
    (dict(mask_prob=0.01), "masks 0"),
    (dict(bits=0), "bits"),
    (dict(tau_plus=1.0), "tau_plus"),
    (dict(temperature=0.0), "temperature"),
    (dict(heads=300), "heads"),
])
def test_config_validation(kw, match):
    with pytest.raises(ConfigError, match=match):
        ConMHConfig(**kw)


def test_unknown_config_key_suggests():
    with pytest.raises(ConfigError, match="did you mean 'tau_plus'"):
        MODELS.config("conmh", tau_plu=0.1)


def test_official_sizes_and_initialisation():
    torch.manual_seed(0)
    model = create_model("conmh", transformer_type="small")
    n = sum(p.numel() for p in model.parameters())
    assert n == 12_249_248  # FCVID, 64 bits: 12.25 M, as counted from the official model
    attn = model.encoder_blocks[0].attn
    assert attn.qkv.weight.shape == (756, 256) and attn.proj.weight.shape == (256, 252)
    assert model.encoder_blocks[0].norm1.eps == 1e-6 and model.hash_norm.eps == 1e-5
    assert model.mask_token.abs().max() <= 0.02 and model.mask_token.std() > 0
    assert torch.all(model.embed.bias == 0) and torch.all(model.decoder_pred.bias == 0)
    assert torch.all(attn.q_bias == 0) and torch.all(attn.v_bias == 0)
    bound = math.sqrt(6.0 / (4096 + 256))
    assert model.embed.weight.abs().max() <= bound
    assert set(model.state_dict()) == {k for k, _ in model.named_parameters()}  # positions not saved


CONFIGS = REPO / "configs" / "conmh"
PAPER = {  # dataset: (feature_dim, frames, batch, mask_prob, a, tau_plus, epochs)
    "fcvid": (4096, 25, 512, 0.75, 1.0, 0.1, 800),
    "activitynet": (2048, 30, 128, 0.5, 0.2, 0.05, 500),
    "yfcc": (4096, 25, 128, 0.75, 1.0, 0.1, 40),
}


@pytest.mark.parametrize("dataset", sorted(PAPER))
@pytest.mark.parametrize("bits", [16, 32, 64])
def test_configs_carry_paper_hyperparameters(dataset, bits):
    path = CONFIGS / f"{dataset}-{bits}.yaml"
    raw = load_yaml(path)
    dim, frames, batch, prob, a, tau, epochs = PAPER[dataset]
    model_cfg = from_dict(ConMHConfig, raw["model"], "model")
    assert (model_cfg.bits, model_cfg.feature_dim, model_cfg.max_frames) == (bits, dim, frames)
    assert (model_cfg.depth, model_cfg.heads, model_cfg.hidden_size, model_cfg.decoder_dim) == (12, 6, 256, 192)
    assert (model_cfg.mask_prob, model_cfg.a, model_cfg.temperature, model_cfg.tau_plus) == (prob, a, 0.5, tau)
    assert raw["data"] == {"name": dataset, "root": f"data/{dataset}", "batch_size": batch}
    optim = raw["optim"]
    assert (optim["name"], optim["lr"], optim["schedule"], optim["step_size"], optim["gamma"],
            optim["min_lr"], optim["weight_decay"]) == ("adam", 1e-4, "step", 20, 0.9, 1e-5, 0.0)
    assert raw["train"]["epochs"] == epochs and raw["train"]["seed"] == 1
    assert raw["eval"]["protocol"] == "map_at_k" and raw["eval"]["ks"] == [5, 10, 20, 40, 60, 80, 100]
    assert raw["eval"]["batch_size"] == 128
    assert raw["name"] == f"conmh-{dataset}-{bits}"
    assert dataset in DATASETS.names()
    exp = build_experiment(raw)
    assert exp.model.bits == bits and exp.data.batch_size == batch


# --------------------------------------------------------------------------- official checkpoints


def official_state_dict(cfg: ConMHConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the official ConMH names and shapes (model/conmh.py, class Transformer)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.3):
        return torch.randn(*shape, generator=g) * scale

    def block(prefix: str, dim: int, heads: int) -> dict[str, torch.Tensor]:
        inner = (dim // heads) * heads
        hidden = int(dim * cfg.mlp_ratio)
        return {
            f"{prefix}norm1.weight": 1 + r(dim, scale=0.1), f"{prefix}norm1.bias": r(dim, scale=0.1),
            f"{prefix}attn.q_bias": r(inner), f"{prefix}attn.v_bias": r(inner),
            f"{prefix}attn.qkv.weight": r(3 * inner, dim), f"{prefix}attn.proj.weight": r(dim, inner),
            f"{prefix}attn.proj.bias": r(dim), f"{prefix}norm2.weight": 1 + r(dim, scale=0.1),
            f"{prefix}norm2.bias": r(dim, scale=0.1), f"{prefix}mlp.fc1.weight": r(hidden, dim),
            f"{prefix}mlp.fc1.bias": r(hidden), f"{prefix}mlp.fc2.weight": r(dim, hidden),
            f"{prefix}mlp.fc2.bias": r(dim),
        }

    h, d, b, f = cfg.hidden_size, cfg.decoder_dim, cfg.bits, cfg.feature_dim
    sd = {"encoder.patch_embed.weight": r(h, f), "encoder.patch_embed.bias": r(h)}
    for i in range(cfg.depth):
        sd.update(block(f"encoder.blocks.{i}.", h, cfg.heads))
    sd.update({"encoder.norm.weight": 1 + r(h, scale=0.1), "encoder.norm.bias": r(h, scale=0.1),
               "encoder.head.weight": r(h, h), "encoder.head.bias": r(h)})
    for i in range(cfg.decoder_depth):
        sd.update(block(f"decoder.blocks.{i}.", d, cfg.decoder_heads))
    sd.update({"decoder.norm.weight": 1 + r(d, scale=0.1), "decoder.norm.bias": r(d, scale=0.1),
               "decoder.head.weight": r(f, d), "decoder.head.bias": r(f),
               "encoder_to_decoder.weight": r(d, b), "mask_token": r(1, 1, d, scale=0.02),
               "binary.weight": r(b, h), "binary.bias": r(b),
               "ln.weight": 1 + r(b, scale=0.1), "ln.bias": r(b, scale=0.1)})
    return sd


def _sinusoid(n: int, dim: int) -> torch.Tensor:
    table = np.array([[p / 10000 ** (2 * (j // 2) / dim) for j in range(dim)] for p in range(n)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)


def _ref_block(x: torch.Tensor, sd: dict, p: str, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    inner = sd[p + "attn.q_bias"].numel()
    hd = inner // heads
    h = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
    qkv = h @ sd[p + "attn.qkv.weight"].T + torch.cat([sd[p + "attn.q_bias"], torch.zeros(inner),
                                                       sd[p + "attn.v_bias"]])
    q, k, v = (qkv[..., i * inner:(i + 1) * inner].reshape(b, n, heads, hd).transpose(1, 2) for i in range(3))
    att = torch.softmax((q * hd ** -0.5) @ k.transpose(-1, -2), dim=-1)
    x = x + (att @ v).transpose(1, 2).reshape(b, n, inner) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
    h = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
    return x + F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]) @ sd[p + "mlp.fc2.weight"].T \
        + sd[p + "mlp.fc2.bias"]


def _ref_codes(sd: dict, cfg: ConMHConfig, x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """The official encoder + hash layer with a boolean mask (True = masked), computed by hand."""
    b, t, _ = x.shape
    h = x @ sd["encoder.patch_embed.weight"].T + sd["encoder.patch_embed.bias"] + _sinusoid(t, cfg.hidden_size)
    h = h[~masked].reshape(b, -1, cfg.hidden_size)
    for i in range(cfg.depth):
        h = _ref_block(h, sd, f"encoder.blocks.{i}.", cfg.heads)
    h = F.layer_norm(h, (cfg.hidden_size,), sd["encoder.norm.weight"], sd["encoder.norm.bias"], 1e-6)
    h = h @ sd["encoder.head.weight"].T + sd["encoder.head.bias"]
    h = h @ sd["binary.weight"].T + sd["binary.bias"]
    h = F.layer_norm(h, (cfg.bits,), sd["ln.weight"], sd["ln.bias"], 1e-5)
    return 2 * torch.round(torch.clamp((h + 1) / 2, 0, 1)) - 1


def _ref_decode(sd: dict, cfg: ConMHConfig, codes: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    b, t = masked.shape
    d = cfg.decoder_dim
    pos = _sinusoid(t, d).expand(b, -1, -1)
    vis = codes @ sd["encoder_to_decoder.weight"].T + pos[~masked].reshape(b, -1, d)
    hid = sd["mask_token"] + pos[masked].reshape(b, -1, d)
    z = torch.cat([vis, hid], dim=1)
    for i in range(cfg.decoder_depth):
        z = _ref_block(z, sd, f"decoder.blocks.{i}.", cfg.decoder_heads)
    z = F.layer_norm(z[:, vis.shape[1]:], (d,), sd["decoder.norm.weight"], sd["decoder.norm.bias"], 1e-6)
    return z @ sd["decoder.head.weight"].T + sd["decoder.head.bias"]


def _save_official(path: Path, sd: dict, data_parallel: bool = True, with_optimizer: bool = False) -> Path:
    weights = {("module." + k if data_parallel else k): v for k, v in sd.items()}
    obj = {"model_state_dict": weights}
    if with_optimizer:  # the layout of the official model.pth (last epoch, resumable)
        obj.update(epoch=804, optimizer_state_dict={"state": {0: {"step": torch.tensor(3.0)}},
                                                    "param_groups": [{"lr": 1e-5, "params": [0]}]})
    torch.save(obj, path)
    return path


def test_converter_is_registered_and_maps_every_name():
    cfg = tiny_cfg()
    sd = official_state_dict(cfg)
    ours = convert_state_dict("conmh", sd)
    model = ConMH(cfg)
    assert "conmh" in CONVERTERS
    assert set(ours) == set(model.state_dict())
    assert ours["hash_fc.weight"] is sd["binary.weight"]
    assert ours["decoder_pred.bias"] is sd["decoder.head.bias"]


@pytest.mark.parametrize("data_parallel,with_optimizer", [(True, False), (False, True)])
def test_load_official_gives_the_reference_outputs(tmp_path, data_parallel, with_optimizer):
    cfg = tiny_cfg()
    sd = official_state_dict(cfg, seed=4)
    path = _save_official(tmp_path / "fcv_8.pth", sd, data_parallel, with_optimizer)
    model = load_official(path, cfg)
    torch.manual_seed(9)
    x = torch.randn(6, 8, 16)
    # retrieval codes: no masking, sign of the mean over all frames
    ref_frames = _ref_codes(sd, cfg, x, torch.zeros(6, 8, dtype=torch.bool))
    assert torch.equal(model.frame_codes(x), ref_frames)
    assert torch.equal(model.encode({"feats": x}), torch.sign(ref_frames.mean(1)))
    # training forward with a reference boolean mask
    mask = random_mask(6, 8, 2)
    masked = mask.as_bool()
    ref = _ref_codes(sd, cfg, x, masked)
    pred, codes = model(x, mask)
    assert torch.equal(codes, ref)
    torch.testing.assert_close(pred, _ref_decode(sd, cfg, ref, masked), rtol=1e-4, atol=1e-4)


def test_load_official_rejects_mismatches(tmp_path):
    cfg = tiny_cfg()
    sd = official_state_dict(cfg)
    with pytest.raises(FileFormatError, match="binary|hash_fc|shape"):
        load_official(_save_official(tmp_path / "a.pth", sd), tiny_cfg(bits=16))
    partial = {k: v for k, v in sd.items() if k != "ln.bias"}
    with pytest.raises(FileFormatError, match="missing"):
        load_official(_save_official(tmp_path / "b.pth", partial), cfg)
    extra = dict(sd, **{"encoder.pos_embed": torch.zeros(1, 8, 24)})
    with pytest.raises(FileFormatError, match="encoder.pos_embed"):
        load_official(_save_official(tmp_path / "c.pth", extra), cfg)
    with pytest.raises(FileFormatError, match="does not exist"):
        load_official(tmp_path / "missing.pth", cfg)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FileFormatError, match="weights-only"):
        read_checkpoint(tmp_path / "junk.pth")


class _Payload:
    """An arbitrary object: a weights-only load must refuse to unpickle it."""


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "extra": _Payload()}, path)
    with pytest.raises(FileFormatError, match="weights-only"):
        read_checkpoint(path)


def test_unwrap_checkpoint_layouts():
    w = {"a.weight": torch.zeros(2)}
    assert unwrap_checkpoint(w) == w
    assert unwrap_checkpoint({"state_dict": {"module.a.weight": w["a.weight"]}}) == w
    with pytest.raises(FileFormatError, match="no state dict"):
        unwrap_checkpoint({"epoch": 3})
    with pytest.raises(FileFormatError):
        unwrap_checkpoint([1, 2])
    with pytest.raises(InputError, match="no converter"):
        convert_state_dict("nope", w)


def test_features_are_what_the_codes_binarise():
    """``features()`` is the public float view the diagnostics probe; it must stay the encoder's own."""
    model = tiny_model().eval()
    x = torch.randn(3, 6, model.cfg.feature_dim)
    out = model.features({"feats": x})
    assert out["encoder_output"].shape == (3, 6, model.cfg.hidden_size)
    assert out["pre_sign_code"].shape == (3, 6, model.bits)
    torch.testing.assert_close(torch.where(out["pre_sign_code"] > 0, 1.0, -1.0), model.frame_codes(x), rtol=0, atol=0)
    torch.testing.assert_close(torch.sign(torch.where(out["pre_sign_code"] > 0, 1.0, -1.0).mean(1)),
                               model.encode({"feats": x}), rtol=0, atol=0)
    # the pre-sign code is the hash layer applied to the encoder output
    torch.testing.assert_close(model.hash_norm(model.hash_fc(out["encoder_output"])), out["pre_sign_code"])
    with pytest.raises(InputError):
        model.features({"feats": torch.randn(3, 6, model.cfg.feature_dim + 1)})
