"""The real photographs inside PyPI wheels that the landmark benchmark re-photographs.

Only files that are photographs of real scenes are used (scikit-image's synthetic ``color``,
``phantom``, ``logo``, ``horse``, chessboards and matplotlib's rendered gift box are not).
PyWavelets' ``camera`` is scikit-image's ``camera`` again, so it is not used twice;
``motorcycle_right`` is a second real photograph of ``motorcycle_left``'s scene from another
viewpoint, which no homography relates to the first, so it is left out rather than mislabelled.

Three disjoint pools, so no photograph's content is in two of them:

* ``TEST``: structured scenes (buildings, launch pad, garage, portraits, still life): the test
  set's queries and database;
* ``TRAIN``: the disjoint training split (class-per-folder);
* ``DISTRACTORS``: textures, microscopy, text, astronomy: the revisitop1m-style distractors and
  the occluder textures pasted in front of the scenes.

Files are located through ``importlib`` without importing the packages, and read with Pillow or
``numpy.load`` (PyWavelets' ``.npz``; no pickles).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bitseek.errors import ConfigError, FileFormatError

__all__ = ["DISTRACTORS", "TEST", "TRAIN", "Photo", "load_photo", "photo_path"]

# package -> (import name, folder inside it)
_PACKAGES = {
    "scikit-image": ("skimage", "data"),
    "scikit-learn": ("sklearn", "datasets/images"),
    "matplotlib": ("matplotlib", "mpl-data/sample_data"),
    "PyWavelets": ("pywt", "data"),
}


@dataclass(frozen=True)
class Photo:
    """A photograph shipped in a package: ``name`` (scene id), package, file inside its data folder."""

    name: str
    package: str
    file: str


TEST = (
    Photo("china", "scikit-learn", "china.jpg"),
    Photo("rocket", "scikit-image", "rocket.jpg"),
    Photo("coffee", "scikit-image", "coffee.png"),
    Photo("motorcycle", "scikit-image", "motorcycle_left.png"),
    Photo("astronaut", "scikit-image", "astronaut.png"),
    Photo("hopper", "matplotlib", "grace_hopper.jpg"),
    Photo("camera", "scikit-image", "camera.png"),
    Photo("ascent", "PyWavelets", "ascent.npz"),
)
TRAIN = (
    Photo("chelsea", "scikit-image", "chelsea.png"),
    Photo("flower", "scikit-learn", "flower.jpg"),
    Photo("aero", "PyWavelets", "aero.npz"),
    Photo("coins", "scikit-image", "coins.png"),
    Photo("retina", "scikit-image", "retina.jpg"),
    Photo("ihc", "scikit-image", "ihc.png"),
)
DISTRACTORS = (
    Photo("brick", "scikit-image", "brick.png"),
    Photo("grass", "scikit-image", "grass.png"),
    Photo("gravel", "scikit-image", "gravel.png"),
    Photo("moon", "scikit-image", "moon.png"),
    Photo("hubble", "scikit-image", "hubble_deep_field.jpg"),
    Photo("cell", "scikit-image", "cell.png"),
    Photo("clock", "scikit-image", "clock_motion.png"),
    Photo("page", "scikit-image", "page.png"),
    Photo("text", "scikit-image", "text.png"),
)


def photo_path(photo: Photo) -> Path:
    """Where the installed package keeps the file; a missing package or file is a ``ConfigError``."""
    module, folder = _PACKAGES[photo.package]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"landmarks: the photograph {photo.file!r} comes with {photo.package}, which is not "
                          "installed: pip install 'bitseek[landmarks]'")
    path = Path(list(spec.submodule_search_locations)[0]) / folder / photo.file
    if not path.is_file():
        raise ConfigError(f"landmarks: {path}: this {photo.package} release does not ship {photo.file!r}")
    return path


@functools.lru_cache(maxsize=32)
def load_photo(photo: Photo) -> tuple[np.ndarray, str]:
    """``(uint8 (H, W, 3) RGB, sha256 of the pixels)``; grey photographs are repeated over 3 channels."""
    path = photo_path(photo)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arr = np.asarray(z["data"])
            if arr.dtype != np.uint8 or arr.ndim != 2:
                raise FileFormatError(f"{path}: expected a 2-D uint8 'data' array, got {arr.dtype} {arr.shape}")
            rgb = np.repeat(arr[:, :, None], 3, axis=2)
        else:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
    except (OSError, KeyError, ValueError) as e:
        if isinstance(e, FileFormatError):
            raise
        raise FileFormatError(f"{path}: unreadable photograph ({e})") from None
    rgb = np.ascontiguousarray(rgb)
    rgb.setflags(write=False)
    return rgb, hashlib.sha256(rgb.tobytes()).hexdigest()
