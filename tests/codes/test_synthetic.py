"""The clustered-code generator: deterministic streaming, and statistics that match learned codes."""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.codes import pack
from bitseek.codes.synthetic import BLOCK, ClusteredCodes, code_statistics, compare_statistics, fit_clustered
from bitseek.errors import InputError


@pytest.fixture(scope="module")
def itq_codes() -> np.ndarray:
    """32-bit ITQ codes of scikit-learn's 1,797 real 8x8 digits: small learned codes with structure."""
    from sklearn.datasets import load_digits

    from bitseek.models.shallow.itq import ITQ, ITQConfig

    x = load_digits().data.astype(np.float32)
    return pack(ITQ(ITQConfig(name="itq", bits=32)).fit(x).encode(x))


def test_chunks_equal_one_sample_and_streams_differ() -> None:
    m = ClusteredCodes(bits=64, clusters=50, spread=0.5, seed=3)
    n = BLOCK + 1000  # crosses a block boundary
    whole = m.sample(n)
    assert whole.shape == (n, 8) and whole.dtype == np.uint8
    assert np.array_equal(np.concatenate(list(m.iter_chunks(n, chunk=7777))), whole)
    assert np.array_equal(m.rows(BLOCK - 5, BLOCK + 5), whole[BLOCK - 5 : BLOCK + 5])
    assert np.array_equal(ClusteredCodes(bits=64, clusters=50, spread=0.5, seed=3).sample(100), whole[:100])
    assert not np.array_equal(m.sample(100, stream=1), whole[:100])


def test_write_npy_roundtrip(tmp_path) -> None:
    m = ClusteredCodes(bits=16, clusters=8, seed=1)
    path = m.write_npy(tmp_path / "c.npy", 3000)
    assert np.array_equal(np.load(path), m.sample(3000))


def test_clusters_give_near_neighbours_random_codes_lack() -> None:
    clustered = code_statistics(ClusteredCodes(bits=64, clusters=64, spread=0.4).sample(5000), probes=200)
    uniform = code_statistics(np.random.default_rng(0).integers(0, 256, (5000, 8), dtype=np.uint8), probes=200)
    assert np.median(clustered["nn1"]) + 6 < np.median(uniform["nn1"])
    assert np.abs(clustered["balance"] - 0.5).max() < 0.05  # balanced bits by default


def test_fit_matches_learned_code_statistics(itq_codes: np.ndarray) -> None:
    model, record = fit_clustered(itq_codes, clusters=(16, 64, 256), spreads=(0.35, 0.7, 1.4), probes=300)
    ref = code_statistics(itq_codes, probes=300)
    got = compare_statistics(ref, code_statistics(model.sample(len(itq_codes), stream=5), probes=300))
    assert got["balance_max_abs"] < 0.05
    assert got["correlation_rmse"] < 0.06  # two samples of 1,797 codes alone differ by ~0.033
    assert got["nn1_w1"] < 1.5 and got["nn10_w1"] < 1.5 and got["pairs_w1"] < 1.5
    # and an unfitted generator is measurably further away: the test can fail
    plain = compare_statistics(ref, code_statistics(ClusteredCodes(bits=32, clusters=4096, spread=2.0).sample(len(itq_codes)), probes=300))
    assert plain["correlation_rmse"] > 2 * got["correlation_rmse"]
    assert plain["nn1_w1"] > 2 * got["nn1_w1"]
    assert record["chosen"]["clusters"] in (16, 64, 256)


def test_bad_parameters() -> None:
    with pytest.raises(InputError, match="bits"):
        ClusteredCodes(bits=12)
    with pytest.raises(InputError, match="spread"):
        ClusteredCodes(spread=0)
    with pytest.raises(InputError, match="balance"):
        ClusteredCodes(bits=8, balance=(0.5,) * 7)
    with pytest.raises(InputError, match="200 reference"):
        fit_clustered(np.zeros((50, 8), np.uint8))
