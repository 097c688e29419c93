"""Fit the clustered-code generator (``bitseek.codes.synthetic``) to learned codes and check it.

Reference: 64-bit ITQ codes of the built-in ``mnist-video`` benchmark (train + query + database
clips, 6,000 codes; ITQ fitted on the train clips, frame features mean-pooled, as the shallow
baselines do). ConMH and CSCE-Net are not fitted here: training either on the 2-core CPU costs
minutes per run, so their codes are given as files: ``--check conmh=a.codes+b.codes`` fits the
generator to each such code set as well and records the same errors (fitted vs uniform random)
under ``checked_against``; the ``model`` that ``bench_ann.py`` rebuilds stays the ITQ fit.

Writes ``benchmarks/results/synthetic_codes.json``: the reference's statistics, the fitted
parameters (balance and latent correlation included, so ``bench_ann.py`` rebuilds the same
population), the fit's per-statistic errors at the reference size, the same errors for a plain
(unfitted) generator and for uniform random codes (what "far" looks like), and the neighbour
distances the fitted population has at larger sizes.

Usage: ``python benchmarks/bench_synthetic_codes.py [--data /tmp/bitseek-data] [--out ...]
[--check NAME=CODESET[+CODESET...] ...]`` (code sets as ``bitseek encode`` writes them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.atomic import atomic_write_text
from bitseek.codes import pack
from bitseek.codes.codeset import CodeSet
from bitseek.codes.synthetic import ClusteredCodes, code_statistics, compare_statistics, fit_clustered

RESULTS = Path(__file__).resolve().parent / "results"


def itq_codes(data_dir: Path, bits: int = 64) -> np.ndarray:
    """Packed ITQ codes of every mnist-video clip (built under ``data_dir`` on first use)."""
    import h5py

    from bitseek.data.embedded.moving_mnist import build
    from bitseek.models.shallow.itq import ITQ, ITQConfig

    paths = build(data_dir / "mnist-video")
    feats = {k: h5py.File(paths[k], "r")["feats"][:] for k in ("train", "query", "database")}
    model = ITQ(ITQConfig(name="itq", bits=bits)).fit(feats["train"])
    return pack(np.concatenate([model.encode(feats[k]) for k in ("train", "query", "database")]))


def check_against(name: str, files: list[str]) -> dict[str, Any]:
    """Fit the generator to the learned codes in ``files`` (one model, same bits) and measure the fit."""
    sets = [CodeSet.load(f) for f in files]
    bits = {c.bits for c in sets}
    if len(bits) != 1:
        raise SystemExit(f"--check {name}: the code sets hold different code lengths {sorted(bits)}")
    codes = np.concatenate([c.codes for c in sets])
    ref = code_statistics(codes)
    model, _ = fit_clustered(codes)
    uniform = np.random.default_rng(0).integers(0, 256, codes.shape, dtype=np.uint8)
    return {
        "files": [str(f) for f in files], "n": int(len(codes)), "bits": int(bits.pop()),
        "reference": summary(ref),
        "chosen": {"clusters": model.describe()["clusters"], "spread": model.describe()["spread"]},
        "errors": {"fitted": compare_statistics(ref, code_statistics(model.sample(len(codes), stream=2))),
                   "uniform_random": compare_statistics(ref, code_statistics(uniform))},
    }


def summary(stats: dict[str, Any]) -> dict[str, Any]:
    off = ~np.eye(stats["correlation"].shape[0], dtype=bool)
    q = [5, 25, 50, 75, 95]
    return {
        "n": stats["n"],
        "balance_range": [float(stats["balance"].min()), float(stats["balance"].max())],
        "correlation_mean_abs": float(np.abs(stats["correlation"][off]).mean()),
        "correlation_max_abs": float(np.abs(stats["correlation"][off]).max()),
        "nn1_percentiles": dict(zip(map(str, q), np.percentile(stats["nn1"], q).tolist())),
        "nn10_percentiles": dict(zip(map(str, q), np.percentile(stats["nn10"], q).tolist())),
        "pairs_percentiles": dict(zip(map(str, q), np.percentile(stats["pairs"], q).tolist())),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/bitseek-data", help="where mnist-video is built (cached)")
    ap.add_argument("--out", default=str(RESULTS / "synthetic_codes.json"))
    ap.add_argument("--sizes", default="100000,1000000", help="population sizes whose neighbour distances to report")
    ap.add_argument("--check", action="append", default=[], metavar="NAME=CODESET[+CODESET...]",
                    help="also fit and check against these learned codes (e.g. a trained ConMH's splits)")
    args = ap.parse_args()
    checks = {}
    for spec in args.check:
        name, sep, files = spec.partition("=")
        if not sep or not name or not files:
            raise SystemExit(f"--check {spec!r}: expected NAME=CODESET[+CODESET...]")
        checks[name] = files.split("+")
    t0 = time.perf_counter()
    ref_codes = itq_codes(Path(args.data))
    ref = code_statistics(ref_codes)
    model, record = fit_clustered(ref_codes)
    fit_s = time.perf_counter() - t0
    n = len(ref_codes)
    plain = ClusteredCodes(bits=64)
    uniform = np.random.default_rng(0).integers(0, 256, (n, 8), dtype=np.uint8)
    scale = {}
    for size in (int(s) for s in args.sizes.split(",") if s):
        st = code_statistics(model.sample(size, stream=1), probes=300)
        scale[str(size)] = {k: summary(st)[k] for k in ("nn1_percentiles", "nn10_percentiles")}
    doc = {
        "what": "clustered-code generator fitted to 64-bit ITQ codes of mnist-video",
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_at_start": os.getloadavg()[0]},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reference": summary(ref),
        "fitted_sample": summary(code_statistics(model.sample(n, stream=2))),
        "errors": {
            "fitted": compare_statistics(ref, code_statistics(model.sample(n, stream=2))),
            "plain_generator": compare_statistics(ref, code_statistics(plain.sample(n))),
            "uniform_random": compare_statistics(ref, code_statistics(uniform)),
        },
        "fit_seconds": round(fit_s, 1),
        "grid": record["grid"],
        "model": {**model.describe(), "balance": list(model.balance or ()),
                  "correlation": [list(r) for r in (model.correlation or ())]},
        "population_neighbours_by_size": scale,
        "checked_against": {name: check_against(name, files) for name, files in checks.items()},
    }
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    e = doc["errors"]
    for name, row in e.items():
        print(f"{name:16s} balance {row['balance_max_abs']:.3f}  corr rmse {row['correlation_rmse']:.3f}  "
              f"nn1 W1 {row['nn1_w1']:.2f}  nn10 W1 {row['nn10_w1']:.2f}  pairs W1 {row['pairs_w1']:.2f} bits")
    for name, chk in doc["checked_against"].items():
        for kind, row in chk["errors"].items():
            print(f"{name + ' ' + kind:16s} balance {row['balance_max_abs']:.3f}  corr rmse {row['correlation_rmse']:.3f}  "
                  f"nn1 W1 {row['nn1_w1']:.2f}  nn10 W1 {row['nn10_w1']:.2f}  pairs W1 {row['pairs_w1']:.2f} bits")
    print(f"chosen {doc['model']['clusters']} clusters, spread {doc['model']['spread']} -> {args.out}")


def load_fitted(path: str | os.PathLike[str] = RESULTS / "synthetic_codes.json") -> ClusteredCodes:
    """The fitted population recorded by this script (``bench_ann.py`` builds its codes from it)."""
    m = json.loads(Path(path).read_text())["model"]
    return ClusteredCodes(bits=m["bits"], clusters=m["clusters"], spread=m["spread"], size_sigma=m["size_sigma"],
                          balance=tuple(m["balance"]), correlation=tuple(tuple(r) for r in m["correlation"]),
                          seed=m["seed"])


if __name__ == "__main__":
    main()
