"""How much a server may make the client hold, and how late it may still send.

Every body the client reads is decoded by the client itself, a bounded chunk
at a time, and counted in *decoded* bytes against the bound of its kind: a
server cannot make the client hold, or write to disk, more than these,
whatever its ``Content-Length`` or ``Content-Encoding`` says::

    client = PassbackClient(api_token, bounds=Bounds(max_image_bytes=8 * 1024 * 1024))

The defaults fit identity documents (a phone photo of a card is a few MiB)
with room to spare.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_DECOMPRESSION_RATIO",
    "DEFAULT_MAX_IMAGE_BYTES",
    "DEFAULT_MAX_JSON_BYTES",
    "DEFAULT_MIN_SEND_TIME",
    "Bounds",
]

#: 32 MiB: the largest document image read or written.
DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024
#: 1 MiB: the largest JSON body (attributes, refresh); real ones are a few KiB.
DEFAULT_MAX_JSON_BYTES = 1024 * 1024
#: A compressed body may decode to at most 100 times the bytes received.
DEFAULT_MAX_DECOMPRESSION_RATIO = 100.0
#: A document request is not sent with less than 1 s left before the deadline.
DEFAULT_MIN_SEND_TIME = 1.0


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be an int >= 1, got {value!r}")


def _at_least(low: float) -> Callable[[Any, attrs.Attribute[float], float], None]:
    def check(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < low
        ):
            raise ConfigurationError(
                f"{attribute.name} must be a finite number >= {low:g}, got {value!r}"
            )

    return check


@attrs.frozen
class Bounds:
    """The client's bounds on what a server can make it hold or wait for.

    Attributes:
        max_image_bytes: the largest document image, in decoded bytes
            (:data:`DEFAULT_MAX_IMAGE_BYTES`, 32 MiB). A larger body raises
            :class:`~idme_passback.BodyTooLargeError` as soon as it passes
            the bound (or at once, when its ``Content-Length`` announces
            more); no file is left behind.
        max_json_bytes: the largest attributes or refresh body, in decoded
            bytes (:data:`DEFAULT_MAX_JSON_BYTES`, 1 MiB).
        max_decompression_ratio: how many times the bytes received a
            compressed body may decode to, once past 1 MiB decoded
            (:data:`DEFAULT_MAX_DECOMPRESSION_RATIO`, 100); more raises
            :class:`~idme_passback.DecompressionBombError`. Only ``gzip`` and
            ``deflate`` are decoded, one layer of either: a stacked or
            unknown ``Content-Encoding`` raises
            :class:`~idme_passback.ContentEncodingError`. Document requests
            ask for ``Accept-Encoding: identity``.
        min_send_time: the least time a document request needs, in seconds
            (:data:`DEFAULT_MIN_SEND_TIME`; at most a quarter of a call's
            deadline is asked). A rate-limit token that would leave less
            before the deadline is not taken, or is given back unsent: a
            request whose answer would arrive too late to be kept would
            spend one of the document's two requests a minute for nothing.

    Raises:
        ConfigurationError: for a bound that is not a positive number.
    """

    max_image_bytes: int = attrs.field(default=DEFAULT_MAX_IMAGE_BYTES, validator=_positive_int)
    max_json_bytes: int = attrs.field(default=DEFAULT_MAX_JSON_BYTES, validator=_positive_int)
    max_decompression_ratio: float = attrs.field(
        default=DEFAULT_MAX_DECOMPRESSION_RATIO, validator=_at_least(1.0)
    )
    min_send_time: float = attrs.field(default=DEFAULT_MIN_SEND_TIME, validator=_at_least(0.0))

    def send_margin(self, deadline_seconds: float | None) -> float:
        """The time to keep for a request under a deadline of ``deadline_seconds``."""
        if deadline_seconds is None:
            return 0.0
        return min(self.min_send_time, deadline_seconds / 4)
