"""The HTTP API in-process over the real collection: every route, every refusal a clear 4xx, limits, token,
parallel searches."""

from __future__ import annotations

import asyncio
import io
import re
import time

import numpy as np
import pytest

from tests.serve.conftest import Watched, jpeg_bytes

from fastapi.testclient import TestClient  # noqa: E402  (conftest skips without fastapi)

from bitseek.serve.app import ServeSettings, build_app


def client(col, **kw) -> TestClient:
    """A client that keeps one event loop for its requests, as uvicorn does (entered; closed at exit)."""
    c = TestClient(build_app(col, ServeSettings(**kw)), raise_server_exceptions=True)
    c.__enter__()
    _open.append(c)
    return c


_open: list[TestClient] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _open:
        _open.pop().__exit__(None, None, None)


def detail(r) -> str:
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    return body["detail"]


def test_health_info_and_item_routes(col, real_collection):
    c = client(col, workers=2)
    r = c.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["items"] == real_collection.n_items
    info = c.get("/api/info").json()
    assert info["items"] == real_collection.n_items and info["max_k"] == 1000
    i = real_collection.ids["bikes.mp4"]
    meta = c.get(f"/api/items/{i}").json()
    assert meta["id"] == i and meta["path"].endswith("bikes.mp4") and meta["kind"] == "video"
    assert meta["duration"] > 0 and len(meta["frame_times"]) > 1 and meta["thumbnail"] == f"/api/items/{i}/thumbnail"
    t = c.get(f"/api/items/{i}/thumbnail")
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg" and t.content[:3] == b"\xff\xd8\xff"


