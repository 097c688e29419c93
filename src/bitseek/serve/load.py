"""A bounded load generator for a running ``bitseek serve``: N concurrent clients, a time and count cap.

Used by the load test and ``benchmarks/bench_serve.py``. Each request carries the statuses it may
get: good requests must get 200, bad ones (k out of range, unknown id, not-media upload) their 4xx;
anything else (a 5xx, a timeout, a dropped connection) is an error. Latencies are of good requests.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Req:
    """One request shape: ``files`` = (field name, file name, bytes) for an upload."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    upload: tuple[str, bytes] | None = None
    expect: frozenset[int] = frozenset({200})
    label: str = "search"
    needs_results: bool = True  # a 200 must carry a "results" list (searches); False for other routes

    @property
    def good(self) -> bool:
        return self.expect == frozenset({200})


@dataclass
class LoadReport:
    clients: int
    seconds: float
    requests: int
    good: int
    bad: int
    errors: int
    qps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    error_samples: list[str]
    by_label: dict[str, dict[str, float]]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a), q)) if a else float("nan")


async def _run(base_url: str, mix: list[Req], clients: int, seconds: float, max_requests: int,
               token: str | None, request_timeout: float) -> LoadReport:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    lat: dict[str, list[float]] = {}
    good_lat: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    counts = {"sent": 0, "good": 0, "bad": 0}
    next_i = 0
    t_end = time.perf_counter() + seconds

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while time.perf_counter() < t_end and counts["sent"] < max_requests:
            req = mix[next_i % len(mix)]
            next_i += 1
            counts["sent"] += 1
            files = {"file": (req.upload[0], req.upload[1], "application/octet-stream")} if req.upload else None
            t0 = time.perf_counter()
            try:
                r = await client.request(req.method, req.path, params=req.params, files=files)
                status = r.status_code
                ok = status in req.expect and (status != 200 or not req.needs_results
                                               or isinstance(r.json().get("results"), list))
                what = f"{req.label}: {status} {r.text[:160]}"
            except (httpx.HTTPError, ValueError) as e:
                status, ok, what = -1, False, f"{req.label}: {e.__class__.__name__}: {e}"
            dt = (time.perf_counter() - t0) * 1000
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if not ok:
                errors.append(what)
                continue
            if req.good:
                counts["good"] += 1
                good_lat.append(dt)
                lat.setdefault(req.label, []).append(dt)
            else:
                counts["bad"] += 1

    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits,
                                 timeout=request_timeout) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(client) for _ in range(clients)))
        took = time.perf_counter() - t0
    return LoadReport(clients=clients, seconds=round(took, 3), requests=counts["sent"], good=counts["good"],
                      bad=counts["bad"], errors=len(errors), qps=round(counts["good"] / took, 2),
                      p50_ms=round(_pct(good_lat, 50), 3), p99_ms=round(_pct(good_lat, 99), 3),
                      max_ms=round(max(good_lat, default=float("nan")), 3), statuses=statuses,
                      error_samples=errors[:5],
                      by_label={k: {"n": len(v), "p50_ms": round(_pct(v, 50), 3), "p99_ms": round(_pct(v, 99), 3)}
                                for k, v in lat.items()})


def run_load(base_url: str, mix: list[Req], clients: int, seconds: float, max_requests: int = 100_000,
             token: str | None = None, request_timeout: float = 60.0) -> LoadReport:
    """Drive ``base_url`` with ``clients`` concurrent clients cycling through ``mix`` (bounded in time and count)."""
    if not mix:
        raise ValueError("run_load: empty request mix")
    return asyncio.run(_run(base_url.rstrip("/"), mix, clients, seconds, max_requests, token, request_timeout))


def bad_requests(known_id: int, missing_id: int, max_k: int) -> list[Req]:
    """Requests a client gets wrong, each with the 4xx it must get (the service must stay healthy)."""
    return [
        Req("GET", f"/api/items/{known_id}/similar", {"k": 0}, expect=frozenset({422}), label="bad-k"),
        Req("GET", f"/api/items/{known_id}/similar", {"k": max_k + 1}, expect=frozenset({422}), label="big-k"),
        Req("GET", f"/api/items/{missing_id}/similar", expect=frozenset({404}), label="unknown-id"),
        Req("GET", "/api/items/not-a-number", expect=frozenset({422}), label="bad-id"),
        Req("POST", "/api/search", upload=("notes.jpg", b"this is text, not a JPEG\n" * 20),
            expect=frozenset({415}), label="not-media"),
        Req("POST", "/api/search", upload=("cut.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 300),
            expect=frozenset({422}), label="corrupt-jpeg"),
    ]
