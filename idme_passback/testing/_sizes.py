"""The fake's own reading of ``size=WxH``, written apart from the library's sizing module.

A bug in :mod:`idme_passback.sizing` must not hide behind the same bug in the
fake that tests it, so the fake parses and scales with code of its own.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"([0-9]{1,5})[xX]([0-9]{1,5})")
_LOW, _HIGH = 100, 1000

Box = tuple[int, int]


class BadSize(ValueError):
    """A ``size`` query value the fake (like the API) refuses."""


def read_size(raw: str | tuple[int, int] | None) -> Box | None:
    """Return the box a ``size`` value asks for, ``None`` for none.

    Raises:
        BadSize: for anything but ``WxH`` with each side from 100 to 1000.
    """
    if raw is None:
        return None
    if isinstance(raw, tuple):
        width, height = raw
    else:
        match = _SIZE.fullmatch(raw)
        if match is None or raw.startswith("0"):
            raise BadSize(f"size must look like WxH, got {raw[:20]!r}")
        width, height = int(match[1]), int(match[2])
        if str(width) != match[1] or str(height) != match[2]:
            raise BadSize("size must not have leading zeros")
    for side in (width, height):
        if not _LOW <= side <= _HIGH:
            raise BadSize(f"each side of size must be from {_LOW} to {_HIGH}, got {side}")
    return (width, height)


def fit_inside(original: Box, box: Box | None) -> Box:
    """The dimensions served for ``box``: the original scaled to fit, never enlarged."""
    width, height = original
    if box is None or (width <= box[0] and height <= box[1]):
        return original
    scale = min(box[0] / width, box[1] / height)
    if box[0] / width <= box[1] / height:
        return (box[0], max(1, int(height * scale + 0.5)))
    return (max(1, int(width * scale + 0.5)), box[1])
