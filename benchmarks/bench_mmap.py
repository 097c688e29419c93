"""A 100M x 64-bit flat or IVF index searched memory-mapped: resident memory after open and after queries.

Step 1 (a child process, once; the file is cached under ``--cache``): ``--n`` codes (default 100M)
from the clustered population of ``results/synthetic_codes.json`` go into ``make_index(--spec)``
(``flat``, or ``ivf16384`` trained on 40 codes per list drawn from the first 10M) and are saved
(codes 800 MB + ids 800 MB at 100M). Step 2 (another child, so nothing of step 1 is resident):
``load_index(path, mmap=True)``, then ``--nq`` queries (default 1,000) at k=100 on one thread
(IVF: ``--nprobe``, default 48, the 10M recall@100 0.99 point of ``bench_ann.py``). The RSS
(``/proc/self/statm``, resident pages of this process, file-backed included) is read right after
the open and after the search. Check of the results: flat, the first 10 queries against an exact
scan of the same codes in blocks; IVF, all queries against the same file loaded into memory
(``load_index(path)``, after the RSS readings).

Writes ``benchmarks/results/mmap.json`` (flat) or ``mmap-ivf.json``.
Usage: ``python benchmarks/bench_mmap.py [--n 100000000] [--spec ivf16384 --nprobe 48]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(path: Path, n: int, spec: str) -> None:
    """Child: generate, index and save ``n`` codes block by block."""
    from bench_synthetic_codes import load_fitted

    from bitseek.index import make_index

    model = load_fitted()
    t = time.perf_counter()
    index = make_index(spec, bits=64)
    if spec.startswith("ivf"):
        nlist = int(spec.split(",")[0][3:])
        rng = np.random.default_rng(0)
        pool = min(n, 10_000_000)
        rows = np.sort(rng.choice(pool, size=min(pool, 40 * nlist), replace=False))
        index.train(model.sample(pool)[rows])
    for block in model.iter_chunks(n, chunk=1 << 22):
        index.add(block)
    index.save(path)
    print(json.dumps({"build_s": round(time.perf_counter() - t, 1), "build_peak_rss_mb": round(peak_mb(), 1)}))


def search(path: Path, nq: int, verify: bool, nprobe: int | None, resident_mb: int | None) -> None:
    """Child: open memory-mapped, search, report RSS."""
    import faiss
    from bench_synthetic_codes import load_fitted

    from bitseek.index import load_index

    faiss.omp_set_num_threads(1)
    if resident_mb is not None:
        from bitseek.index.faiss.mapped import MappedIVFIndex

        MappedIVFIndex.resident_bytes = resident_mb << 20
    q = load_fitted().sample(nq, stream=1)
    base = rss_mb()
    t = time.perf_counter()
    index = load_index(path, mmap=True, verify=verify)
    open_s = time.perf_counter() - t
    after_open = rss_mb()
    t = time.perf_counter()
    params = {} if nprobe is None else {"nprobe": nprobe}
    d, i = index.search(q, 100, **params)
    search_s = time.perf_counter() - t
    after_search = rss_mb()
    report = {"engine": index.engine, "spec": index.spec, "search_params": params, "verify_checksum": verify,
              "open_s": round(open_s, 2), "search_s": round(search_s, 2), "nq": nq, "qps": round(nq / search_s, 2),
              "rss_before_open_mb": round(base, 1), "rss_after_open_mb": round(after_open, 1),
              "rss_after_search_mb": round(after_search, 1), "peak_rss_mb_mapped": round(peak_mb(), 1)}
    if index.engine != "flat":
        report["resident_mb"] = type(index).resident_bytes >> 20
        t = time.perf_counter()
        loaded = load_index(path)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        ld, li = loaded.search(q, 100, **params)
        report.update(load_s=round(load_s, 1), loaded_search_s=round(time.perf_counter() - t, 2),
                      peak_rss_mb_after_full_load=round(peak_mb(), 1),
                      equal_to_loaded_index=bool(np.array_equal(ld, d) and np.array_equal(li, i)))
        print(json.dumps(report))
        return
    # exact check of 10 queries: the same codes, scanned block by block with faiss's plain function
    sub = q[:10]
    best_d = np.full((10, 100), 1 << 30)
    for s in range(0, len(index), 1 << 23):
        dd, _ = faiss.knn_hamming(sub, np.ascontiguousarray(index._codes[s : s + (1 << 23)]), 100)
        best_d = np.sort(np.concatenate([best_d, dd], 1), 1)[:, :100]
        index._release(index._codes_at + s * 8, min(1 << 23, len(index) - s) * 8)
    report.update(peak_rss_mb=round(peak_mb(), 1), distances_exact_on_10_queries=bool(np.array_equal(best_d, d[:10])))
    print(json.dumps(report))


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000_000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--spec", default="flat", help="flat or ivfN (e.g. ivf16384)")
    ap.add_argument("--nprobe", type=int, default=48, help="IVF lists probed per query")
    ap.add_argument("--resident-mb", type=int, default=None,
                    help="IVF: MappedIVFIndex.resident_bytes in MB (default: the class's 64 MB)")
    ap.add_argument("--cache", default="/tmp/bitseek-ann")
    ap.add_argument("--out", default=None, help="default: results/mmap.json (flat) or results/mmap-ivf.json")
    ap.add_argument("--child", choices=["build", "search", "search-noverify"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.spec != "flat" and not (args.spec.startswith("ivf") and args.spec[3:].isdigit()):
        raise SystemExit(f"--spec {args.spec}: give flat or ivfN")
    nprobe = None if args.spec == "flat" else args.nprobe
    if args.child == "build":
        return build(Path(args.path), args.n, args.spec)
    if args.child:
        return search(Path(args.path), args.nq, verify=args.child == "search", nprobe=nprobe,
                      resident_mb=args.resident_mb)
    out = args.out or str(HERE / ("results/mmap.json" if args.spec == "flat" else "results/mmap-ivf.json"))
    from bitseek.atomic import atomic_write_text

    load0 = os.getloadavg()
    path = Path(args.cache) / f"{args.spec}-{args.n}.bsi"
    built = None
    if not path.is_file():
        print(f"building {path} ...", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        built = child("--child", "build", "--path", str(path), "--n", str(args.n), "--spec", args.spec)
    extra = [] if args.resident_mb is None else ["--resident-mb", str(args.resident_mb)]
    runs = [child("--child", mode, "--path", str(path), "--nq", str(args.nq), "--spec", args.spec,
                  "--nprobe", str(args.nprobe), *extra) for mode in ("search-noverify", "search")]
    doc = {
        "what": f"{args.spec} index searched memory-mapped (load_index(path, mmap=True)), one thread, k=100",
        "n": args.n, "bits": 64, "file_mb": round(path.stat().st_size / 2**20, 1),
        "codes_mb": round(args.n * 8 / 2**20, 1), "build": built, "runs": runs,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_start": list(load0), "load_avg_at_end": list(os.getloadavg())},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    for r in runs:
        print(r)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
