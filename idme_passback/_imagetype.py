"""Recognise an image by its first bytes, not by what the header claims."""

from __future__ import annotations

#: Bytes needed to recognise every format below.
SNIFF_BYTES = 16

# (prefix, offset, media type, extension)
_SIGNATURES: tuple[tuple[bytes, int, str, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png", ".png"),
    (b"GIF87a", 0, "image/gif", ".gif"),
    (b"GIF89a", 0, "image/gif", ".gif"),
    (b"II*\x00", 0, "image/tiff", ".tif"),
    (b"MM\x00*", 0, "image/tiff", ".tif"),
    (b"BM", 0, "image/bmp", ".bmp"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", 0, "image/jp2", ".jp2"),
)
_HEIF_BRANDS = {b"heic": ".heic", b"heix": ".heic", b"mif1": ".heif", b"avif": ".avif"}


#: Every extension :func:`sniff_image` can give.
IMAGE_EXTENSIONS: tuple[str, ...] = tuple(
    dict.fromkeys([sig[3] for sig in _SIGNATURES] + [".webp", *_HEIF_BRANDS.values()])
)


def sniff_image(head: bytes) -> tuple[str, str] | None:
    """Return ``(media_type, extension)`` for the image ``head`` starts, or ``None``."""
    for prefix, offset, media_type, extension in _SIGNATURES:
        if head.startswith(prefix, offset):
            return media_type, extension
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp", ".webp"
    if head[4:8] == b"ftyp":
        brand = _HEIF_BRANDS.get(head[8:12])
        if brand is not None:
            return ("image/avif" if brand == ".avif" else "image/heif"), brand
    return None
