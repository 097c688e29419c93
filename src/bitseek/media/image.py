"""Still images with Pillow: EXIF orientation applied, RGB uint8, every failure a :class:`MediaError`."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bitseek.media.errors import MediaError

__all__ = ["read_image", "image_from_bytes", "to_rgb_array"]


def to_rgb_array(img: Image.Image, where: str = "image") -> np.ndarray:
    """An upright RGB uint8 HxWx3 array: EXIF orientation applied, alpha composited on white, palette expanded."""
    try:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba)
        arr = np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy, owned by the caller
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise MediaError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise MediaError(f"{where}: decoded to an empty or malformed image of shape {arr.shape}")
    return arr


def _open_fully(src: str | Path | io.BytesIO, where: str) -> np.ndarray:
    try:
        with Image.open(src) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.size[0] * img.size[1] > limit:  # checked here: warnings filters are not thread-safe
                raise MediaError(f"{where}: refused, {img.size[0]}x{img.size[1]} pixels is over Pillow's "
                                 f"decompression-bomb limit of {limit}")
            img.load()  # decode now: a truncated file fails here, not later in a worker
            return to_rgb_array(img, where)
    except MediaError:
        raise
    except FileNotFoundError:
        raise MediaError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise MediaError(f"{where}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise MediaError(f"{where}: not an image Pillow can read (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise MediaError(f"{where}: corrupt or truncated image ({type(e).__name__}: {e})") from None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to an upright RGB uint8 array of shape (H, W, 3).

    The whole file is decoded before returning, so a truncated JPEG/PNG raises :class:`MediaError`
    (naming ``path``) instead of yielding a partly grey image.
    """
    p = Path(path)
    return _open_fully(p, str(p))


def image_from_bytes(data: bytes, name: str = "upload") -> np.ndarray:
    """:func:`read_image` for bytes already in memory (an HTTP upload); errors name ``name``."""
    return _open_fully(io.BytesIO(data), name)
