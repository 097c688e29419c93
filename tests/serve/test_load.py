"""The service under bounded load from a second process: 16 and 64 concurrent clients, bad requests mixed in.

The server is a ``bitseek serve`` process over a real collection; this test process is the client.
Each level runs a couple of seconds (the full numbers are benchmarks/bench_serve.py's); every good
request must get 200 with results, every bad one its 4xx, and the service must answer correctly after.
"""

from __future__ import annotations

import json

import pytest

from bitseek.serve.load import Req, bad_requests, run_load


def _mix(served) -> list[Req]:
    ids = sorted(served.ids.values())
    good = [Req("GET", f"/api/items/{i}/similar", {"k": 5}, label="by-id") for i in ids]
    good.append(Req("POST", "/api/search", {"k": 5}, upload=("q.jpg", served.image_query.read_bytes()),
                    label="by-image"))
    bad = bad_requests(ids[0], max(ids) + 1000, max_k=1000)
    mix: list[Req] = []
    for i, g in enumerate(good * 2):  # about one bad request in four
        mix.append(g)
        if i % 3 == 2:
            mix.append(bad[(i // 3) % len(bad)])
    return mix


@pytest.mark.parametrize("clients", [16, 64])
def test_load(served, clients, record_property):
    import httpx

    rep = run_load(served.url, _mix(served), clients=clients, seconds=2.0, max_requests=3000, token=served.token,
                   request_timeout=60.0)
    record_property(f"load_{clients}", json.dumps(rep.as_dict()))
    print(f"\n{clients} clients: {rep.good} good + {rep.bad} bad requests in {rep.seconds:.2f} s, "
          f"{rep.qps:.1f} queries/s, p50 {rep.p50_ms:.1f} ms, p99 {rep.p99_ms:.1f} ms, errors {rep.errors}")
    assert rep.errors == 0, rep.error_samples
    assert rep.good >= clients and rep.bad >= 1, rep
    assert set(rep.statuses) <= {"200", "404", "415", "422"}, rep.statuses
    assert rep.requests <= 3000 and rep.seconds < 2.0 + 60.0  # bounded in count and time
    assert rep.p99_ms >= rep.p50_ms > 0

    # healthy afterwards: liveness, and a search still finds what it must
    h = httpx.get(served.url + "/healthz", timeout=30)
    assert h.status_code == 200 and h.json()["items"] == served.n_items
    with open(served.image_query, "rb") as f:
        r = httpx.post(served.url + "/api/search", params={"k": 1}, files={"file": ("q.jpg", f)},
                       headers={"Authorization": f"Bearer {served.token}"}, timeout=60)
    assert r.status_code == 200 and r.json()["results"][0]["id"] == served.image_target_id
    assert served.server.proc.poll() is None, served.server.log()
