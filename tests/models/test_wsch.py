"""WSCH: shapes, losses per phase, the k-means cycle, checkpoints/resume and released-weight import."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

import bitseek.models.wsch as wsch_mod
from bitseek.config import ExperimentConfig, OptimConfig, TrainConfig, from_dict, load_config, load_yaml
from bitseek.data.base import RetrievalData
from bitseek.errors import ConfigError, FileFormatError, InputError
from bitseek.models.base import EpochContext
from bitseek.models.convert import convert_state_dict, load_official
from bitseek.models.layers.ssd import ssd_reference
from bitseek.models.masking import FrameMask
from bitseek.models.wsch import WSCH, WSCHConfig, config_from_official, convert_official
from bitseek.registry import DATASETS, create_model
from bitseek.train import Trainer
from bitseek.train.checkpoint import load_model, save_model

torch.set_num_threads(1)

TINY = dict(bits=16, feature_dim=24, max_frames=10, hidden_size=32, decoder_size=32, headdim=16, d_state=4,
            heads=4, n_clusters=6, pretrain_epochs=1, kmeans_niter=5)


def tiny(**kw) -> WSCH:
    torch.manual_seed(0)
    return WSCH(WSCHConfig(**{**TINY, **kw}))


class Feats(Dataset):
    def __init__(self, n: int = 12, t: int = 10, d: int = 24, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        centres = torch.randn(3, d, generator=gen) * 2
        self.x = centres[torch.arange(n) % 3][:, None, :] + torch.randn(n, t, d, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"feats": self.x[i], "index": i}


def fake_ctx(data: Dataset, batch_size: int = 5) -> EpochContext:
    return EpochContext(torch.device("cpu"), lambda shuffle=False: iter(DataLoader(data, batch_size, shuffle=False)))


# ------------------------------------------------------------------ config and model


def test_config_defaults_are_the_reference_values():
    c = WSCHConfig()
    assert (c.name, c.hidden_size, c.decoder_size, c.d_state, c.headdim, c.chunk_size, c.heads) == (
        "wsch", 1024, 1024, 64, 128, 0, 4)
    assert (c.p1, c.p2, c.a, c.b, c.clus_temperature, c.n_clusters, c.temperature, c.tau_plus) == (
        0.9, 0.6, 0.02, 1.0, 0.2, 800, 0.5, 0.1)
    assert c.pretrain_epochs == 100


@pytest.mark.parametrize("bad, match", [
    ({"p1": 1.0}, "p1"), ({"p2": 0.0}, "p2"), ({"headdim": 24}, "headdim"), ({"heads": 5}, "heads"),
    ({"bits": 0}, "bits"), ({"tau_plus": 1.0}, "tau_plus"), ({"max_frames": 1}, "p1"),
])
def test_config_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        WSCH(WSCHConfig(**{**TINY, **bad}))


def test_yaml_section_rejects_unknown_key():
    raw = {"name": "x", "model": {"name": "wsch", "clus_temprature": 0.2}, "data": {"name": "toy-data"}}
    with pytest.raises(ConfigError, match="clus_temperature"):
        load_config(raw=raw)


def test_forward_shapes_and_codes():
    model = tiny()
    x = Feats(4).x
    assert isinstance(create_model("wsch", **TINY), WSCH)
    codes = model.encode({"feats": x})
    assert codes.shape == (4, 16) and set(codes.unique().tolist()) <= {-1.0, 0.0, 1.0}
    mask = FrameMask(torch.tensor([[0, 3, 7]] * 4), torch.tensor([[1, 2, 4, 5, 6, 8, 9]] * 4))
    recon, z = model(x, mask)
    assert recon.shape == (4, 7, 24)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    # no positions in the decoder: every masked slot of a video gets the same prediction (reference behaviour)
    torch.testing.assert_close(recon, recon[:, :1].expand_as(recon))
    with pytest.raises(InputError, match="feats"):
        model.encode({"feats": torch.randn(2, 10, 23)})
    with pytest.raises(InputError, match="frames"):
        model.encode({"feats": torch.randn(2, 9, 24)})


def test_phases_switch_by_epoch():
    model = tiny(pretrain_epochs=3)
    assert [model.epoch_phases(e) for e in (0, 2, 3, 50)] == [["recon"], ["recon"], ["cluster", "contrastive"],
                                                             ["cluster", "contrastive"]]


def test_training_step_losses_per_phase():
    model = tiny()
    batch = {"feats": Feats(6).x}
    out = model.training_step(batch, "recon")
    assert set(out) == {"loss", "recon"} and torch.equal(out["loss"].detach(), out["recon"])
    assert 0.0 <= float(out["recon"]) <= 4.0  # two views of 1 - cos
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.zero_grad()
    out = model.training_step(batch, "contrastive")
    torch.testing.assert_close(out["loss"], out["recon"] + model.cfg.b * out["contrastive"])
    with pytest.raises(InputError, match="cluster centres"):
        model.training_step(batch, "cluster")
    model.update_clusters(fake_ctx(Feats(6)))
    out = model.training_step(batch, "cluster")
    torch.testing.assert_close(out["loss"], out["recon"] + model.cfg.a * out["cluster"])
    assert math.isfinite(float(out["loss"].detach()))
    with pytest.raises(InputError, match="unknown phase"):
        model.training_step(batch, "train")


# ------------------------------------------------------------------ the k-means cycle


def test_before_epoch_clusters_after_pretraining_and_warm_starts(monkeypatch):
    model = tiny()
    data = Feats(12)
    seen: list[np.ndarray | None] = []
    real = wsch_mod.kmeans

    def spy(x, k, **kw):
        seen.append(None if kw.get("init") is None else kw["init"].copy())
        assert x.shape == (24, 16) and set(np.unique(x)) <= {-1.0, 0.0, 1.0}  # 2N sign vectors
        return real(x, k, **kw)

    monkeypatch.setattr(wsch_mod, "kmeans", spy)
    model.before_epoch(0, fake_ctx(data))  # pretraining epoch: nothing
    assert not seen and model.active_clusters == 0 and not model.cluster_centers.any()
    model.before_epoch(1, fake_ctx(data))
    first = model.cluster_centers.clone()
    assert seen == [None] and model.active_clusters == 6 and int(model.cluster_count) == 6
    assert first.abs().sum() > 0 and set(first.unique().tolist()) <= {-1.0, 0.0, 1.0}
    with torch.no_grad():  # move the encoder so the codes, hence the centres, change
        model.hash.proj.bias.add_(torch.linspace(-2, 2, 16))
    model.before_epoch(2, fake_ctx(data))
    assert len(seen) == 2 and np.array_equal(seen[1], first.numpy())  # warm start from the previous centres
    assert not torch.equal(model.cluster_centers, first)


def test_kmeans_deterministic_given_seed():
    data = Feats(12)
    results = []
    for _ in range(2):
        model = tiny()
        torch.manual_seed(123)
        model.update_clusters(fake_ctx(data))
        results.append(model.cluster_centers.clone())
    assert torch.equal(results[0], results[1])


def test_update_clusters_inside_a_process_group(tmp_path):
    """The DDP path (gather codes, cluster on rank 0, broadcast) gives the single-process centres."""
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    data = Feats(12)
    ref = tiny()
    torch.manual_seed(7)
    ref.update_clusters(fake_ctx(data))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = tiny()
        torch.manual_seed(7)
        model.update_clusters(fake_ctx(data))
    finally:
        dist.destroy_process_group()
    assert torch.equal(model.cluster_centers, ref.cluster_centers) and model.active_clusters == 6


def test_n_clusters_is_clamped_to_the_number_of_codes():
    model = tiny(n_clusters=40)
    with pytest.warns(UserWarning, match="clustering into 16 centres"):
        model.update_clusters(fake_ctx(Feats(8)))
    assert model.active_clusters == 16 and int(model.cluster_count) == 16
    assert not model.cluster_centers[16:].any()
    out = model.training_step({"feats": Feats(8).x}, "cluster")
    assert math.isfinite(float(out["cluster"]))


def test_tiny_cycle_through_the_phases():
    model = tiny(pretrain_epochs=1)
    data = Feats(12)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    history, centres = [], []
    for epoch in range(3):
        model.before_epoch(epoch, fake_ctx(data, batch_size=6))
        if epoch >= 1:
            centres.append(model.cluster_centers.clone())
        for phase in model.epoch_phases(epoch):
            for batch in DataLoader(data, batch_size=6, shuffle=True):
                out = model.training_step(batch, phase)
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
                history.append((epoch, phase, float(out["loss"].detach())))
    assert [h[:2] for h in history[::2]] == [(0, "recon"), (1, "cluster"), (1, "contrastive"),
                                             (2, "cluster"), (2, "contrastive")]
    assert all(math.isfinite(h[2]) for h in history)
    assert not torch.equal(centres[0], centres[1])


# ------------------------------------------------------------------ checkpoints and resume


def test_state_dict_round_trip_keeps_centres(tmp_path):
    model = tiny()
    model.update_clusters(fake_ctx(Feats(12)))
    fresh = tiny()
    assert fresh.active_clusters == 0
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.cluster_centers, model.cluster_centers) and fresh.active_clusters == 6
    save_model(tmp_path / "ck", model, model.cfg)
    loaded = load_model(tmp_path / "ck")
    assert isinstance(loaded, WSCH) and loaded.active_clusters == 6
    assert torch.equal(loaded.cluster_centers, model.cluster_centers)
    x = {"feats": Feats(3).x}
    assert torch.equal(loaded.encode(x), model.encode(x))


@dataclass
class _DataCfg:
    name: str = "inline"
    root: str = ""
    batch_size: int = 6


def _fit(out_dir, epochs: int) -> WSCH:
    cfg = ExperimentConfig(
        name="wsch-tiny", model=WSCHConfig(**TINY), data=_DataCfg(),
        optim=OptimConfig(name="adam", lr=3e-3, schedule="none"),
        train=TrainConfig(epochs=epochs, seed=3346, out_dir=str(out_dir), progress=False, log_every=100,
                          device="cpu"))
    data = Feats(12)
    torch.manual_seed(0)
    model = create_model(cfg.model)
    Trainer(model, cfg, RetrievalData(data, data, None, np.zeros(12), None)).fit()
    return model


def test_resume_mid_cycle_equals_uninterrupted(tmp_path):
    full = _fit(tmp_path / "full", 3)
    _fit(tmp_path / "part", 2)  # stops after the first main-stage epoch, centres in the checkpoint
    resumed = _fit(tmp_path / "part", 3)
    log = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if r["event"] == "resume"] == [2]  # really resumed, not retrained
    assert [r["epoch"] for r in log if r["event"] == "epoch"] == [0, 1, 2]
    assert resumed.active_clusters == 6
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


# ------------------------------------------------------------------ released checkpoints

H, D, BITS, HD, NC, DS = 32, 24, 16, 16, 6, 4


def official_shapes() -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the reference ``WSCH`` module (anon271/WSCH model.py)."""
    nh = 2 * H // HD
    att = lambda p, d: {f"{p}.linear_{n}.weight": (d, d) for n in "qkv"} | {  # noqa: E731
        f"{p}.linear_output.weight": (d, d), f"{p}.linear_output.bias": (d,)}
    return {
        "cluster_centers": (NC, BITS),
        "En.Norm.weight": (D,), "En.Norm.bias": (D,), "En.Norm1.weight": (H,),
        "En.in_proj.weight": (H, D), "En.expand_proj.weight": (4 * H, H), "En.conv.weight": (2 * H, 2, 4),
        "En.ssm.dt_bias": (nh,), "En.ssm.A_log": (nh,), "En.ssm.D": (nh,),
        "En.ssm.x_proj.weight": (nh + 2 * DS, 2 * H),
        "En.out_proj.weight": (H, 2 * H), "En.out_proj.bias": (H,),
        "En.norm1.weight": (H,), "En.norm1.bias": (H,), **att("En.att1", H),
        "De.mask_token": (1, 1, BITS), "De.encoder_to_decoder.weight": (H, BITS),
        "De.norm.weight": (H,), "De.norm.bias": (H,), **att("De.att", H),
        "De.out_proj.weight": (D, H), "De.out_proj.bias": (D,),
        "hash.linear.weight": (BITS, H), "hash.linear.bias": (BITS,),
        "hash.ln.weight": (BITS,), "hash.ln.bias": (BITS,),
    }


