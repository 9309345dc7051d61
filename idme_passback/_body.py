"""Reading a document body: prove it is an image, and that it arrived whole."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import httpx

from ._imagetype import SNIFF_BYTES, sniff_image
from .errors import IncompleteBodyError, NotAnImageError

CHUNK_SIZE = 64 * 1024


def _declared_length(response: httpx.Response) -> int | None:
    # With a content coding, Content-Length counts encoded bytes: not comparable.
    if response.headers.get("content-encoding", "identity").lower() != "identity":
        return None
    value = response.headers.get("content-length")
    if value is None or not value.isdigit():
        return None
    return int(value)


class ImageBody:
    """The chunks of a 200 response's body, checked as they pass.

    Iterating yields the body chunk by chunk; before the first chunk is
    yielded the head is checked against image signatures, and after the last
    the byte count against Content-Length. Either failure raises, so a
    caller that writes chunks as they come must discard what it wrote.
    """

    __slots__ = ("_response", "extension", "media_type", "received")

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.media_type = ""
        self.extension = ""
        self.received = 0

    @property
    def content_type(self) -> str | None:
        """The server's Content-Type header, as sent."""
        value: str | None = self._response.headers.get("content-type")
        return value

    def _check_head(self, head: bytes) -> None:
        kind = sniff_image(head)
        if kind is None:
            raise NotAnImageError(
                f"the document endpoint answered 200 with a body that is not an image "
                f"(Content-Type {self.content_type!r}, starts {_describe_head(head)})",
                content_type=self.content_type,
            )
        self.media_type, self.extension = kind

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Yield the body's chunks; raise if it is not an image or ends short."""
        expected = _declared_length(self._response)
        head = b""
        checked = False
        async with contextlib.aclosing(self._response.aiter_bytes(CHUNK_SIZE)) as stream:
            async for chunk in stream:
                self.received += len(chunk)
                if not checked:
                    head += chunk
                    if len(head) < SNIFF_BYTES:
                        continue
                    self._check_head(head)
                    checked = True
                    yield head
                    head = b""
                    continue
                yield chunk
        if not checked:
            self._check_head(head)
            if head:
                yield head
        if expected is not None and self.received < expected:
            raise IncompleteBodyError(
                f"the image body ended after {self.received} of {expected} bytes",
                expected=expected,
                received=self.received,
            )


def _describe_head(head: bytes) -> str:
    if not head:
        return "empty"
    sample = head[:8].decode("ascii", "replace")
    printable = "".join(c if c.isprintable() else "." for c in sample)
    return f"{printable!r}"
