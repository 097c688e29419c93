"""CVNet's test-time protocol against a port of the official loader (test/dataset.py, test/test_utils.py).

The reference functions below restate the official rules line by line (cv2 decoding, int-truncated
crop, cv2.resize per scale on the uint8 image, /255 then BGR mean/std in float32, per-scale
normalise -> mean -> normalise); bitseek's functions must give the same bytes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

cv2 = pytest.importorskip("cv2", reason="the CVNet protocol needs opencv-python-headless (bitseek[cvnet])")

from bitseek.data.revisited import read_bgr  # noqa: E402
from bitseek.encode.multiscale import (BGR_MEAN, BGR_STD, DEFAULT_SCALES, MultiScaleImages,  # noqa: E402
                                       aggregate_scales, crop_to_box, multiscale_descriptors, normalise_bgr,
                                       rerank_maps, resize_scale)
from bitseek.errors import ConfigError, InputError  # noqa: E402

# ----------------------------------------------------------------------------- reference port

_MEAN = [0.406, 0.456, 0.485]
_SD = [0.225, 0.224, 0.229]


def ref_items(path: str, scale_list, bbx=None) -> list[np.ndarray]:
    """The official DataSet.__getitem__ + _prepare_im + color_norm, restated."""
    im = cv2.imread(path)
    if bbx is not None:
        im = im[int(bbx[1]):int(bbx[3]), int(bbx[0]):int(bbx[2])]
    out = []
    for scale in scale_list:
        if scale == 1.0:
            im_np = im.astype(np.float32, copy=False)
        elif scale < 1.0:
            im_np = cv2.resize(im, dsize=(0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_AREA).astype(np.float32)
        else:
            im_np = cv2.resize(im, dsize=(0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR).astype(np.float32)
        x = im_np.transpose([2, 0, 1])
        x = x / 255.0
        for i in range(x.shape[0]):
            x[i] = x[i] - _MEAN[i]
            x[i] = x[i] / _SD[i]
        out.append(x)
    return out


@torch.no_grad()
def ref_extract(model, items: list[list[np.ndarray]]) -> np.ndarray:
    """The official extract_feature: per-scale lists, F.normalize, mean over scales, F.normalize."""
    feats = [[] for _ in items[0]]
    for im_list in items:
        for idx, x in enumerate(im_list):
            desc = model.global_descriptor(torch.from_numpy(x).unsqueeze(0))
            feats[idx].append(F.normalize(desc, p=2, dim=1))
    feats = [torch.cat(f, dim=0) for f in feats]
    return F.normalize(torch.mean(torch.cat([f.unsqueeze(0) for f in feats], dim=0), dim=0), p=2, dim=1).numpy()


class TinyGlobal(nn.Module):
    """A cheap stand-in with CVNet's global_descriptor contract whose output norm varies with the input."""

    dim = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def global_descriptor(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1) * (1.0 + x.shape[-1] / 10.0)

    def rerank_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour structure plus noise: resamplers disagree on it, unlike on flat grey."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 3 + yy) % 256, (yy * 5) % 256, (xx * yy) % 256], axis=-1).astype(np.float64)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture()
def jpgs(tmp_path):
    paths = []
    for i, (h, w) in enumerate([(37, 53), (48, 31), (41, 41)]):
        p = tmp_path / f"im{i}.jpg"
        assert cv2.imwrite(str(p), _photo(h, w, i))
        paths.append(str(p))
    return paths


# ----------------------------------------------------------------------------- the rules


def test_pyramid_equals_the_official_loader_byte_for_byte(jpgs):
    bbx = [3.7, 2.2, 40.9, 30.5]
    for i, p in enumerate(jpgs):
        box = bbx if i == 0 else None
        ds = MultiScaleImages(lambda j, p=p: read_bgr(p), 1, DEFAULT_SCALES, boxes=[box], crop="truncate")
        ours = [t.numpy() for t in ds[0]]
        ref = ref_items(p, DEFAULT_SCALES, box)
        assert [o.shape for o in ours] == [r.shape for r in ref]
        for o, r in zip(ours, ref):
            assert o.dtype == np.float32 and np.array_equal(o, r)


def test_interpolation_rule_area_below_one_linear_above():
    im = _photo(45, 61, 3)
    down, up = resize_scale(im, 0.7071), resize_scale(im, 1.4142)
    assert np.array_equal(down, cv2.resize(im, (0, 0), fx=0.7071, fy=0.7071, interpolation=cv2.INTER_AREA))
    assert np.array_equal(up, cv2.resize(im, (0, 0), fx=1.4142, fy=1.4142, interpolation=cv2.INTER_LINEAR))
    # the rule is visible: the other interpolation gives other pixels on this image
    assert not np.array_equal(down, cv2.resize(im, (0, 0), fx=0.7071, fy=0.7071, interpolation=cv2.INTER_LINEAR))
    assert not np.array_equal(up, cv2.resize(im, (0, 0), fx=1.4142, fy=1.4142, interpolation=cv2.INTER_AREA))
    assert resize_scale(im, 1.0) is im  # scale 1 is the image itself
    assert down.dtype == np.uint8 and down.shape == (32, 43, 3)  # resized on uint8, cvRound sizes