def official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=gen) * 0.3 for k, s in official_shapes().items()}
    sd["En.ssm.A_log"] = torch.rand(sd["En.ssm.A_log"].shape, generator=gen) * 2
    sd["cluster_centers"] = sd["cluster_centers"].sign()
    return sd


def _ref_attention(sd, p, x, heads=4):
    b, n, d = x.shape
    q, k, v = (F.linear(x, sd[f"{p}.linear_{c}.weight"]).view(b, n, heads, d // heads).transpose(1, 2) for c in "qkv")
    a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1) @ v
    return F.linear(a.transpose(1, 2).reshape(b, n, d), sd[f"{p}.linear_output.weight"], sd[f"{p}.linear_output.bias"])


def reference_frame_codes(sd, x):
    """The reference encoder + hash layer written out with the official tensor names (independent check)."""
    b, n, _ = x.shape
    h = F.linear(F.layer_norm(x, (D,), sd["En.Norm.weight"], sd["En.Norm.bias"]), sd["En.in_proj.weight"])
    res = h
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) * sd["En.Norm1.weight"]
    u, z = F.linear(h, sd["En.expand_proj.weight"]).chunk(2, dim=-1)
    u = F.conv1d(u.transpose(1, 2), sd["En.conv.weight"], padding=3, groups=H)[..., :n].transpose(1, 2)
    nh = sd["En.ssm.dt_bias"].shape[0]
    dt, Bm, Cm = F.linear(u, sd["En.ssm.x_proj.weight"]).split([nh, DS, DS], dim=-1)
    dt = F.softplus(dt + sd["En.ssm.dt_bias"])
    uh = u.reshape(b, n, nh, HD)
    y, _ = ssd_reference(uh, dt, -sd["En.ssm.A_log"].exp(), Bm[:, :, None], Cm[:, :, None])
    y = (y + uh * sd["En.ssm.D"][:, None]).reshape(b, n, 2 * H) * F.silu(z)
    h = F.linear(y, sd["En.out_proj.weight"], sd["En.out_proj.bias"]) + res
    h = h + _ref_attention(sd, "En.att1", F.layer_norm(h, (H,), sd["En.norm1.weight"], sd["En.norm1.bias"]))
    pre = F.layer_norm(F.linear(h, sd["hash.linear.weight"], sd["hash.linear.bias"]), (BITS,),
                       sd["hash.ln.weight"], sd["hash.ln.bias"])
    return 2 * torch.round(((pre + 1) / 2).clamp(0, 1)) - 1, h


