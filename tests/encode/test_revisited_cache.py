"""The chunked feature cache: same numbers as a direct extraction, resumable after a kill, never half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the CVNet protocol needs opencv-python-headless (bitseek[cvnet])")

from bitseek.encode.multiscale import multiscale_descriptors, rerank_maps  # noqa: E402
from bitseek.encode.revisited_cache import ConcatMaps, FeatureCache  # noqa: E402
from bitseek.errors import FileFormatError, InputError  # noqa: E402

# A module the test and a killed child process both import: same images, same deterministic model.
HELPER = '''
import time, numpy as np, torch, torch.nn.functional as F
from torch import nn
import cv2
from bitseek.data.revisited import read_bgr
from bitseek.encode.multiscale import MultiScaleImages

class Tiny(nn.Module):
    dim = 8
    def __init__(self, delay=0.0):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.delay, self.calls = delay, 0
    def global_descriptor(self, x):
        self.calls += 1
        time.sleep(self.delay)
        return F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1)
    def rerank_features(self, x):
        return self.conv(x)

def images(root, n=7):
    paths = []
    for i in range(n):
        p = f"{root}/im{i}.jpg"
        rng = np.random.default_rng(i)
        cv2.imwrite(p, rng.integers(0, 255, (20 + i, 30 - i, 3), dtype=np.uint8))
        paths.append(p)
    boxes = [[1.5, 2.5, 18.2, 15.9] if i % 3 == 0 else None for i in range(n)]
    return paths, MultiScaleImages(lambda i: read_bgr(paths[i]), n, (0.7071, 1.0, 1.4142), boxes=boxes)
'''


@pytest.fixture()
def helper(tmp_path, monkeypatch):
    (tmp_path / "cache_helper.py").write_text(HELPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import cache_helper

    importlib.reload(cache_helper)
    (tmp_path / "img").mkdir()
    return cache_helper


def _cache(h, tmp_path, kind="global", model_id="tiny-seed0", rows=None, chunk=2):
    paths, ims = h.images(tmp_path / "img")
    return FeatureCache(tmp_path / "cache", "set-db", kind, ims, [Path(p).name for p in paths], model_id,
                        rows=rows, chunk=chunk)


def test_cache_equals_direct_extraction_and_is_read_back(helper, tmp_path):
    c = _cache(helper, tmp_path).extract(helper.Tiny(), show_progress=False)
    assert c.n_chunks == 4 and c.complete
    _, ims = helper.images(tmp_path / "img")
    assert np.array_equal(c.global_descriptors(), multiscale_descriptors(helper.Tiny(), ims))
    m = _cache(helper, tmp_path, kind="maps").extract(helper.Tiny(), show_progress=False).maps()
    want = rerank_maps(helper.Tiny(), ims)
    assert len(m) == 7 and all(np.array_equal(m[i], want[i]) for i in range(7)) and m[0].dtype == np.float16
    # a second run computes nothing
    again = helper.Tiny()
    _cache(helper, tmp_path).extract(again, show_progress=False)
    assert again.calls == 0


def test_other_weights_or_settings_never_read_this_cache(helper, tmp_path):
    a = _cache(helper, tmp_path)
    assert _cache(helper, tmp_path, model_id="other-weights").dir != a.dir
    _, ims = helper.images(tmp_path / "img")
    ims.crop = "round"
    assert FeatureCache(tmp_path / "cache", "set-db", "global", ims, [f"im{i}.jpg" for i in range(7)],
                        "tiny-seed0").dir != a.dir


def test_an_interrupted_extraction_resumes_from_the_last_complete_chunk(helper, tmp_path):
    class Dies(helper.Tiny):
        def global_descriptor(self, x):
            if self.calls == 3 * 3:  # the 4th image (inside chunk 1) never finishes
                raise KeyboardInterrupt
            return super().global_descriptor(x)

    c = _cache(helper, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        c.extract(Dies(), show_progress=False)
    assert sorted(p.name for p in c.dir.iterdir()) == ["00000.fs", "manifest.json"]  # no partial file
    with pytest.raises(InputError, match="extraction not finished"):
        c.global_descriptors()
    resumed = helper.Tiny()
    c.extract(resumed, show_progress=False)
    assert resumed.calls == 3 * 5  # images 2..6 only, three scales each
    _, ims = helper.images(tmp_path / "img")
    assert np.array_equal(c.global_descriptors(), multiscale_descriptors(helper.Tiny(), ims))


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_killed_process_leaves_only_whole_chunks(helper, tmp_path):
    script = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import cache_helper as h\n"
              "from pathlib import Path\n"
              "from bitseek.encode.revisited_cache import FeatureCache\n"
              f"paths, ims = h.images({str(tmp_path / 'img')!r})\n"
              f"c = FeatureCache({str(tmp_path / 'cache')!r}, 'set-db', 'global', ims, [Path(p).name for p in paths],"
              " 'tiny-seed0', chunk=2)\n"
              "c.extract(h.Tiny(delay=0.05), show_progress=False)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    c = _cache(helper, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (c.dir / "00001.fs").is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the child finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    on_disk = sorted(p.name for p in c.dir.iterdir() if p.suffix == ".fs")
    assert "00001.fs" in on_disk and "00003.fs" not in on_disk
    resumed = helper.Tiny()
    c.extract(resumed, show_progress=False)  # sweeps the killed writer's temporary, if it left one
    assert resumed.calls < 3 * 7
    assert not [p for p in c.dir.iterdir() if p.suffix == ".tmp"]
    _, ims = helper.images(tmp_path / "img")
    assert np.array_equal(c.global_descriptors(), multiscale_descriptors(helper.Tiny(), ims))


def test_a_damaged_chunk_is_named(helper, tmp_path):
    c = _cache(helper, tmp_path).extract(helper.Tiny(), show_progress=False)
    p = c.chunk_path(1)
    raw = bytearray(p.read_bytes())
    raw[-8 * 2 - 5] ^= 0xFF  # a byte of the rows, before the ids
    p.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match=r"00001\.fs: rows checksum mismatch.*delete that file"):
        c.global_descriptors()


def test_a_subset_map_cache_and_concatenated_sources(helper, tmp_path):
    sub = _cache(helper, tmp_path, kind="maps", rows=[5, 1, 6]).extract(helper.Tiny(), show_progress=False)
    m = sub.maps()
    _, ims = helper.images(tmp_path / "img")
    want = rerank_maps(helper.Tiny(), ims, rows=[1])
    assert 1 in m and 0 not in m and np.array_equal(m[1], want[0])
    with pytest.raises(InputError, match="no re-rank map cached for image 0"):
        m[0]
    both = ConcatMaps([["a", "b"], m])
    assert len(both) == 9 and both[1] == "b" and np.array_equal(both[3], want[0])


def test_pyramid_cache_holds_each_images_convolved_levels(helper, tmp_path):
    """kind='pyramid': the re-rank pyramid (3 levels of the re-ranker's 3x3-conv outputs) per image,
    fp16, read back as the same arrays the direct extraction gives, in chunks like the maps."""
    import torch

    from bitseek.encode.multiscale import rerank_pyramids
    from bitseek.models.cvnet.rerank import CVReranker, Pyramid

    class WithHead(helper.Tiny):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.rerank = CVReranker(8, 4).eval()

    _, ims = helper.images(tmp_path / "img")
    c = _cache(helper, tmp_path, kind="pyramid", chunk=3).extract(WithHead(), show_progress=False)
    assert c.dir != _cache(helper, tmp_path, kind="maps").dir
    got, want = c.maps(), rerank_pyramids(WithHead(), ims)
    maps = rerank_maps(helper.Tiny(), ims)
    assert len(got) == 7
    for i in range(7):
        p = got[i]
        assert isinstance(p, Pyramid) and p.size == maps[i].shape[1:] and len(p.levels) == 3
        assert all(lv.dtype == np.float16 and lv.shape[0] == 4 for lv in p.levels)
        assert all(np.array_equal(a, b) for a, b in zip(p.levels, want[i].levels))
    assert got[6].levels[-1].shape[1:] == maps[6].shape[1:]  # the scale-1 level has the map's size
