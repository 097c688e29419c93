"""Milvus (embedded standalone server on 127.0.0.1) against faiss on the same codes.

For N clustered 64-bit codes (default 50,000; ``--quick`` 10,000) and 200 queries, k=10:

* insert rate: faiss ``flat`` (in process) vs Milvus ``BIN_FLAT`` and ``BIN_IVF_FLAT`` (batched gRPC
  inserts, then flush and index build, timed separately);
* search latency: the 200 queries as one batch, and one query at a time (median);
* recall against faiss flat: ``recall_ids`` and tie-aware ``recall_dist`` (``bitseek.eval.ann``); BIN_FLAT
  must be 1.0 (and identical ids, by the (distance, id) tie rule); IVF over an ``nprobe`` sweep;
* the same BIN_FLAT collection reopened with ``consistency=Session`` (reads after a flush, no time-tick wait);
* float descriptors (``--float-n`` x 128, unit norm): faiss ``float-ip`` vs Milvus ``FLAT`` + IP.

Milvus pays a client/server round trip per call, so single-query latency measures the RPC path more than
the scan; the ratios are of one run on this machine (loaded: read them as ratios).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_milvus.py [--n 50000] [--quick]``. Writes
``benchmarks/results/milvus.json`` atomically.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _harness import machine_info, write_results  # type: ignore[import-not-found]
from bitseek.eval.ann import distance_recall, knn_recall
from bitseek.index import make_index
from bitseek.index.milvus import local_server

OUT = Path(__file__).parent / "results" / "milvus.json"


def codes(n: int, bits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 256, size=(256, bits // 8), dtype=np.uint8)
    flips = rng.random((n, bits)) < 0.1
    return centres[rng.integers(0, 256, n)] ^ np.packbits(flips, axis=1)


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def single_query_ms(index: Any, q: np.ndarray, k: int, **params: int) -> float:
    times = []
    for row in q[:50]:
        t, _ = timed(lambda: index.search(row[None], k, **params))
        times.append(t * 1000)
    return statistics.median(times)


def bench_binary(uri: str, n: int, nq: int, k: int, bits: int) -> dict[str, Any]:
    db, q = codes(n, bits, 0), codes(nq, bits, 1)
    ids = np.arange(n, dtype=np.int64)
    ref = make_index("flat", bits=bits)
    t_ref_add, _ = timed(lambda: ref.add(db, ids))
    t_ref_search, (d_true, i_true) = timed(lambda: ref.search(q, k))
    out: dict[str, Any] = {"n": n, "queries": nq, "k": k, "bits": bits, "faiss_flat": {
        "insert_s": t_ref_add, "insert_per_s": n / t_ref_add, "batch_search_ms": t_ref_search * 1000,
        "single_query_ms": single_query_ms(ref, q, k)}}
    for kind, extra in (("BIN_FLAT", ""), ("BIN_IVF_FLAT", ",nlist=256,nprobe=8")):
        mv = make_index(f"milvus:uri={uri},collection=bench_{kind.lower()}_{n},index={kind}{extra}", bits=bits)
        try:
            t_add, _ = timed(lambda: mv.add(db, ids))
            t_flush, _ = timed(lambda: mv._coll.flush())  # sealed segments, then the server builds the index
            t_index, _ = timed(lambda: __import__("pymilvus").utility.wait_for_index_building_complete(
                mv._coll.name, using=mv._alias))
            row: dict[str, Any] = {"insert_s": t_add, "insert_per_s": n / t_add, "flush_s": t_flush,
                                   "index_build_s": t_index}
            sweep = [{}] if kind == "BIN_FLAT" else [{"nprobe": p} for p in (1, 8, 32, 256)]
            row["search"] = []
            for params in sweep:
                mv.search(q[:5], k, **params)  # warm-up (first search loads segments)
                t_s, (d, i) = timed(lambda: mv.search(q, k, **params))
                row["search"].append({**params, "batch_search_ms": t_s * 1000,
                                      "single_query_ms": single_query_ms(mv, q, k, **params),
                                      "recall_ids": knn_recall(i, i_true),
                                      "recall_dist": distance_recall(d, i, d_true, i_true),
                                      "identical_to_faiss": bool(np.array_equal(i, i_true) and np.array_equal(d, d_true))})
            if kind == "BIN_FLAT":  # read-only use after a flush: Session reads skip Strong's time-tick wait
                ro = make_index(mv.spec + ",consistency=Session", bits=bits)
                ro.search(q[:5], k)
                t_s, (d, i) = timed(lambda: ro.search(q, k))
                row["session_reads"] = {"batch_search_ms": t_s * 1000, "single_query_ms": single_query_ms(ro, q, k),
                                        "identical_to_faiss": bool(np.array_equal(i, i_true) and np.array_equal(d, d_true))}
                ro.close()
            out[f"milvus_{kind.lower()}"] = row
        finally:
            mv.drop()
    flat = out["milvus_bin_flat"]
    out["ratios"] = {"insert_rate_milvus_over_faiss": flat["insert_per_s"] / out["faiss_flat"]["insert_per_s"],
                     "batch_search_milvus_over_faiss": flat["search"][0]["batch_search_ms"]
                     / out["faiss_flat"]["batch_search_ms"],
                     "single_query_milvus_over_faiss": flat["search"][0]["single_query_ms"]
                     / out["faiss_flat"]["single_query_ms"]}
    return out


def bench_float(uri: str, n: int, nq: int, k: int, dim: int = 128) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    db = rng.standard_normal((n, dim)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:nq] + 0.1 * rng.standard_normal((nq, dim)).astype(np.float32)
    ref = make_index("float-ip", dim=dim)
    t_ref_add, _ = timed(lambda: ref.add(db))
    t_ref, (d_true, i_true) = timed(lambda: ref.search(q, k))
    mv = make_index(f"milvus-ip:uri={uri},collection=bench_float_{n}", dim=dim)
    try:
        t_add, _ = timed(lambda: mv.add(db, np.arange(n)))
        mv.search(q[:5], k)
        t_s, (d, i) = timed(lambda: mv.search(q, k))
        return {"n": n, "dim": dim, "faiss_float_ip": {"insert_per_s": n / t_ref_add, "batch_search_ms": t_ref * 1000},
                "milvus_flat_ip": {"insert_per_s": n / t_add, "batch_search_ms": t_s * 1000,
                                   "recall_ids": knn_recall(i, i_true),
                                   "max_score_diff": float(np.abs(d - d_true).max())}}
    finally:
        mv.drop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--float-n", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="10,000 codes, 2,000 descriptors")
    args = ap.parse_args()
    n, fn = (10_000, 2_000) if args.quick else (args.n, args.float_n)
    import torch

    with tempfile.TemporaryDirectory(prefix="bitseek-milvus-") as tmp:
        t0 = time.perf_counter()
        with local_server(tmp, start_timeout_s=300) as srv:
            start_s = time.perf_counter() - t0
            result = {"server_start_s": start_s, "binary": bench_binary(srv.uri, n, 200, 10, 64),
                      "float": bench_float(srv.uri, fn, 100, 10)}
    doc = {"benchmark": "milvus", "machine": machine_info(torch.device("cpu")),
           "milvus": __import__("milvus").__version__, "pymilvus": __import__("pymilvus").__version__,
           "quick": bool(args.quick), **result}
    write_results(OUT, doc, result)
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
