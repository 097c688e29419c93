"""Shallow baselines: LSH, PCAH, ITQ, SH — algebraic properties, contracts, persistence, retrieval."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from bitseek.data.h5features import H5Shards
from bitseek.errors import InputError
from bitseek.models.shallow import ITQ, ShallowHash
from bitseek.models.shallow.base import moments as _moments
from bitseek.registry import create_model
from bitseek.train.checkpoint import load_model, save_model


def clustered(n_per: int = 60, classes: int = 8, dim: int = 48, noise: float = 1.2, seed: int = 0):
    """Gaussian clusters around random centres; labels = cluster ids."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 2.0
    y = np.repeat(np.arange(classes), n_per)
    x = centres[y] + noise * rng.standard_normal((y.size, dim))
    perm = rng.permutation(y.size)
    return x[perm].astype(np.float32), y[perm]


def map_at_k(q: np.ndarray, db: np.ndarray, yq: np.ndarray, ydb: np.ndarray, k: int) -> float:
    """Divide-by-K mAP@K on Hamming ranking (stable ties), written out independently of bitseek.eval."""
    dist = 0.5 * (q.shape[1] - q @ db.T)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    rel = (ydb[order] == yq[:, None]).astype(float)
    hits = np.cumsum(rel, axis=1)
    return float(((rel * hits / np.arange(1, k + 1)).sum(1) / k).mean())


@pytest.mark.parametrize("name", ["lsh", "pcah", "itq", "sh"])
def test_encode_contract(name):
    x, _ = clustered()
    jitter = np.random.default_rng(1).standard_normal((x.shape[0], 3, x.shape[1])).astype(np.float32)
    frames = np.repeat(x[:, None], 3, axis=1) + 0.1 * jitter
    m = create_model(name, bits=16, seed=2)
    with pytest.raises(InputError, match="before fit"):
        m.encode({"feats": frames[:2]})
    assert m.fit(frames) is m and m.fitted and m.feature_dim == 48
    codes_np = m.encode({"feats": frames[:20]})
    codes_t = m.encode({"feats": torch.from_numpy(frames[:20])})
    assert isinstance(codes_np, np.ndarray) and isinstance(codes_t, torch.Tensor)
    assert codes_np.dtype == np.float32 and codes_t.dtype == torch.float32 and codes_np.shape == (20, 16)
    assert set(np.unique(codes_np)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(codes_t.numpy(), codes_np)
    np.testing.assert_array_equal(m.encode({"feats": frames[:20].mean(1)}), codes_np)  # frames are mean-pooled
    with pytest.raises(InputError, match="fitted on 48-d"):
        m.encode({"feats": frames[:2, :, :10]})
    with pytest.raises(InputError, match="NaN"):
        m.encode({"feats": np.full((1, 48), np.nan, np.float32)})


def test_itq_rotation_is_orthogonal_and_loss_never_increases():
    x, _ = clustered()
    m = create_model("itq", bits=16, seed=0).fit(x)
    r = m.rotation
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-10)
    loss = np.array(m.loss_history)
    assert loss.size == 50
    assert (np.diff(loss) <= 1e-9 * loss[0]).all()
    assert loss[-1] < loss[0]
    assert m.quantization_loss(x) == pytest.approx(loss[-1], rel=1e-4)


def test_pcah_codes_are_balanced_and_directions_deterministic():
    x = np.random.default_rng(0).standard_normal((2000, 32)) @ np.diag(np.linspace(3, 0.5, 32))
    a = create_model("pcah", bits=16).fit(x)
    b = create_model("pcah", bits=16, seed=99).fit(x)  # PCA ignores the seed
    np.testing.assert_array_equal(a.state["proj"], b.state["proj"])
    codes = a.encode({"feats": x})
    assert np.abs(codes.mean(axis=0)).max() < 0.1
    # directions come out in decreasing variance
    var = ((x - x.mean(0)) @ a.state["proj"].astype(np.float64)).var(axis=0)
    assert (np.diff(var) <= 1e-9).all()


