"""Benchmark: bitseek.eval.map_at_k at FCVID scale against the reference's dense evaluation.

FCVID all-vs-all is 45,600 queries × 45,600 database items, 239 labels, 64-bit codes. The
reference (ConMH/BTH ``eval.py`` + ``tools.mAP``) builds the full N×Q float32 distance matrix, its
int64 argsort and an N×N label-similarity matrix (~8 + 17 + 17 GB at full scale), then loops in
Python. This script measures, each in a fresh subprocess (so peak RSS is the run's own):

1. ``map_at_k`` with ``ties="stable"`` and ``ties="numpy"`` at ``--n`` (default full FCVID size),
   beside faiss ``IndexBinaryFlat`` exact k-NN (k = 100, the largest K) on the same codes, packed:
   the time of a bare Hamming top-100 scan, the floor the evaluator is measured against
   (target: ``stable`` <= 1.5x faiss);
2. both again and the dense reference port at ``--ref-n`` (default 8,000: ~1.3 GB for the
   reference), giving a speed ratio at equal size and checking that ``ties="numpy"`` reproduces
   the reference's numbers exactly.

Data are random but structured (seeded): a Zipf-like class per item, ~10 % with a second label,
codes = the class prototype with 25 % of the bits flipped, so distances tie heavily as real codes do.

Usage: ``python benchmarks/bench_map_at_k.py [--n 45600] [--ref-n 8000] [--threads 1] [--quick]``; writes
``benchmarks/results/map_at_k.json`` atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KS = (5, 10, 20, 40, 60, 80, 100)
HERE = Path(__file__).resolve().parent


def make_data(n: int, bits: int, n_labels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded codes (float32 ±1) and multi-hot labels (uint8), built without large temporaries."""
    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, n_labels + 1) ** 0.5
    cls = rng.choice(n_labels, size=n, p=freq / freq.sum())
    protos = np.where(rng.random((n_labels, bits)) < 0.5, -1.0, 1.0).astype(np.float32)
    codes = protos[cls]
    codes[rng.random((n, bits)) < 0.25] *= -1
    labels = np.zeros((n, n_labels), dtype=np.uint8)
    labels[np.arange(n), cls] = 1
    extra = rng.random(n) < 0.1
    labels[np.flatnonzero(extra), rng.integers(0, n_labels, int(extra.sum()))] = 1
    return codes, labels


