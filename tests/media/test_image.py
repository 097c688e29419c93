"""Images: EXIF orientation, modes, and a clear MediaError (naming the file) for anything undecodable."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bitseek.errors import BitseekError
from bitseek.media import MediaError, image_from_bytes, read_image


def _asym(h: int = 20, w: int = 30) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[:5, :10] = (255, 0, 0)  # a red block in the top-left corner
    return a


def test_rgb_uint8_and_exif_orientation(tmp_path) -> None:
    img = Image.fromarray(_asym())
    plain = tmp_path / "plain.jpg"
    img.save(plain, quality=95)
    rotated = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored top-left ends up top-right
    img.save(rotated, quality=95, exif=exif)
    a, b = read_image(plain), read_image(rotated)
    assert a.dtype == np.uint8 and a.shape == (20, 30, 3) and a.flags.writeable
    assert b.shape == (30, 20, 3)
    assert b[:10, -5:, 0].mean() > 200 and b[:10, :5, 0].mean() < 50


def test_modes_become_rgb(tmp_path) -> None:
    for mode in ("L", "P", "RGBA", "I;16", "CMYK", "LA"):
        p = tmp_path / f"x_{mode.replace(';', '')}.{'tif' if mode in ('I;16', 'CMYK') else 'png'}"
        Image.fromarray(_asym()).convert(mode).save(p)
        a = read_image(p)
        assert a.shape == (20, 30, 3) and a.dtype == np.uint8, mode
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent: composited on white, not black
    p = tmp_path / "clear.png"
    Image.fromarray(rgba, "RGBA").save(p)
    assert read_image(p).min() == 255


def test_real_photo(tmp_path) -> None:
    pytest.importorskip("skimage", reason="scikit-image's photos: bitseek[collections]")
    from bitseek.media.samples import packaged_image

    assert read_image(packaged_image("chelsea.png")).shape == (300, 451, 3)


def test_bad_files_name_the_path(tmp_path) -> None:
    good = io.BytesIO()
    Image.fromarray(_asym(200, 300)).save(good, format="JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    text = tmp_path / "a.png"
    text.write_text("not an image")
    empty = tmp_path / "e.jpg"
    empty.write_bytes(b"")
    for bad in (cut, text, empty, tmp_path / "missing.jpg", tmp_path):
        with pytest.raises(MediaError) as e:
            read_image(bad)
        assert str(e.value).startswith(str(bad)) and isinstance(e.value, BitseekError)
    with pytest.raises(MediaError, match="^upload.bin:"):
        image_from_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "upload.bin")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused(tmp_path, monkeypatch) -> None:
    p = tmp_path / "big.png"
    Image.fromarray(_asym(100, 100)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    with pytest.raises(MediaError, match="big.png.*decompression-bomb"):
        read_image(p)
