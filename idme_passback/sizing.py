"""Image sizes for the document endpoint: parsing, bounds, and the fit-inside rule.

This module does no I/O. The client calls :func:`parse_size` on every
``size=`` argument before anything is sent, so a bad size never costs a
request (and never spends the document's rate-limit budget).

Accepted forms of a size:

* ``Size(300, 200)``
* ``"300x200"``: ASCII digits, a lowercase or uppercase ``x``, no spaces,
  no signs and no leading zeros (so every accepted string is the canonical
  one the server receives);
* ``(300, 200)``: a 2-tuple (or list) of ``int``;
* ``None``: the original resolution (no ``size`` parameter is sent).

Width and height must each be an ``int`` from :data:`MIN_DIMENSION` to
:data:`MAX_DIMENSION` inclusive; ``bool``, ``float`` and numeric strings are
rejected rather than converted. Every rejection raises
:class:`~idme_passback.errors.InvalidSizeError` naming the value and the bound.

Example::

    >>> parse_size("300x200")
    Size(width=300, height=200)
    >>> delivered_size((500, 400), "300x200")
    (250, 200)
"""

from __future__ import annotations

import re
from typing import Any, TypeAlias

import attrs

from .errors import InvalidSizeError

__all__ = [
    "MAX_DIMENSION",
    "MIN_DIMENSION",
    "Size",
    "SizeLike",
    "delivered_size",
    "parse_size",
]

#: The smallest width or height the API accepts, in pixels.
MIN_DIMENSION = 100
#: The largest width or height the API accepts, in pixels.
MAX_DIMENSION = 1000

_SIZE_PATTERN = re.compile(r"([1-9][0-9]{0,5})[xX]([1-9][0-9]{0,5})")


def _check_dimension(name: str, value: object) -> int:
    # bool is an int subclass: True would otherwise pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSizeError(
            f"{name} must be an int from {MIN_DIMENSION} to {MAX_DIMENSION}, "
            f"got {type(value).__name__} {value!r}"
        )
    if value < MIN_DIMENSION:
        raise InvalidSizeError(f"{name} {value} is below the minimum of {MIN_DIMENSION} pixels")
    if value > MAX_DIMENSION:
        raise InvalidSizeError(f"{name} {value} is above the maximum of {MAX_DIMENSION} pixels")
    return value


def _validate(_instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    _check_dimension(attribute.name, value)


@attrs.frozen
class Size:
    """A requested bounding box, ``width`` x ``height`` pixels, each 100..1000.

    Raises:
        InvalidSizeError: if either dimension is not an ``int`` in bounds.
    """

    width: int = attrs.field(validator=_validate)
    height: int = attrs.field(validator=_validate)

    def __str__(self) -> str:
        """Return the query-string form, for example ``"300x200"``."""
        return f"{self.width}x{self.height}"

    @classmethod
    def parse(cls, value: SizeLike) -> Size:
        """Build a size from any accepted form (see the module docstring)."""
        if isinstance(value, Size):
            return value
        if isinstance(value, str):
            return cls._from_string(value)
        if isinstance(value, tuple | list):
            if len(value) != 2:
                raise InvalidSizeError(
                    f"a size sequence needs exactly 2 items (width, height), got {len(value)}"
                )
            return cls(value[0], value[1])
        raise InvalidSizeError(
            "size must be a Size, a 'WxH' string or a (width, height) tuple, "
            f"got {type(value).__name__}"
        )

    @classmethod
    def _from_string(cls, text: str) -> Size:
        shown = text if len(text) <= 32 else text[:32] + "..."
        match = _SIZE_PATTERN.fullmatch(text)
        if match is None:
            raise InvalidSizeError(
                f"size {shown!r} is not of the form 'WxH' (for example '300x200': "
                "digits, an 'x', digits; no spaces, signs or leading zeros)"
            )
        return cls(int(match[1]), int(match[2]))


SizeLike: TypeAlias = "Size | str | tuple[int, int] | list[int]"


def parse_size(value: SizeLike | None) -> Size | None:
    """Return the :class:`Size` for ``value``, or ``None`` for the original resolution.

    Raises:
        InvalidSizeError: for any malformed or out-of-bounds value.
    """
    if value is None:
        return None
    return Size.parse(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidSizeError(f"{name} must be a positive int, got {value!r}")
    return value


def delivered_size(
    original: tuple[int, int], requested: SizeLike | None, *, enlarge: bool = False
) -> tuple[int, int]:
    """Predict the dimensions the server returns for ``requested`` of an ``original`` image.

    The API preserves the aspect ratio "using the smaller dimension as the
    constraint"; read as fit-inside, the image is scaled by
    ``min(W / w, H / h)``, which gives the documented 250x200 for 300x200 asked
    of a 500x400 image. The binding side lands exactly on the box; the other
    side is rounded to the nearest pixel (halves up), never below 1.

    ID.me does not say whether a smaller original is ever enlarged. This
    library assumes it is not (``enlarge=False``), as thumbnailers usually
    behave; pass ``enlarge=True`` to predict a server that scales up.

    Raises:
        InvalidSizeError: for a bad ``requested`` or a non-positive original.
    """
    width = _positive_int("original width", original[0])
    height = _positive_int("original height", original[1])
    box = parse_size(requested)
    if box is None:
        return (width, height)
    if not enlarge and width <= box.width and height <= box.height:
        return (width, height)
    # Integer arithmetic keeps the binding side exact: compare W*h with H*w.
    if box.width * height <= box.height * width:
        return (box.width, max(1, (2 * height * box.width + width) // (2 * width)))
    return (max(1, (2 * width * box.height + height) // (2 * height)), box.height)
