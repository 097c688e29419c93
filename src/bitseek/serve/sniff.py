"""What an uploaded file is, from its first bytes (magic numbers), never from its name or header.

A client's file name and ``Content-Type`` are claims; the decoder will parse the bytes, so the
bytes decide. Only formats the decoders here read (Pillow for images, FFmpeg through PyAV for
videos) are accepted; everything else is refused before any decoder sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: bytes of the file head that :func:`sniff` looks at (MPEG-TS needs two 188-byte packets)
HEAD_BYTES = 512


@dataclass(frozen=True)
class Sniffed:
    """A recognised upload: ``kind`` routes it (image or video search), ``suffix`` names its temp file."""

    kind: str  # "image" | "video"
    format: str
    suffix: str


_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis", b"hevc", b"hevx"}
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


def sniff(head: bytes) -> Sniffed | None:
    """The media type of a file from its first :data:`HEAD_BYTES` bytes, or None if not accepted."""
    h = bytes(head[:HEAD_BYTES])
    # images (Pillow)
    if h[:3] == b"\xff\xd8\xff":
        return Sniffed("image", "jpeg", ".jpg")
    if h[:8] == b"\x89PNG\r\n\x1a\n":
        return Sniffed("image", "png", ".png")
    if h[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image", "gif", ".gif")
    if h[:4] == b"RIFF" and h[8:12] == b"WEBP":
        return Sniffed("image", "webp", ".webp")
    if h[:2] == b"BM" and len(h) >= 26 and h[6:10] == b"\0\0\0\0":  # BMP: reserved words are zero
        return Sniffed("image", "bmp", ".bmp")
    if h[:4] in (b"II*\0", b"MM\0*"):
        return Sniffed("image", "tiff", ".tif")
    # videos (FFmpeg)
    if h[4:8] == b"ftyp":
        brand = h[8:12]
        if brand in _IMAGE_BRANDS:  # HEIF/AVIF stills share the ISO box layout; no decoder here reads them
            return None
        if brand == b"qt  ":
            return Sniffed("video", "mov", ".mov")
        if brand[:3] in (b"3gp", b"3g2"):
            return Sniffed("video", "3gp", ".3gp")
        return Sniffed("video", "mp4", ".mp4")
    if h[4:8] in _QUICKTIME_ATOMS and int.from_bytes(h[:4], "big") >= 8:
        return Sniffed("video", "mov", ".mov")
    if h[:4] == b"\x1a\x45\xdf\xa3":
        return Sniffed("video", "matroska", ".webm" if b"webm" in h[:64] else ".mkv")
    if h[:4] == b"RIFF" and h[8:12] == b"AVI ":
        return Sniffed("video", "avi", ".avi")
    if h[:3] == b"FLV":
        return Sniffed("video", "flv", ".flv")
    if h[:4] == b"OggS":
        return Sniffed("video", "ogg", ".ogv")
    if h[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return Sniffed("video", "asf", ".wmv")
    if h[:4] in (b"\0\0\x01\xba", b"\0\0\x01\xb3"):
        return Sniffed("video", "mpeg", ".mpg")
    if len(h) >= 377 and h[0] == 0x47 and h[188] == 0x47 and h[376] == 0x47:
        return Sniffed("video", "mpegts", ".ts")
    return None


def describe(head: bytes) -> str:
    """A short human description of an unrecognised head, for the 415 message."""
    h = bytes(head[:HEAD_BYTES])
    if not h:
        return "an empty file"
    known = {b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive", b"\x7fELF": "an ELF executable",
             b"\x1f\x8b": "gzip data", b"ID3": "MP3 audio", b"fLaC": "FLAC audio", b"<svg": "an SVG drawing"}
    for magic, name in known.items():
        if h.startswith(magic):
            return name
    if h[4:8] == b"ftyp" and h[8:12] in _IMAGE_BRANDS:
        return f"a HEIF/AVIF image ({h[8:12].decode('ascii', 'replace').strip()})"
    try:
        h.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unrecognised binary data"


ACCEPTED = "JPEG, PNG, GIF, WebP, BMP, TIFF images; MP4/MOV/3GP, WebM/MKV, AVI, FLV, Ogg, WMV, MPEG-PS/TS videos"