def reference_map(codes: np.ndarray, labels: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    """The reference's dense evaluation, ported literally (FCVID: queries are the database)."""
    bits = codes.shape[1]
    dist = 0.5 * (-np.dot(codes, codes.T) + bits)  # float32 N×Q, as np.matrix(float32) in eval.py
    rank = np.argsort(dist, axis=0)
    del dist
    lab = labels.astype(np.float64)  # scipy.io.loadmat gives double
    sim = np.dot(lab, lab.T)
    out = {}
    for k in ks:
        apall = np.zeros((codes.shape[0], 1))
        for qid in range(codes.shape[0]):
            col = rank[:, qid]
            x, p = 0, 0
            for rid in range(k):
                if sim[col[rid], qid]:
                    x += 1
                    p += x / (rid * 1.0 + 1.0)
            apall[qid] = 0.0 if not p else p / (k * 1.0)
        out[k] = float(np.mean(apall))
    return out


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child(mode: str, n: int, bits: int, n_labels: int, seed: int) -> dict:
    codes, labels = make_data(n, bits, n_labels, seed)
    # Imports before the timer and the RSS mark: the run measures the evaluation, not module loading.
    import faiss

    from bitseek.eval import map_at_k

    rss_data = peak_rss_mb()
    load = os.getloadavg()[0]
    extra: dict = {}
    c0, t0 = cpu_seconds(), time.perf_counter()
    if mode == "reference":
        maps = reference_map(codes, labels, KS)
    elif mode == "faiss":
        packed = np.packbits(codes > 0, axis=1)  # packing is timed: map_at_k is given the float codes too
        index = faiss.IndexBinaryFlat(bits)
        index.add(packed)
        _, ids = index.search(packed, max(KS))
        maps = {}
        extra = {"knn_k": max(KS), "faiss_threads": faiss.omp_get_max_threads()}
    else:
        maps = map_at_k(codes, None, labels, ks=KS, ties=mode)
    secs, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    peak = peak_rss_mb()
    return {
        "mode": mode,
        "n": n,
        "seconds": round(secs, 3),
        "cpu_seconds": round(cpu, 3),  # user+sys; less sensitive than wall time to other load
        "load_avg_1min_at_start": round(load, 2),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mb": round(peak, 1),
        "rss_after_data_mb": round(rss_data, 1),
        "eval_rss_increase_mb": round(peak - rss_data, 1),
        "map": {str(k): v for k, v in maps.items()},
        **extra,
    }


def run_child(mode: str, n: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--n", str(n),
           "--bits", str(args.bits), "--labels", str(args.labels), "--seed", str(args.seed)]
    print(f"[bench] {mode:9s} n={n:6d} ...", end=" ", flush=True)
    # One thread count for every child (faiss's OpenMP, BLAS): under a shared machine's load a
    # spinning 2-thread OpenMP team can run several times slower than one thread.
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        raise SystemExit(f"child {mode} n={n} failed:\n{res.stderr}")
    rec = json.loads(res.stdout.strip().splitlines()[-1])
    tail = f"mAP@5 {rec['map']['5']:.4f}" if "5" in rec["map"] else "(k-NN only)"
    print(f"{rec['seconds']:8.2f} s ({rec['cpu_seconds']:7.2f} s CPU, load {rec['load_avg_1min_at_start']:.1f})   peak RSS {rec['peak_rss_mb']:7.1f} MB   {tail}")
    return rec


def summarize(full: list[dict], equal: list[dict]) -> dict:
    """Exactness and speed-up of the equal-size runs and, at full scale, each mode's time over the
    faiss k-NN scan's (wall and CPU time: the machine is shared)."""
    by = {r["mode"]: r for r in equal}
    ref = by["reference"]
    fb = {r["mode"]: r for r in full}
    # The faster of the two faiss runs: the stricter comparison.
    fz = min((fb[m] for m in ("faiss", "faiss_again") if m in fb), key=lambda r: r["seconds"])
    return {
        "full_scale_time_over_faiss_knn_wall": {
            m: round(fb[m]["seconds"] / max(fz["seconds"], 1e-9), 2) for m in ("stable", "numpy")
        },
        "full_scale_time_over_faiss_knn_cpu": {
            m: round(fb[m]["cpu_seconds"] / max(fz["cpu_seconds"], 1e-9), 2) for m in ("stable", "numpy")
        },
        "target_stable_over_faiss": 1.5,
        "faiss_seconds_both_runs": [fb[m]["seconds"] for m in ("faiss", "faiss_again") if m in fb],
        "numpy_ties_equal_reference_exactly": by["numpy"]["map"] == ref["map"],
        "speedup_vs_reference_at_ref_n_wall": {
            m: round(ref["seconds"] / max(by[m]["seconds"], 1e-9), 1) for m in ("stable", "numpy")
        },
        "speedup_vs_reference_at_ref_n_cpu": {
            m: round(ref["cpu_seconds"] / max(by[m]["cpu_seconds"], 1e-9), 1) for m in ("stable", "numpy")
        },
        "max_abs_diff_stable_vs_reference": max(abs(by["stable"]["map"][k] - ref["map"][k]) for k in ref["map"]),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=45_600, help="queries = database size for the full-scale runs")
    ap.add_argument("--ref-n", type=int, default=8_000, help="size for the equal-size comparison with the reference")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--labels", type=int, default=239)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every child (faiss and BLAS)")
    ap.add_argument("--quick", action="store_true", help="small sizes (n=4000, ref-n=1500) for a smoke run")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "map_at_k.json")
    ap.add_argument("--child", choices=["stable", "numpy", "reference", "faiss"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.n, args.bits, args.labels, args.seed)))
        return
    if args.quick:
        args.n, args.ref_n = 4_000, 1_500
    # faiss before and after the evaluator, so a change of load during the run shows as a spread.
    full = [run_child(m, args.n, args) for m in ("faiss", "stable", "numpy")]
    full.append(dict(run_child("faiss", args.n, args), mode="faiss_again"))
    equal = [run_child(m, args.ref_n, args) for m in ("stable", "numpy", "reference")]
    summary = summarize(full, equal)
    doc = {
        "benchmark": "map_at_k",
        "params": {"n": args.n, "ref_n": args.ref_n, "bits": args.bits, "labels": args.labels, "seed": args.seed,
                   "threads": args.threads, "ks": list(KS), "quick": args.quick},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "platform": platform.platform()},
        "full_scale": full,
        "equal_size": equal,
        "summary": summary,
    }
    sys.path.insert(0, str(HERE.parent / "src"))
    from bitseek.atomic import atomic_write_text

    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
