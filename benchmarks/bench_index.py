"""Index layer benchmark: overhead of ``bitseek.index`` over raw faiss, and IVF / MIH trade-offs.

Exact Hamming k-NN over N random 64-bit codes (default 1M), 1,000 queries (half near-duplicates of
database items with 0-6 flipped bits, half random codes), k=100:

* ``flat``: our ``make_index("flat")`` against a raw ``faiss.IndexBinaryFlat`` on the same data
  (same thread count, runs interleaved; median and best of ``--repeats``). Results must be identical.
  Also timed: the faiss object inside our index called directly, and the wrapper alone (its faiss
  call replaced by copies of a cached result), which isolate the layer's cost from the run-to-run
  noise of a shared machine.
* ``ivf``: ``ivf{nlist}`` over an ``nprobe`` sweep, recall against flat.
* ``mih``: ``mih4`` (4 x 16-bit substrings) over an ``nflip`` sweep, plus exact range search at
  near-duplicate radii (``--radii``) compared with flat range search (results must be identical).
* ``hnsw`` (only with ``--hnsw``; building the graph over 1M codes takes minutes).
* ``threads``: queries/s of the ``flat`` index searched from 1 and from 2 Python threads at once
  (each with one faiss thread, so the gain comes from searches running in parallel, not from
  OpenMP inside one call), and faiss's own 2-thread OpenMP search of the same queries for reference.
  ``--only-threads`` runs just this part.

Secondary timings (IVF, MIH, HNSW, range search) are the best of up to 3 runs.
Recall is reported two ways (``bitseek.eval.ann``): ``recall_ids`` (share of flat's top-k ids found;
ties make it a lower bound on random codes, where the k-th distance is shared by many items) and
``recall_dist`` (share of places filled with an item within flat's k-th distance: tie-aware).

Usage: ``python benchmarks/bench_index.py [--n 1000000] [--quick] [--threads 1] [--hnsw] [--only-threads]``.
Writes ``benchmarks/results/index.json`` atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import faiss
import numpy as np

from bitseek.atomic import atomic_write_text
from bitseek.eval.ann import distance_recall, knn_recall
from bitseek.index import make_index

BITS = 64


def make_data(n: int, nq: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    db = rng.integers(0, 256, (n, BITS // 8), dtype=np.uint8)
    ids = rng.permutation(n).astype(np.int64) * 7 + 3  # ids are not positions
    n_near = nq // 2
    src = rng.choice(n, n_near, replace=False)
    near = np.unpackbits(db[src], axis=1)
    flips = rng.integers(0, 7, n_near)
    for row, f in zip(near, flips):
        row[rng.choice(BITS, f, replace=False)] ^= 1
    q = np.concatenate([np.packbits(near, axis=1), rng.integers(0, 256, (nq - n_near, BITS // 8), dtype=np.uint8)])
    return {"db": db, "ids": ids, "q": q, "near_src": src, "near_flips": flips}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def timed_best(fn: Callable[[], Any], repeats: int = 3, budget_s: float = 2.0) -> tuple[float, Any]:
    """Best of up to ``repeats`` runs (first-call costs and machine noise inflate single runs);
    calls slower than ``budget_s`` run once."""
    best, out = timed(fn)
    for _ in range(repeats - 1):
        if best > budget_s:
            break
        best = min(best, timed(fn)[0])
    return best, out


def recall(d: np.ndarray, i: np.ndarray, true_d: np.ndarray, true_i: np.ndarray) -> dict[str, float]:
    return {"recall_ids": knn_recall(i, true_i), "recall_dist": distance_recall(d, i, true_d, true_i)}


def bench_threads(data: dict[str, np.ndarray], k: int, repeats: int) -> dict[str, Any]:
    """Queries/s of one flat index searched from 1 and from 2 threads at once (one faiss thread each)."""
    db, ids, q = data["db"], data["ids"], data["q"]
    index = make_index("flat", bits=BITS)
    index.add(db, ids)
    faiss.omp_set_num_threads(1)
    index.search(q[:10], k)  # warm-up
    halves = [q[: len(q) // 2], q[len(q) // 2 :]]
    busy = _busy_cores()

    def two_threads() -> list[Any]:
        out: list[Any] = [None, None]

        def run(j: int) -> None:
            out[j] = index.search(halves[j], k)

        threads = [threading.Thread(target=run, args=(j,)) for j in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    t1, t2, t_omp = [], [], []
    for _ in range(repeats):  # interleaved, so machine noise hits all alike
        t, serial = timed(lambda: index.search(q, k))
        t1.append(t)
        t, parallel = timed(two_threads)
        t2.append(t)
        faiss.omp_set_num_threads(2)
        t_omp.append(timed(lambda: index.search(q, k))[0])
        faiss.omp_set_num_threads(1)
    same = all(np.array_equal(np.concatenate([p[j] for p in parallel]), serial[j]) for j in range(2))
    qps1, qps2 = len(q) / statistics.median(t1), len(q) / statistics.median(t2)
    return {
        "queries": len(q),
        "k": k,
        "search_s": {"1_thread": t1, "2_threads": t2, "faiss_openmp_2": t_omp},
        "qps_1_thread": qps1,
        "qps_2_threads": qps2,
        "speedup_2_threads": qps2 / qps1,
        "speedup_best_of": min(t1) / min(t2),
        "faiss_openmp_2_speedup": statistics.median(t1) / statistics.median(t_omp),
        "identical_to_serial": bool(same),
        "busy_cores_before": busy,
        "busy_cores_after": _busy_cores(),
    }


def _busy_cores(seconds: float = 0.5) -> float | None:
    """Cores other processes kept busy over ``seconds`` (from /proc/stat), to judge a thread timing."""
    def snap() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as fh:
                vals = [int(v) for v in fh.readline().split()[1:]]
        except OSError:
            return None
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle

    a = snap()
    time.sleep(seconds)
    b = snap()
    if a is None or b is None or b[0] == a[0]:
        return None
    return round((os.cpu_count() or 1) * (1 - (b[1] - a[1]) / (b[0] - a[0])), 2)


def bench_flat(data: dict[str, np.ndarray], k: int, repeats: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    db, ids, q = data["db"], data["ids"], data["q"]
    raw = faiss.IndexBinaryFlat(BITS)
    t_raw_add, _ = timed(lambda: raw.add(db))
    ours = make_index("flat", bits=BITS)
    t_our_add, _ = timed(lambda: ours.add(db, ids))
    raw.search(q[:10], k), ours.search(q[:10], k)  # warm-up
    t_raw, t_our, t_inner = [], [], []
    for _ in range(repeats):  # interleaved, so machine noise hits all alike
        t, (rd, ri) = timed(lambda: raw.search(q, k))
        t_raw.append(t)
        t, (od, oi) = timed(lambda: ours.search(q, k))
        t_our.append(t)
        # the faiss object inside ours, called directly: isolates the wrapper's own cost
        t_inner.append(timed(lambda: ours._faiss.search(q, k))[0])
    identical = bool(np.array_equal(od, rd) and np.array_equal(oi, np.where(ri >= 0, ids[ri], -1)))
    # The wrapper's own cost, free of faiss timing noise: the faiss call replaced by handing back
    # copies of its cached result (the copies are charged to the wrapper, so this over-estimates).
    cached = ours._faiss.search(q, k)
    ours._knn = lambda _q, _k, _opts: (cached[0].copy(), cached[1].copy())  # type: ignore[method-assign]
    t_wrap = [timed(lambda: ours.search(q, k))[0] for _ in range(20)]
    del ours._knn
    med = {"faiss": statistics.median(t_raw), "bitseek": statistics.median(t_our), "inner": statistics.median(t_inner)}
    best = {"faiss": min(t_raw), "bitseek": min(t_our), "inner": min(t_inner)}
    res = {
        "add_s": {"faiss": t_raw_add, "bitseek": t_our_add},
        "search_s": {"faiss": t_raw, "bitseek": t_our, "bitseek_inner_faiss": t_inner},
        "median_s": {"faiss": med["faiss"], "bitseek": med["bitseek"]},
        "best_s": {"faiss": best["faiss"], "bitseek": best["bitseek"]},
        "overhead_ratio_median": med["bitseek"] / med["faiss"],
        "overhead_ratio_best": best["bitseek"] / best["faiss"],
        "wrapper_ratio_median": med["bitseek"] / med["inner"],
        "wrapper_ratio_best": best["bitseek"] / best["inner"],
        "wrapper_cost_s": statistics.median(t_wrap),
        "wrapper_cost_fraction_of_faiss": statistics.median(t_wrap) / med["faiss"],
        "identical_results": identical,
        "qps_bitseek": len(q) / med["bitseek"],
    }
    return res, od, oi


def bench_ivf(data, k, nlist, nprobes, train_n, true_d, true_i, seed) -> dict[str, Any]:
    db, ids, q = data["db"], data["ids"], data["q"]
    index = make_index(f"ivf{nlist}", bits=BITS)
    sample = db[np.random.default_rng(seed).choice(len(db), min(train_n, len(db)), replace=False)]
    t_train, _ = timed(lambda: index.train(sample))
    t_add, _ = timed(lambda: index.add(db, ids))
    sweep = []
    for nprobe in nprobes:
        t, (d, i) = timed_best(lambda: index.search(q, k, nprobe=nprobe))
        sweep.append({"nprobe": nprobe, "search_s": t, **recall(d, i, true_d, true_i), **near_dup_top1(data, i)})
    return {"spec": f"ivf{nlist}", "train_codes": len(sample), "train_s": t_train, "add_s": t_add, "sweep": sweep}


def near_dup_top1(data: dict[str, np.ndarray], i: np.ndarray) -> dict[str, float]:
    n_near = len(data["near_src"])
    return {"near_dup_top1": float(np.mean(i[:n_near, 0] == data["ids"][data["near_src"]]))}


def bench_mih(data, k, nflips, radii, true_d, true_i, flat_index) -> dict[str, Any]:
    db, ids, q = data["db"], data["ids"], data["q"]
    index = make_index("mih4", bits=BITS)
    t_add, _ = timed(lambda: index.add(db, ids))
    sweep = []
    for nflip in nflips:
        t, (d, i) = timed_best(lambda: index.search(q, k, nflip=nflip))
        sweep.append({"nflip": nflip, "search_s": t, **recall(d, i, true_d, true_i), **near_dup_top1(data, i)})
    near_q = q[: len(data["near_src"])]
    index.set_options(nflip=0)  # range search: the tables when radius // nhash is 0, else the flat storage
    ranges = []
    for radius in radii:  # exact at any radius (nflip raised to radius // nhash), cost grows with it
        t_mih, r_mih = timed_best(lambda: index.range_search(near_q, radius))
        t_flat, r_flat = timed_best(lambda: flat_index.range_search(near_q, radius))
        same = bool(
            np.array_equal(r_mih.lims, r_flat.lims)
            and np.array_equal(r_mih.ids, r_flat.ids)
            and np.array_equal(r_mih.distances, r_flat.distances)
        )
        ranges.append(
            {
                "radius": radius,
                "method": "hash tables" if radius // index.nhash == 0 else "flat storage scan",
                "queries": len(near_q),
                "mih_s": t_mih,
                "flat_s": t_flat,
                "hits": int(r_flat.lims[-1]),
                "identical_to_flat": same,
            }
        )
    return {"spec": index.spec.split(",")[0], "add_s": t_add, "knn_sweep": sweep, "range": ranges}


def bench_hnsw(data, k, efs, true_d, true_i) -> dict[str, Any]:
    index = make_index("hnsw32", bits=BITS)
    t_add, _ = timed(lambda: index.add(data["db"], data["ids"]))
    sweep = []
    for ef in efs:
        t, (d, i) = timed_best(lambda: index.search(data["q"], k, ef_search=ef))
        sweep.append({"ef_search": ef, "search_s": t, **recall(d, i, true_d, true_i), **near_dup_top1(data, i)})
    return {"spec": "hnsw32", "add_s": t_add, "sweep": sweep}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="database codes")
    ap.add_argument("--nq", type=int, default=1000, help="queries")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="100k codes, 200 queries, fewer repeats (smoke run)")
    ap.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads (1 = stable timings)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--radii", default="3,8", help="range-search radii for the near-duplicate queries")
    ap.add_argument("--hnsw", action="store_true", help="also build an HNSW graph (slow)")
    ap.add_argument("--only-threads", action="store_true", help="only the 1- vs 2-thread flat search")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "index.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.nq, args.repeats, args.nlist = min(args.n, 100_000), min(args.nq, 200), min(args.repeats, 3), min(args.nlist, 256)
    faiss.omp_set_num_threads(args.threads)

    data = make_data(args.n, args.nq, args.seed)
    print(f"{args.n:,} x {BITS}-bit codes, {args.nq} queries, k={args.k}, {args.threads} thread(s)", file=sys.stderr)
    env = {
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "faiss_threads": args.threads,
    }
    thr = bench_threads(data, args.k, args.repeats)
    faiss.omp_set_num_threads(args.threads)
    print(
        f"threads: {thr['qps_1_thread']:.0f} q/s on 1 thread, {thr['qps_2_threads']:.0f} q/s on 2 -> "
        f"x{thr['speedup_2_threads']:.2f} (best-of x{thr['speedup_best_of']:.2f}; faiss OpenMP 2 threads "
        f"x{thr['faiss_openmp_2_speedup']:.2f}), identical={thr['identical_to_serial']}, "
        f"cores busy with other work before/after: {thr['busy_cores_before']}/{thr['busy_cores_after']}",
        file=sys.stderr,
    )
    head = {
        "benchmark": "bitseek.index",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "bits": BITS,
        "queries": "half near-duplicates of database codes (0-6 bits flipped), half uniform random",
        "environment": env,
        "threads": thr,
    }
    if args.only_threads:
        atomic_write_text(args.out, json.dumps(head, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
        return head
    flat, true_d, true_i = bench_flat(data, args.k, args.repeats)
    print(
        f"flat: faiss {flat['median_s']['faiss']:.3f} s, bitseek {flat['median_s']['bitseek']:.3f} s -> overhead "
        f"x{flat['overhead_ratio_median']:.3f} (best-of x{flat['overhead_ratio_best']:.3f}; vs its own faiss "
        f"object x{flat['wrapper_ratio_median']:.3f}), wrapper's own cost {flat['wrapper_cost_s'] * 1e3:.2f} ms "
        f"= {100 * flat['wrapper_cost_fraction_of_faiss']:.3f}% of the faiss search, identical={flat['identical_results']}",
        file=sys.stderr,
    )
    flat_index = make_index("flat", bits=BITS)
    flat_index.add(data["db"], data["ids"])
    ivf = bench_ivf(data, args.k, args.nlist, [1, 8, 32, 128], 40 * args.nlist, true_d, true_i, args.seed)
    print(f"ivf: {json.dumps(ivf['sweep'])}", file=sys.stderr)
    radii = [int(r) for r in args.radii.split(",")]
    mih = bench_mih(data, args.k, [0, 1, 2], radii, true_d, true_i, flat_index)
    print(f"mih: {json.dumps(mih['knn_sweep'])} range {json.dumps(mih['range'])}", file=sys.stderr)
    result: dict[str, Any] = {
        **head,
        "flat": flat,
        "ivf": ivf,
        "mih": mih,
    }
    if args.hnsw:
        result["hnsw"] = bench_hnsw(data, args.k, [64, 256], true_d, true_i)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