def test_lsh_is_deterministic_by_seed():
    x, _ = clustered()
    c1 = create_model("lsh", bits=32, seed=5).fit(x).encode({"feats": x})
    c2 = create_model("lsh", bits=32, seed=5).fit(x).encode({"feats": x})
    c3 = create_model("lsh", bits=32, seed=6).fit(x).encode({"feats": x})
    np.testing.assert_array_equal(c1, c2)
    assert (c1 != c3).mean() > 0.2


def test_itq_beats_lsh_on_clustered_data():
    x, y = clustered(n_per=80, classes=10, dim=64, noise=1.5)
    q, yq, db, ydb = x[:150], y[:150], x[150:], y[150:]
    scores = {}
    for name in ("lsh", "itq"):
        m = create_model(name, bits=16, seed=0).fit(db)
        scores[name] = map_at_k(m.encode({"feats": q}), m.encode({"feats": db}), yq, ydb, 50)
    assert scores["itq"] > scores["lsh"] + 0.05, scores


def test_spectral_hashing_modes():
    x = np.random.default_rng(3).standard_normal((500, 6)) * np.array([4.0, 2, 1, 1, 0.5, 0.5])
    m = create_model("sh", bits=12).fit(x)  # more bits than dimensions: several modes per direction
    st = m.state
    eig = (st["freqs"].astype(np.float64) / st["span"][st["dims"]]) ** 2
    assert (np.diff(eig) >= -1e-12).all()  # lowest-frequency eigenfunctions first
    assert st["dims"][0] == 0 and st["freqs"][0] == 1  # the widest direction's first mode
    codes = m.encode({"feats": x})
    assert codes.shape == (500, 12) and set(np.unique(codes)) <= {-1.0, 1.0}


def test_streaming_fit_from_h5_equals_in_memory_fit(tmp_path):
    x = np.random.default_rng(0).standard_normal((300, 4, 20)).astype(np.float32) + 3.0
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("feats", data=x)
    n, mean, cov = _moments(H5Shards([tmp_path / "f.h5"]))
    pooled = x.astype(np.float64).mean(1)
    assert n == 300
    np.testing.assert_allclose(mean, pooled.mean(0), atol=1e-10)
    np.testing.assert_allclose(cov, np.cov(pooled, rowvar=False), atol=1e-10)
    a = create_model("itq", bits=8).fit(H5Shards([tmp_path / "f.h5"]))
    b = create_model("itq", bits=8).fit(x)
    np.testing.assert_allclose(a.state["proj"], b.state["proj"], atol=1e-5)


@pytest.mark.parametrize("name", ["lsh", "itq", "sh"])
def test_save_and_load_roundtrip(tmp_path, name):
    x, _ = clustered()
    m = create_model(name, bits=16, seed=1).fit(x)
    with pytest.raises(InputError, match="before fit"):
        save_model(tmp_path / "nothing", create_model(name, bits=16), create_model(name, bits=16).cfg)
    save_model(tmp_path / name, m, m.cfg)
    for loaded in (load_model(tmp_path / name),):
        assert type(loaded) is type(m) and loaded.cfg.feature_dim == 48
        np.testing.assert_array_equal(loaded.encode({"feats": x}), m.encode({"feats": x}))


def test_bad_fit_inputs():
    with pytest.raises(InputError, match="16 bits need at least 16 feature dimensions"):
        create_model("pcah", bits=16).fit(np.ones((100, 8)))
    with pytest.raises(InputError, match="at least 2"):
        create_model("itq", bits=2).fit(np.ones((1, 8)))
    with pytest.raises(InputError, match="NaN"):
        create_model("lsh", bits=8).fit(np.full((4, 8), np.nan))
    with pytest.raises(InputError, match=r"\(N, D\), \(N, T, D\) or \(N, C, H, W\)"):
        create_model("lsh", bits=8).fit(np.ones(8))
    assert isinstance(create_model("itq"), ITQ) and create_model("itq").iterations == 50