def test_bgr_order_and_statistics(tmp_path):
    from PIL import Image

    rgb = _photo(20, 24, 5)
    Image.fromarray(rgb).save(tmp_path / "x.png")  # lossless: the decoded pixels are known
    bgr = read_bgr(tmp_path / "x.png")
    assert np.array_equal(bgr, rgb[:, :, ::-1])
    x = normalise_bgr(bgr)
    assert x.shape == (3, 20, 24) and x.dtype == np.float32
    for c in range(3):  # channel 0 is blue, normalised with blue's statistics
        want = (bgr[:, :, c].astype(np.float32) / np.float32(255) - np.float32(BGR_MEAN[c])) / np.float32(BGR_STD[c])
        assert np.array_equal(x[c], want)
    assert BGR_MEAN == (0.406, 0.456, 0.485) and BGR_STD == (0.225, 0.224, 0.229)


def test_crop_rules_truncate_and_round():
    from PIL import Image

    im = _photo(30, 40, 6)
    bbx = [2.5, 1.7, 20.5, 11.2]
    t = crop_to_box(im, bbx, "truncate")
    assert np.array_equal(t, im[1:11, 2:20])
    r = crop_to_box(im, bbx, "round")  # round half to even: 2.5 -> 2, 20.5 -> 20, 1.7 -> 2, 11.2 -> 11
    assert np.array_equal(r, im[2:11, 2:20])
    for box in (bbx, [3.5, 0.5, 39.5, 29.5], [-3.2, -1.6, 45.4, 33.5]):  # revisitop's rule is PIL's crop
        assert np.array_equal(crop_to_box(im, box, "round"), np.asarray(Image.fromarray(im).crop(tuple(box))))
    with pytest.raises(ConfigError, match="crop rule"):
        crop_to_box(im, bbx, "floor")
    with pytest.raises(InputError, match="leaves nothing"):
        crop_to_box(im, [5, 5, 5.4, 9], "truncate")


def test_aggregation_is_normalise_mean_normalise():
    g = torch.Generator().manual_seed(0)
    per = [torch.randn(4, 6, generator=g) * s for s in (0.1, 1.0, 30.0)]  # very different norms
    got = aggregate_scales(per)
    want = F.normalize(torch.mean(torch.stack([F.normalize(d, dim=1) for d in per]), dim=0), dim=1)
    assert torch.equal(got, want)
    assert not torch.allclose(got, F.normalize(torch.stack(per).mean(0), dim=1), atol=1e-3)


def test_multiscale_descriptors_equal_the_official_extract_feature(jpgs):
    model = TinyGlobal()
    boxes = [[1.9, 2.9, 30.1, 25.8], None, [0, 0, 41, 41]]
    ds = MultiScaleImages(lambda i: read_bgr(jpgs[i]), 3, DEFAULT_SCALES, boxes=boxes)
    got = multiscale_descriptors(model, ds)
    maps = rerank_maps(model, ds)
    want = ref_extract(model, [ref_items(p, DEFAULT_SCALES, b) for p, b in zip(jpgs, boxes)])
    assert np.array_equal(got, want)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0)
    assert [m.shape[1:] for m in maps] == [
        tuple(model.rerank_features(x.unsqueeze(0)).shape[2:]) for x in (ds[0][1], ds[1][1], ds[2][1])]
    assert all(m.dtype == np.float16 for m in maps)
    full = [model.rerank_features(x[1].unsqueeze(0))[0].detach().numpy() for x in (ds[0], ds[1], ds[2])]
    assert all(np.array_equal(m, f.astype(np.float16)) for m, f in zip(maps, full))
    # any subset of rows gives the same rows (what a resumed, chunked extraction relies on)
    part = multiscale_descriptors(model, ds, rows=[2, 0])
    assert np.array_equal(part, got[[2, 0]])


def test_shared_backbone_features_equal_each_network_on_its_own(jpgs):
    """Two heads (another whitening, SuperGlobal's pooling and max over scales) on one backbone:
    one pass gives each network its own multiscale_descriptors, and the scale-1 re-rank maps."""
    from bitseek.encode.multiscale import pyramids_from_maps, rerank_pyramids, shared_backbone_features
    from bitseek.models.cvnet import CVNet, CVNetConfig

    torch.manual_seed(0)
    a = CVNet(CVNetConfig(depth=50, reduction_dim=16, rerank_dim=8)).eval()
    b = CVNet(CVNetConfig(depth=50, reduction_dim=16, rerank_dim=8)).eval()
    b.backbone.load_state_dict(a.backbone.state_dict())
    b.set_pooling(gemp=True, prefc_l2=True, scale_combine="max")
    ds = MultiScaleImages(lambda i: read_bgr(jpgs[i]), 3, DEFAULT_SCALES, boxes=[[1.9, 2.9, 30.1, 25.8], None, None])
    (da, db), maps = shared_backbone_features([a, b], ds, maps=True)
    with torch.no_grad():
        assert np.array_equal(da, multiscale_descriptors(a, ds)) and np.array_equal(db, multiscale_descriptors(b, ds))
        assert not np.allclose(da, db)
        assert all(np.array_equal(m, r) for m, r in zip(maps, rerank_maps(a, ds)))
        for p, q in zip(pyramids_from_maps(a, maps), rerank_pyramids(a, ds)):  # from the fp16 maps: ~fp16 apart
            assert p.size == q.size and all(np.allclose(x, y, atol=2e-2) for x, y in zip(p.levels, q.levels))
    c = CVNet(CVNetConfig(depth=50, reduction_dim=16, rerank_dim=8)).eval()  # other backbone weights
    with pytest.raises(InputError, match="backbone weights differ"):
        shared_backbone_features([a, c], ds)
    with pytest.raises(InputError, match="scale 1.0"):
        shared_backbone_features([a], MultiScaleImages(lambda i: read_bgr(jpgs[i]), 3, (0.5, 2.0)), maps=True)
