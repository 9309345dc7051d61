"""Card images for the fake server, drawn with Pillow.

Every image is a function of the document number, its side and the output
size only, so the same request always gets the same bytes and a test can
predict them with :meth:`FakePassbackServer.served_bytes`.
"""

from __future__ import annotations

import hashlib
import io
from typing import Literal, TypeAlias

__all__ = ["ImageFormat", "content_type", "render_card"]

ImageFormat: TypeAlias = Literal["JPEG", "PNG"]

_CONTENT_TYPES: dict[str, str] = {"JPEG": "image/jpeg", "PNG": "image/png"}


def content_type(image_format: ImageFormat) -> str:
    """Return the ``Content-Type`` for an image format name."""
    return _CONTENT_TYPES[image_format]


def _palette(document: int, side: str) -> list[tuple[int, int, int]]:
    # sha256 rather than hash(): the colours must not change between processes.
    digest = hashlib.sha256(f"{document}:{side}".encode()).digest()
    return [
        (96 + digest[i] % 160, 96 + digest[i + 1] % 160, 96 + digest[i + 2] % 160)
        for i in range(0, 12, 3)
    ]


def render_card(
    *,
    document: int,
    side: str,
    original_size: tuple[int, int],
    size: tuple[int, int],
    image_format: ImageFormat,
) -> bytes:
    """Draw an identity-card-like image and return it encoded.

    The card is drawn at ``original_size`` and then scaled down to ``size``,
    the way a server resizes an uploaded photo.

    Raises:
        ImportError: if Pillow is not installed.
    """
    try:
        from PIL import Image, ImageDraw  # noqa: PLC0415 - Pillow is an optional extra
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the fake Passback server draws its images with Pillow: install idme-passback[fake]"
        ) from exc

    width, height = original_size
    background, band, panel, ink = _palette(document, side)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width, height // 7), fill=band)
    margin = max(1, width // 20)
    top = height // 7 + margin
    if side == "front":
        # A photo box on the left and a few text lines beside it.
        draw.rectangle((margin, top, width // 3, height - margin), fill=panel)
        for line in range(4):
            y = top + line * max(1, height // 9)
            draw.rectangle((width // 3 + margin, y, width - margin, y + height // 30), fill=ink)
    else:
        # A barcode-like strip whose bars encode the document number.
        bars = f"{document:016b}"
        step = max(1, (width - 2 * margin) // len(bars))
        for index, bit in enumerate(bars):
            x = margin + index * step
            bottom = height - margin if bit == "1" else height - 3 * margin
            draw.rectangle((x, top, x + step // 2, bottom), fill=ink)
    text = f"ID.me FAKE DOCUMENT {document} {side.upper()}"
    draw.text((margin, max(1, height // 28)), text, fill=(255, 255, 255))
    if size != (width, height):
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.save(buffer, format="JPEG", quality=85)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()