def reference_decoder(sd, codes_visible, n_masked):
    b = codes_visible.shape[0]
    tok = torch.cat([codes_visible, sd["De.mask_token"].expand(b, n_masked, BITS)], dim=1)
    h = F.linear(tok, sd["De.encoder_to_decoder.weight"])
    h = h + _ref_attention(sd, "De.att", F.layer_norm(h, (H,), sd["De.norm.weight"], sd["De.norm.bias"]))
    return F.linear(h, sd["De.out_proj.weight"], sd["De.out_proj.bias"])[:, -n_masked:]


def test_official_checkpoint_maps_onto_model(tmp_path):
    sd = official_state()
    sizes = config_from_official(sd)
    assert sizes == {"bits": BITS, "feature_dim": D, "hidden_size": H, "decoder_size": H, "expand": 2,
                     "headdim": HD, "d_state": DS, "d_conv": 4, "n_clusters": NC}
    cfg = WSCHConfig(**{**TINY, **sizes})
    wrapped = {"berthash": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 300}  # train.py's layout
    model = WSCH(cfg)
    model.load_state_dict(convert_state_dict("wsch", wrapped), strict=True)
    assert model.active_clusters == NC and torch.equal(model.cluster_centers, sd["cluster_centers"])

    x = Feats(3).x
    want_codes, want_hidden = reference_frame_codes(sd, x)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x), want_hidden, atol=1e-4, rtol=1e-4)
        assert torch.equal(model.frame_codes(x), want_codes)
        assert torch.equal(model.encode({"feats": x}), torch.sign(want_codes.mean(1)))
        mask = FrameMask(torch.tensor([[1, 4, 8]] * 3), torch.tensor([[0, 2, 3, 5, 6, 7, 9]] * 3))
        recon, _ = model(x, mask)
        vis_codes, _ = reference_frame_codes(sd, x[:, [1, 4, 8]])
        torch.testing.assert_close(recon, reference_decoder(sd, vis_codes, 7), atol=1e-4, rtol=1e-4)

    # the file route: a weights-only .pth as the reference saves it
    path = tmp_path / "2_64.pth"
    torch.save(wrapped, path)
    loaded = load_official(path, cfg)
    assert torch.equal(loaded.encode({"feats": x}), model.encode({"feats": x}))


