"""The Milvus engines against a real embedded Milvus server (PyPI ``milvus``), held to faiss's exact engines.

The module starts one standalone server bound to 127.0.0.1 (every component's ``ip`` set by
configuration), checks with psutil that no process of it talks to a non-loopback address, and stops it.
Tie rule under test: (distance, id) — equal to faiss flat, whose insertion order is ascending id here.
"""

from __future__ import annotations

import ipaddress
import itertools
import time

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the [milvus] extra (pymilvus) is not installed")
pytest.importorskip("milvus", reason="the [milvus] extra (embedded milvus server) is not installed")
psutil = pytest.importorskip("psutil", reason="psutil is needed to check the server's connections")

from bitseek.index import load_index, make_index  # noqa: E402
from bitseek.index.milvus import MilvusIndex, local_server  # noqa: E402

pytestmark = pytest.mark.slow
_NAMES = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("milvus")
    t0 = time.perf_counter()
    with local_server(base, start_timeout_s=240) as srv:
        srv_started = time.perf_counter() - t0
        assert srv_started < 240
        yield srv


def _spec(server, engine="milvus", **opts) -> str:
    opts = {"uri": server.uri, "collection": f"t{next(_NAMES)}_{int(time.time())}", **opts}
    return f"{engine}:" + ",".join(f"{k}={v}" for k, v in opts.items())


