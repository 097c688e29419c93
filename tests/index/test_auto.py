"""The self-tuning ``auto`` index: it measures on held-out training codes, records what it measured,
keeps it in the file, maps per-call ``recall=`` onto the curve, and refuses bad input clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bitseek.codes.synthetic import ClusteredCodes
from bitseek.errors import ConfigError, InputError
from bitseek.eval.ann import distance_recall
from bitseek.index import IndexFileError, IndexNotTrainedError, load_index, make_index
from bitseek.index.persist import read_index_file, write_index_file

POP = ClusteredCodes(bits=64, clusters=256, spread=0.7, seed=1)


@pytest.fixture(scope="module")
def tuned():
    x = POP.sample(40_000)
    index = make_index("auto", bits=64, target_recall=0.95)
    index.train(x)
    index.add(x)
    return index, x


def _truth(x: np.ndarray, q: np.ndarray, k: int):
    exact = make_index("flat", bits=64)
    exact.add(x)
    return exact.search(q, k)


def test_tunes_ivf_and_records_what_it_measured(tuned):
    index, x = tuned
    t = index.tuning
    assert index.chosen == t["chosen"] and t["chosen"].startswith("ivf")
    assert t["recall"] >= 0.95 and t["k"] == 100
    assert t["tune_queries"] + t["tune_codes"] == len(x) and t["train_codes"] == len(x)
    # the chosen nprobe is the first on the measured curve to reach the target
    curve = t["curve"]
    first = next(p for p in curve if p["recall"] >= 0.95 and (p["speedup"] > 1 or 8 * p["nprobe"] <= t["nlist"]))
    assert index.chosen == f"ivf{t['nlist']},nprobe={first['nprobe']}"
    # and on fresh queries from the same population the full index does about as well
    q = POP.sample(300, stream=7)
    td, ti = _truth(x, q, 100)
    d, i = index.search(q, 100)
    assert distance_recall(d, i, td, ti) >= 0.93


def test_per_call_recall_maps_onto_the_curve(tuned):
    index, x = tuned
    q = POP.sample(200, stream=8)
    td, ti = _truth(x, q, 100)
    low = index.nprobe_for(0.5)
    assert low is not None and low < index.nprobe_for(0.95)
    assert index.nprobe_for(1.0) in (p["nprobe"] for p in index.tuning["curve"]) or index.nprobe_for(1.0) == index.tuning["nlist"]
    r_low = distance_recall(*index.search(q, 100, recall=0.5), td, ti)
    r_high = distance_recall(*index.search(q, 100, recall=0.999), td, ti)
    assert r_low < r_high and r_high >= 0.99
    with pytest.raises(ConfigError, match="recall"):
        index.search(q, 10, recall=1.5)
    with pytest.raises(ConfigError, match="not both"):
        index.search(q, 10, recall=0.9, nprobe=4)


def test_save_load_keeps_tuning_and_checks_it(tuned, tmp_path):
    index, x = tuned
    path = tmp_path / "auto.bsi"
    index.save(path)
    back = load_index(path)
    assert back.tuning == json.loads(json.dumps(index.tuning)) and back.chosen == index.chosen
    q = POP.sample(50, stream=9)
    for got, want in zip(back.search(q, 10, recall=0.9), index.search(q, 10, recall=0.9)):
        np.testing.assert_array_equal(got, want)
    mapped = load_index(path, mmap=True)  # the inner ivf engine searched from the file
    assert mapped.engine == "auto" and mapped._inner.memory_mapped and mapped.tuning == back.tuning
    for got, want in zip(mapped.search(q, 10, recall=0.9), index.search(q, 10, recall=0.9)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InputError, match="read-only"):
        mapped.save(tmp_path / "again.bsi")
    header, sections = read_index_file(path)
    body = [(name, sections[name]) for name, _ in header.pop("sections")]

    def crafted(**change):
        h = json.loads(json.dumps(header))
        for key, value in change.items():
            h["tuning"][key] = value
        p = tmp_path / "crafted.bsi"
        write_index_file(p, h, body)  # a valid checksum: only the recorded parameters are wrong
        return p

    for mmap in (False, True):
        with pytest.raises(IndexFileError, match="tuning record says"):
            load_index(crafted(chosen="ivf4096,nprobe=8"), mmap=mmap)
    with pytest.raises(IndexFileError, match="nlist"):
        load_index(crafted(nlist=index.tuning["nlist"] * 2))
    with pytest.raises(IndexFileError, match="not on the recorded recall curve"):
        load_index(crafted(curve=[]))


def test_small_sets_get_the_exact_scan():
    x = POP.sample(2000)
    index = make_index("auto", bits=64)
    index.train(x)
    assert index.chosen == "flat" and index.exact and index.tuning["recall"] == 1.0


def test_bad_input():
    for bad in (0, 1.5, -0.1, "x", float("nan")):
        with pytest.raises(ConfigError, match=r"target_recall must be"):
            make_index("auto", bits=64, target_recall=bad)
    with pytest.raises(ConfigError, match="target_recall must be"):
        make_index("auto,target_recall=2", bits=64)
    with pytest.raises(ConfigError, match="needs the 'auto' spec"):
        make_index("flat", bits=64, target_recall=0.9)
    index = make_index("auto", bits=64)
    with pytest.raises(InputError, match="too few to tune"):
        index.train(POP.sample(300))
    with pytest.raises(IndexNotTrainedError, match="train"):
        index.search(POP.sample(2), 5)
    with pytest.raises(IndexNotTrainedError, match="train"):
        index.add(POP.sample(2))
