"""Safe image decoding for datasets read from untrusted or half-copied folders.

Three things go wrong with large image collections, and each must be reported with its path
rather than crash a long run somewhere deep inside a data loader:

* the file is missing or is not an image (a stray ``.txt``, an HTML error page saved as ``.jpg``);
* the file is truncated or corrupt (an interrupted copy): Pillow only notices on full decode;
* the file is a *decompression bomb*: a tiny file whose header claims billions of pixels.

Every failure becomes a :class:`CorruptImageError` (a ``FileFormatError``) naming the path and the
reason. Pillow's global ``MAX_IMAGE_PIXELS`` is left at its (sane) value; on top of it each load has
its own ``max_pixels`` limit, checked from the header before any pixel is decoded, and Pillow's
``DecompressionBombWarning`` is raised as an error for that load instead of merely printed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

from bitseek.errors import ConfigError, FileFormatError

CheckLevel = Literal["none", "header", "decode"]
CHECK_LEVELS = ("none", "header", "decode")

#: Pillow's own default limit (about 0.09 gigapixels); larger images are refused unless raised.
DEFAULT_MAX_PIXELS = 89_478_485


class CorruptImageError(FileFormatError):
    """An image file that is missing, not an image, truncated/corrupt, or too large."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SkippedImageWarning(UserWarning):
    """Images were left out (``on_corrupt: skip``); the message lists how many and which."""


def check_max_pixels(max_pixels: int, where: str = "max_pixels") -> int:
    """Validate a per-load pixel limit against Pillow's global one (which still applies)."""
    if max_pixels <= 0:
        raise ConfigError(f"{where}: must be a positive number of pixels, got {max_pixels}")
    pil_limit = Image.MAX_IMAGE_PIXELS
    if pil_limit is not None and max_pixels > pil_limit:
        raise ConfigError(
            f"{where}={max_pixels} exceeds PIL.Image.MAX_IMAGE_PIXELS={pil_limit}; Pillow would still "
            "refuse such images. Raise PIL.Image.MAX_IMAGE_PIXELS yourself first if you trust the data."
        )
    return int(max_pixels)


def _open_header(path: str | os.PathLike[str], max_pixels: int) -> Image.Image:
    """Open lazily (header only) and enforce the pixel limit; the caller must close the image."""
    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(p)
    except FileNotFoundError:
        raise CorruptImageError(p, "missing file") from None
    except IsADirectoryError:
        raise CorruptImageError(p, "is a directory, not an image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise CorruptImageError(p, f"decompression bomb refused ({e})") from None
    except UnidentifiedImageError:
        raise CorruptImageError(p, "not an image (format not recognised)") from None
    except Exception as e:  # any other decoder failure on an untrusted header
        raise CorruptImageError(p, f"unreadable image header ({type(e).__name__}: {e})") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        img.close()
        raise CorruptImageError(p, f"empty image ({w}x{h})")
    if w * h > max_pixels:
        img.close()
        raise CorruptImageError(
            p, f"decompression bomb refused: header claims {w}x{h} = {w * h} pixels > max_pixels={max_pixels}"
        )
    return img


def load_image(path: str | os.PathLike[str], max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Fully decode an image as RGB (first frame of animations), or raise CorruptImageError.

    Truncated files are errors (``ImageFile.LOAD_TRUNCATED_IMAGES`` is never enabled here), so a
    half-copied JPEG cannot silently become a grey-padded training image.
    """
    img = _open_header(path, max_pixels)
    try:
        with img, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            return img.convert("RGB")
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, zlib/struct errors...
        raise CorruptImageError(path, f"corrupt or truncated image ({type(e).__name__}: {e})") from None


def check_image(path: str | os.PathLike[str], level: CheckLevel, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Raise CorruptImageError if ``path`` fails the check of the given level.

    ``"none"`` only checks that the file exists; ``"header"`` also recognises the format and
    enforces ``max_pixels`` (cheap: no pixel data is read); ``"decode"`` decodes the whole image,
    which also catches truncation.
    """
    if level == "none":
        if not os.path.isfile(path):
            raise CorruptImageError(path, "missing file")
    elif level == "header":
        _open_header(path, max_pixels).close()
    elif level == "decode":
        load_image(path, max_pixels).close()
    else:
        raise ConfigError(f"check: must be one of {', '.join(CHECK_LEVELS)}, got {level!r}")


__all__ = [
    "CHECK_LEVELS",
    "CheckLevel",
    "CorruptImageError",
    "DEFAULT_MAX_PIXELS",
    "SkippedImageWarning",
    "check_image",
    "check_max_pixels",
    "load_image",
]
