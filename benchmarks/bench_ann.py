"""Approximate Hamming k-NN: recall against speed and memory, every engine beside exact ``flat``.

Data: ``--n`` codes (default 1M; the target run is 10M) of 64 bits from the clustered population
fitted to ITQ codes of the built-in ``mnist-video`` benchmark (``bench_synthetic_codes.py``
records it in ``results/synthetic_codes.json``), and ``--nq`` held-out queries from the same
population (another stream: no query is in the database). Codes are cached as ``.npy`` under
``--cache`` (default ``/tmp/bitseek-ann``) and memory-mapped.

Every engine is built through ``bitseek.index.make_index`` and searched with ``k = 100`` on one
thread; its sweep parameter (IVF ``nprobe``, multi-hash ``nflip``, HNSW ``ef_search``) goes per
call. Recall is tie-aware distance recall (``bitseek.eval.ann.distance_recall``): ``recall@100``
from the 100 results, ``recall@10`` from their first 10, each against flat's exact k-th distance.
``speedup`` is flat's search time over the engine's, both measured in this run (flat is timed at
the start and at the end; the mean is used). ``memory_mb`` is the resident-set growth while the
engine was built and filled (after the codes were already mapped in).

Writes ``benchmarks/results/ann.json`` (``--out``) and the curve ``docs/figures/ann.png``.
Usage: ``python benchmarks/bench_ann.py [--n 1000000] [--engines ivf,mih,hnsw,ivf-hnsw] [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_synthetic_codes import load_fitted  # noqa: E402

from bitseek.atomic import atomic_path, atomic_write_text  # noqa: E402
from bitseek.codes.synthetic import cached_codes  # noqa: E402
from bitseek.eval.ann import distance_recall  # noqa: E402
from bitseek.index import make_index  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
K = 100


def rss_mb() -> float:
    """Current (not peak) resident set of this process, in MiB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(fn: Callable[[], Any], budget_s: float = 1.0) -> tuple[float, Any]:
    """Best of three runs when one is quicker than ``budget_s`` (first-call costs, machine noise)."""
    t = time.perf_counter()
    out = fn()
    best = time.perf_counter() - t
    for _ in range(2):  # best of 3 for short calls: the machine is shared
        if best >= budget_s:
            break
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def sweep(name: str, spec: str, key: str, values: list[int], db: np.ndarray, q: np.ndarray,
          truth: tuple[np.ndarray, np.ndarray], train: np.ndarray | None, extra: dict[str, Any]) -> dict[str, Any]:
    """Build one engine, then search it at every value of its sweep parameter."""
    gc.collect()
    before = rss_mb()
    t = time.perf_counter()
    index = make_index(spec, bits=db.shape[1] * 8)
    if train is not None:
        index.train(train)
    train_s = time.perf_counter() - t
    for s in range(0, db.shape[0], 1 << 20):
        index.add(np.ascontiguousarray(db[s : s + (1 << 20)]))
    build_s = time.perf_counter() - t
    mem = rss_mb() - before
    points = []
    td, ti = truth
    for v in values:
        sec, (d, i) = timed(lambda: index.search(q, K, **{key: v}))
        points.append({key: v, "search_s": round(sec, 4), "qps": round(len(q) / sec, 1),
                       "recall@100": round(distance_recall(d, i, td, ti), 4),
                       "recall@10": round(distance_recall(d[:, :10], i[:, :10], td[:, :10], ti[:, :10]), 4)})
        print(f"  {name} {key}={v}: {sec:.3f}s recall@100 {points[-1]['recall@100']:.4f} "
              f"@10 {points[-1]['recall@10']:.4f}", flush=True)
    del index
    gc.collect()
    return {"engine": name, "spec": spec, "param": key, "train_s": round(train_s, 1), "build_s": round(build_s, 1),
            "memory_mb": round(mem, 1), "points": points, **extra}


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    flat_qps = doc["flat"]["qps"]
    for ax, metric in zip(axes, ("recall@100", "recall@10")):
        for row in doc["engines"]:
            pts = [p for p in row["points"] if p[metric] > 0]
            xs = [p["speedup"] for p in pts]
            ys = [max(1 - p[metric], 1e-4) for p in pts]  # misses; 1e-4 stands for "none measured"
            ax.plot(xs, ys, "o-", ms=3, label=f"{row['spec']} ({row['memory_mb']:.0f} MB)")
        ax.axhline(0.01, color="grey", lw=0.8, ls="--")  # recall 0.99
        ax.axvline(20, color="grey", lw=0.8, ls=":")  # the 20x target
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(0.8, 8e-5)  # better recall upwards
        ax.set_xlabel("speed over exact flat (x, same run)")
        ax.set_title(f"1 - distance-{metric} (dashed: recall 0.99)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("share of the exact top-k missed")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{doc['n']:,} x 64-bit clustered codes, {doc['nq']} held-out queries, k=100, 1 thread "
                 f"(flat {flat_qps:,.0f} q/s)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--engines", default="ivf,mih,hnsw")
    ap.add_argument("--nlist", type=int, default=0, help="IVF lists (default: 4 * sqrt(n) rounded to a power of 2)")
    ap.add_argument("--train-per-list", type=int, default=40, help="IVF k-means training codes per list")
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--cache", default="/tmp/bitseek-ann")
    ap.add_argument("--quick", action="store_true", help="fewer sweep points")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/ann.json"))
    ap.add_argument("--png", default=str(ROOT / "docs/figures/ann.png"))
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    load0 = os.getloadavg()
    model = load_fitted()
    db = cached_codes(model, args.n, args.cache, stream=0)
    q = np.ascontiguousarray(cached_codes(model, args.nq, args.cache, stream=1))
    db = np.ascontiguousarray(db)  # in RAM, as every engine holds it
    print(f"{args.n:,} codes, {args.nq} queries; load {load0[0]:.2f}", flush=True)

    flat = make_index("flat", bits=64)
    flat.add(db)
    flat_s1, truth = timed(lambda: flat.search(q, K))
    del flat
    gc.collect()
    nlist = args.nlist or int(2 ** round(np.log2(4 * np.sqrt(args.n))))
    rng = np.random.default_rng(0)
    train = db[np.sort(rng.choice(args.n, size=min(args.n, args.train_per_list * nlist), replace=False))]
    quick = args.quick
    rows = []
    for eng in args.engines.split(","):
        if eng == "ivf":
            probes = [1, 4, 16, 64] if quick else [1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256]
            rows.append(sweep("ivf", f"ivf{nlist}", "nprobe", probes, db, q, truth, train,
                              {"nlist": nlist, "train_codes": len(train)}))
        elif eng == "ivf-hnsw":
            probes = [4, 16, 64] if quick else [4, 8, 16, 32, 64, 128]
            rows.append(sweep("ivf-hnsw", f"faiss:BIVF{nlist}_HNSW32", "nprobe", probes, db, q, truth, train,
                              {"nlist": nlist, "train_codes": len(train)}))
        elif eng == "mih":
            for nhash in (4, 2):
                flips = [0, 1] if nhash == 4 else [0, 1, 2]
                rows.append(sweep("mih", f"mih{nhash}", "nflip", flips, db, q, truth, None, {}))
        elif eng == "hnsw":
            efs = [100, 256] if quick else [100, 128, 192, 256, 384, 512]  # faiss uses max(ef, k)
            rows.append(sweep("hnsw", f"hnsw{args.hnsw_m}", "ef_search", efs, db, q, truth, None, {}))
        else:
            raise SystemExit(f"--engines: unknown engine {eng!r} (ivf, ivf-hnsw, mih, hnsw)")
    flat = make_index("flat", bits=64)
    flat.add(db)
    flat_s2, _ = timed(lambda: flat.search(q, K))
    flat_s = (flat_s1 + flat_s2) / 2
    for row in rows:
        for p in row["points"]:
            p["speedup"] = round(flat_s / p["search_s"], 2)
    best = [p | {"spec": r["spec"]} for r in rows for p in r["points"] if p["recall@100"] >= 0.99]
    best.sort(key=lambda p: -p["speedup"])
    doc = {
        "what": "approximate Hamming k-NN vs exact flat on clustered 64-bit codes (bench_ann.py)",
        "n": args.n, "nq": args.nq, "k": K, "threads": 1,
        "codes": model.describe(),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "faiss": faiss.__version__,
                    "load_avg_at_start": list(load0), "load_avg_at_end": list(os.getloadavg())},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "flat": {"search_s_start": round(flat_s1, 3), "search_s_end": round(flat_s2, 3),
                 "qps": round(args.nq / flat_s, 1), "memory_mb": round(args.n * 8 / 2**20, 1)},
        "engines": rows,
        "fastest_at_recall100_0.99": best[0] if best else None,
        "target": {"speedup": 20, "recall@100": 0.99, "met": bool(best and best[0]["speedup"] >= 20)},
    }
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    plot(doc, Path(args.png))
    print(f"flat {flat_s:.3f}s; best at recall@100>=0.99: {best[0] if best else None} -> {args.out}, {args.png}")


if __name__ == "__main__":
    main()