def test_pretraining_checkpoint_has_no_centres():
    sd = official_state()
    sd["cluster_centers"] = torch.zeros(NC, BITS)
    assert int(convert_official(sd)["cluster_count"]) == 0


def test_bad_official_checkpoints_are_named():
    sd = official_state()
    with pytest.raises(FileFormatError, match="unexpected reference keys"):
        convert_official({**sd, "En.pos_embed": torch.zeros(3)})
    del sd["De.att.linear_k.weight"]
    with pytest.raises(FileFormatError, match="linear_k"):
        convert_official(sd)
    with pytest.raises(FileFormatError, match="missing"):
        config_from_official({"hash.ln.weight": torch.zeros(4)})


# ------------------------------------------------------------------ shipped configs

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "wsch"


@pytest.mark.parametrize("dataset, dim, frames", [("fcvid", 4096, 25), ("activitynet", 2048, 30), ("yfcc", 4096, 25)])
@pytest.mark.parametrize("bits", [16, 32, 64, 128])
def test_shipped_configs(dataset, dim, frames, bits):
    path = CONFIGS / f"{dataset}-{bits}.yaml"
    raw = load_yaml(path)
    model = from_dict(WSCHConfig, raw["model"], "model")
    model.validate()
    assert (model.bits, model.feature_dim, model.max_frames) == (bits, dim, frames)
    assert raw["data"] == {"name": dataset, "root": f"data/{dataset}", "batch_size": 128}
    optim, train = from_dict(OptimConfig, raw["optim"]), from_dict(TrainConfig, raw["train"])
    assert (optim.name, optim.lr, optim.schedule) == ("adam", 1e-4, "none")
    assert (train.epochs, train.seed) == (model.pretrain_epochs + 300, 3346)
    assert dataset in DATASETS.names()
    cfg = load_config(path)
    assert cfg.model == model and cfg.name == f"wsch-{dataset}-{bits}"