def test_search_by_upload_finds_the_photo_whatever_its_name(col, real_collection):
    c = client(col)
    # a JPEG sent under a .png name and a text content type is still searched as the JPEG it is
    query = jpeg_bytes(real_collection.media["coffee.png"], quality=50)
    r = c.post("/api/search?k=3", files={"file": ("holiday.png", query, "text/plain")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 3 and body["results"][0]["id"] == real_collection.ids["coffee.png"]
    assert body["query"] == {"upload": "holiday.png", "kind": "image", "format": "jpeg"}
    top = body["results"][0]
    assert top["thumbnail"] == f"/api/items/{top['id']}/thumbnail" and top["path"].endswith("coffee.png")
    assert set(top) >= {"id", "path", "kind", "distance", "score", "time"} and top["score"] > body["results"][1]["score"]


def test_search_by_id_and_by_video(col, real_collection):
    from bitseek.media.samples import packaged_video

    c = client(col)
    bikes = real_collection.ids["bikes.mp4"]
    r = c.get(f"/api/items/{bikes}/similar", params={"k": 2})
    assert r.status_code == 200 and r.json()["count"] == 2 and bikes not in [h["id"] for h in r.json()["results"]]
    clip = packaged_video("carphone_distorted.mp4").read_bytes()
    r = c.post("/api/search", files={"file": ("clip.bin", clip, "application/octet-stream")})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert r.json()["query"]["kind"] == "video" and top["id"] == real_collection.ids["carphone_pristine.mp4"]
    assert top["kind"] == "video" and top["time"] is not None


def test_radius_keeps_only_near_duplicates(col, real_collection):
    c = client(col)
    exact = real_collection.media["chelsea.png"].read_bytes()
    r = c.post("/api/search", params={"radius": 0.99}, files={"file": ("chelsea.png", exact)})
    assert r.status_code == 200 and [h["id"] for h in r.json()["results"]] == [real_collection.ids["chelsea.png"]]


@pytest.mark.parametrize("query,fragment", [
    ("k=0", "k: "), ("k=1001", "k: "), ("k=ten", "k: "), ("k=-3", "k: "),
    ("radius=nan", "radius"), ("radius=inf", "radius"), ("radius=abc", "radius"),
])
def test_bad_parameters_are_422_with_a_message(col, real_collection, query, fragment):
    c = client(col)
    for r in (c.get(f"/api/items/{min(real_collection.ids.values())}/similar?{query}"),
              c.post(f"/api/search?{query}", files={"file": ("q.jpg", b"\xff\xd8\xff\xe0" + b"0" * 100, "image/jpeg")})):
        assert r.status_code == 422, (query, r.status_code, r.text)
        assert fragment in detail(r)


@pytest.mark.parametrize("path", ["/api/items/{}", "/api/items/{}/similar", "/api/items/{}/thumbnail"])
def test_unknown_id_is_404(col, real_collection, path):
    missing = max(real_collection.ids.values()) + 1000
    r = client(col).get(path.format(missing))
    assert r.status_code == 404 and str(missing) in detail(r)


@pytest.mark.parametrize("path", ["/api/items/-1", "/api/items/x/similar", f"/api/items/{2**64}"])
def test_malformed_id_is_422(col, path):
    r = client(col).get(path)
    assert r.status_code == 422 and "item_id" in detail(r)


@pytest.mark.parametrize("payload,what", [
    (b"hello, I am a text file\n" * 10, "text"),
    (b"%PDF-1.7\n" + bytes(200), "PDF"),
    (b"PK\x03\x04" + bytes(200), "ZIP"),
    (b"", "empty"),
    (b"\x00\x00\x00\x1cftypheic" + bytes(200), "HEIF"),
])
def test_content_not_media_is_415_whatever_the_name(col, payload, what):
    r = client(col).post("/api/search", files={"file": ("photo.jpg", payload, "image/jpeg")})
    assert r.status_code == 415, r.text
    assert what in detail(r) and "photo.jpg" in detail(r)


def test_missing_file_field_is_422(col):
    r = client(col).post("/api/search", data={"other": "x"})
    assert r.status_code == 422 and "file" in detail(r)


def test_corrupt_media_is_422_naming_the_upload_not_the_temp_file(col, real_collection):
    c = client(col)
    truncated = jpeg_bytes(real_collection.media["chelsea.png"])[:300]
    r = c.post("/api/search", files={"file": ("cat.jpg", truncated, "image/jpeg")})
    assert r.status_code == 422 and "cat.jpg" in detail(r) and "bitseek-query-" not in detail(r)
    fake_mp4 = b"\x00\x00\x00\x18ftypmp42" + bytes(64) + b"garbage" * 50
    cut_mp4 = real_collection.media["bikes.mp4"].read_bytes()[:4000]  # a real clip cut short
    r = c.post("/api/search", files={"file": ("v.mp4", fake_mp4, "video/mp4")})
    assert r.status_code == 422 and "v.mp4" in detail(r) and "bitseek-query-" not in detail(r)
    r = c.post("/api/search", files={"file": ("cut.mp4", cut_mp4, "video/mp4")})
    assert r.status_code == 422 and "cut.mp4" in detail(r) and "bitseek-query-" not in detail(r)
    assert c.get("/healthz").status_code == 200


def test_image_declaring_too_many_pixels_is_refused_before_decoding(col):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (4000, 3000)).save(buf, "PNG")  # tiny file, 12 Mpx declared
    r = client(col, max_image_pixels=1_000_000).post("/api/search", files={"file": ("big.png", buf.getvalue())})
    assert r.status_code == 422 and "12000000 pixels" in detail(r)


def test_body_over_the_limit_is_413_by_header_and_while_streaming(col, real_collection):
    c = client(col, max_upload_bytes=64 * 1024)
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    big = jpeg_bytes(Image.fromarray(noise), quality=100)
    assert len(big) > 64 * 1024
    r = c.post("/api/search", files={"file": ("big.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "MiB" in detail(r)

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        boundary = b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n"
        yield boundary
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]
        yield b"\r\n--xyz--\r\n"

    r = c.post("/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 413 and "MiB" in detail(r)
    small = jpeg_bytes(Image.open(real_collection.media["coffee.png"]).crop((0, 0, 100, 100)))
    assert c.post("/api/search", files={"file": ("s.jpg", small)}).status_code == 200


def test_token(col, real_collection):
    c = client(col, token="s3cret")
    i = real_collection.ids["rocket.jpg"]
    for r in (c.get("/api/info"), c.get(f"/api/items/{i}"), c.get(f"/api/items/{i}/thumbnail"),
              c.get(f"/api/items/{i}/similar"), c.post("/api/search", files={"file": ("q.jpg", b"x")}),
              c.get("/api/info", headers={"Authorization": "Bearer wrong"}),
              c.get("/api/info", headers={"Authorization": "s3cret"})):
        assert r.status_code == 401 and "Bearer" in detail(r) and r.headers["www-authenticate"] == "Bearer"
    ok = {"Authorization": "Bearer s3cret"}
    assert c.get("/api/info", headers=ok).status_code == 200
    r = c.post("/api/search", headers=ok, files={"file": ("q.jpg", jpeg_bytes(real_collection.media["rocket.jpg"]))})
    assert r.status_code == 200 and r.json()["results"][0]["id"] == i
    assert c.get("/healthz").status_code == 200  # liveness stays open for probes
    assert c.get("/").status_code == 200  # the page itself asks for the token


def test_settings_are_validated():
    from bitseek.errors import InputError

    for bad in ({"max_k": 0}, {"default_k": 20, "max_k": 10}, {"timeout_s": 0}, {"workers": 0}, {"token": " "},
                {"max_upload_bytes": 10}):
        with pytest.raises(InputError, match=next(iter(bad)).split("_")[0]):
            ServeSettings(**bad)


def test_slow_search_is_503_and_the_service_stays_up(col, real_collection):
    a, b = sorted(real_collection.ids.values())[:2]
    slow = Watched(col, delay=1.5)
    c = client(slow, timeout_s=0.2, workers=1, queue_timeout_s=0.2)
    r = c.get(f"/api/items/{a}/similar")
    assert r.status_code == 503 and "0.2 s" in detail(r) and "Retry-After" in r.headers
    # the one worker is still held by the late search: the next request is told the service is busy
    r = c.get(f"/api/items/{b}/similar")
    assert r.status_code == 503 and "busy" in detail(r)
    assert c.get("/healthz").status_code == 200 and c.get(f"/api/items/{b}").status_code == 200
    slow.delay = 0.0
    time.sleep(1.5)  # the late search finishes and frees its worker
    assert c.get(f"/api/items/{b}/similar").status_code == 200


def test_concurrent_searches_run_in_parallel(col, real_collection):
    import httpx

    watched = Watched(col, delay=0.3)
    app = build_app(watched, ServeSettings(workers=4))
    ids = sorted(real_collection.ids.values())

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            rs = await asyncio.gather(*[ac.get(f"/api/items/{ids[i % len(ids)]}/similar") for i in range(8)])
        return [r.status_code for r in rs]

    t0 = time.perf_counter()
    codes = asyncio.run(go())
    took = time.perf_counter() - t0
    assert codes == [200] * 8
    assert watched.peak == 4, watched.peak  # four workers busy at once, never more
    assert took < 8 * 0.3 * 0.6, took  # serial would take 2.4 s


def test_page_static_and_docs_are_self_contained(col):
    from bitseek.serve.app import _static_dir

    c = client(col)
    r = c.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert c.get(asset).status_code == 200
    for f in _static_dir().iterdir():  # no CDN, no web fonts: nothing the page loads leaves this server
        text = f.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), f
        assert "@import" not in text and "@font-face" not in text
    docs = c.get("/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert c.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    spec = c.get("/openapi.json").json()
    assert {"/api/search", "/api/items/{item_id}", "/api/items/{item_id}/similar", "/api/items/{item_id}/thumbnail",
            "/healthz"} <= set(spec["paths"])