def _codes(n: int, bits: int = 16, seed: int = 0) -> np.ndarray:
    # few bits and clustered rows: many equal distances, so the tie rule is exercised
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 256, size=(8, bits // 8), dtype=np.uint8)
    rows = centres[rng.integers(0, 8, n)]
    flips = rng.random((n, bits)) < 0.08
    return rows ^ np.packbits(flips, axis=1)


def _loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return a.is_loopback


def test_server_talks_only_to_loopback(server):
    proc = psutil.Process(server.pid)
    procs = [proc, *proc.children(recursive=True)]
    conns = [c for p in procs for c in p.net_connections(kind="inet")]
    assert conns, "the server has no sockets at all?"
    for c in conns:
        if c.raddr:  # every connection, both ends on loopback
            assert _loopback(c.laddr.ip) and _loopback(c.raddr.ip), c
        elif not _loopback(c.laddr.ip):
            # Milvus 2.3.5's gRPC/metrics servers listen on the wildcard (no listen-address setting);
            # what matters is that nothing is bound to, or talks to, a non-loopback address
            assert ipaddress.ip_address(c.laddr.ip).is_unspecified, c


def test_binary_flat_equals_faiss_flat_ids_and_distances(server):
    codes, q = _codes(600), _codes(30, seed=1)
    ids = np.arange(1000, 1600, dtype=np.int64)
    ref = make_index("flat", bits=16)
    ref.add(codes, ids)
    mv = make_index(_spec(server), bits=16)
    assert isinstance(mv, MilvusIndex) and mv.exact
    try:
        meta = {"path": [f"v{i}.mp4" for i in ids]}
        mv.add(codes[:250], ids[:250], meta={"path": meta["path"][:250]})
        mv.add(codes[250:], ids[250:], meta={"path": meta["path"][250:]})  # batch inserts
        assert len(mv) == 600
        for k in (1, 10, 37):
            d1, i1 = ref.search(q, k)
            d2, i2 = mv.search(q, k)
            np.testing.assert_array_equal(i2, i1)
            np.testing.assert_array_equal(d2, d1)
        for radius in (0, 2, 5):
            a, b = ref.range_search(q, radius), mv.range_search(q, radius)
            np.testing.assert_array_equal(b.lims, a.lims)
            np.testing.assert_array_equal(b.ids, a.ids)
            np.testing.assert_array_equal(b.distances, a.distances)
        assert mv.metadata([1003, 1500]) == {"path": ["v1003.mp4", "v1500.mp4"]}
        assert mv.contains([1000, 5]).tolist() == [True, False]
        # delete, then the same again
        gone = ids[::3]
        assert mv.remove(gone) == len(gone)
        ref.remove(gone)
        d1, i1 = ref.search(q, 10)
        d2, i2 = mv.search(q, 10)
        np.testing.assert_array_equal(i2, i1)
        np.testing.assert_array_equal(d2, d1)
        with pytest.raises(Exception, match="already"):
            mv.add(codes[1:2], ids[1:2])
        with pytest.raises(Exception, match="not in the collection"):
            mv.remove([gone[0]])
        np.testing.assert_array_equal(mv.ids, np.sort(ref.ids))
    finally:
        mv.drop()


def test_binary_ivf_with_every_list_probed_equals_flat(server):
    codes, q = _codes(500, seed=2), _codes(20, seed=3)
    ref = make_index("flat", bits=16)
    ref.add(codes)
    mv = make_index(_spec(server, index="BIN_IVF_FLAT", nlist=4, nprobe=1), bits=16)
    try:
        assert not mv.exact
        mv.add(codes, np.arange(500))
        d1, _ = ref.search(q, 10)
        d2, i2 = mv.search(q, 10, nprobe=4)
        np.testing.assert_array_equal(d2, d1)  # distances exact; ties among equal distances may differ
        assert (i2 >= 0).all()
        true = ref.range_search(q, 3)
        got = mv.range_search(q, 3, nprobe=4)
        np.testing.assert_array_equal(got.lims, true.lims)
        np.testing.assert_array_equal(got.ids, true.ids)
    finally:
        mv.drop()


def test_float_ip_equals_faiss_float_ip(server):
    rng = np.random.default_rng(4)
    db = rng.standard_normal((400, 24)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:15] + 0.05 * rng.standard_normal((15, 24)).astype(np.float32)
    ref = make_index("float-ip", dim=24)
    ref.add(db, np.arange(400) * 7)
    mv = make_index(_spec(server, engine="milvus-ip"), dim=24)
    try:
        mv.add(db, np.arange(400) * 7)
        d1, i1 = ref.search(q, 12)
        d2, i2 = mv.search(q, 12)
        np.testing.assert_array_equal(i2, i1)
        np.testing.assert_allclose(d2, d1, rtol=0, atol=1e-5)
        a, b = ref.range_search(q, 0.4), mv.range_search(q, 0.4)
        np.testing.assert_array_equal(b.lims, a.lims)
        np.testing.assert_array_equal(b.ids, a.ids)
    finally:
        mv.drop()


def test_descriptor_file_reopens_the_collection(server, tmp_path):
    codes = _codes(100, seed=5)
    mv = make_index(_spec(server), bits=16)
    try:
        mv.add(codes, np.arange(100))
        mv.save(tmp_path / "m.index")
        again = load_index(tmp_path / "m.index")
        assert again.spec == mv.spec and len(again) == 100
        np.testing.assert_array_equal(again.search(codes[:5], 4)[1], mv.search(codes[:5], 4)[1])
        with pytest.raises(Exception, match="another schema"):
            make_index(mv.spec, bits=32)  # same collection, other code length
    finally:
        mv.drop()


def test_unreachable_server_is_a_config_error():
    from bitseek.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot reach Milvus"):
        make_index("milvus:uri=http://127.0.0.1:9,collection=x,timeout=2", bits=16)


def test_cli_index_and_search_through_a_descriptor(server, tmp_path, capsys):
    import json

    from bitseek.cli.main import main
    from bitseek.codes import CodeSet

    codes = _codes(200, seed=6)
    CodeSet(codes, np.arange(200), 16, meta={"path": [f"c{i}" for i in range(200)]}).save(tmp_path / "db.codes")
    CodeSet(codes[:12], np.arange(12), 16).save(tmp_path / "q.codes")
    spec = _spec(server)
    assert main(["index", "--codes", str(tmp_path / "db.codes"), "--spec", spec, "--out", str(tmp_path / "m.index")]) == 0
    assert main(["index", "--codes", str(tmp_path / "db.codes"), "--out", str(tmp_path / "f.index")]) == 0
    capsys.readouterr()
    got = []
    for ix in ("m.index", "f.index"):
        assert main(["search", "--index", str(tmp_path / ix), "--queries", str(tmp_path / "q.codes"), "-k", "5",
                     "--json"]) == 0
        got.append(json.loads(capsys.readouterr().out))
    assert got[0]["engine"] == "milvus"
    assert got[0]["results"] == got[1]["results"]  # ids, distances and metadata
    load_index(tmp_path / "m.index").drop()
