"""Centre-crop placement of the DeepHash/CSCE test transform, against torchvision's rule.

torchvision's ``CenterCrop`` puts the top-left corner at ``int(round((size - crop) / 2))`` with
Python's round-half-to-even, so an odd margin of 3 px gives offset 2 and one of 11 px offset 6,
where flooring would give 1 and 5. The expected offsets below are those numbers, not calls into
the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bitseek.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, center_crop_box

# (height, width, crop) -> (top, left)
CASES = [
    ((35, 43, 32), (2, 6)),  # margins 3 and 11: 1.5 -> 2, 5.5 -> 6
    ((37, 41, 32), (2, 4)),  # margins 5 and 9: 2.5 -> 2, 4.5 -> 4 (half to even)
    ((32, 40, 32), (0, 4)),
    ((229, 255, 224), (2, 16)),  # margins 5 and 31: 2.5 -> 2, 15.5 -> 16
]


@pytest.mark.parametrize("size, corner", CASES)
def test_center_crop_box_rounds_like_torchvision(size, corner) -> None:
    h, w, crop = size
    assert center_crop_box(h, w, crop) == corner


@pytest.mark.parametrize("size, corner", CASES[:2])
def test_test_transform_takes_the_window_at_that_corner(size, corner) -> None:
    h, w, crop = size
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    arr = np.stack([rows, cols, np.full_like(rows, 7)], axis=-1).astype(np.uint8)  # each pixel knows where it is
    out = ImageTransform(resize=0, crop=crop)(Image.fromarray(arr)).numpy()
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float64).reshape(3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float64).reshape(3, 1, 1)
    pixels = np.rint((out * std + mean) * 255).astype(int)
    top, left = corner
    assert pixels[0, 0, 0] == top and pixels[1, 0, 0] == left
    np.testing.assert_array_equal(pixels[0], rows[top:top + crop, left:left + crop])
    np.testing.assert_array_equal(pixels[1], cols[top:top + crop, left:left + crop])
    assert (pixels[2] == 7).all()


def test_normalisation_is_per_channel_in_rgb_order() -> None:
    """ToTensor + Normalize(ImageNet) on a random RGB image: (x / 255 - mean[c]) / std[c], channel-first."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = ImageTransform(resize=0, crop=0)(Image.fromarray(arr)).numpy()
    assert out.shape == (3, 5, 7) and out.dtype == np.float32
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's ImageNet statistics
    for c in range(3):
        want = (arr[:, :, c].astype(np.float64) / 255.0 - mean[c]) / std[c]
        np.testing.assert_allclose(out[c], want, rtol=1e-6, atol=1e-6)
