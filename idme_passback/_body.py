"""Reading a document body: prove it is an image, and that it arrived whole."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import cast

import httpx

from ._deadline import Deadline
from ._imagetype import SNIFF_BYTES, sniff_image
from .errors import IncompleteBodyError, NotAnImageError
from .models import DocumentImage
from .sizing import Size


def _comparable_length(response: httpx.Response) -> int | None:
    """The Content-Length to hold the decoded body to, if it is one."""
    length = response.headers.get("content-length")
    if length is None or not length.isdigit():
        return None
    if response.headers.get("content-encoding", "identity").lower() != "identity":
        return None  # it counts the encoded bytes, not the ones we read
    return int(length)


class ImageBody:
    """A 200 response's body, proven an image and whole before it is used.

    :meth:`read` returns it all (for an image kept in memory). For streaming,
    :meth:`start` reads just enough to recognise the image (so ``extension``
    is known before a file is named), and :meth:`chunks` yields the body
    chunk by chunk, checking the byte count against Content-Length at the
    end. Every check raises, so a caller that writes chunks as they come
    must discard what it wrote; :meth:`aclose` releases the stream.
    """

    __slots__ = (
        "_deadline",
        "_expected",
        "_head",
        "_response",
        "_stream",
        "content_type",
        "extension",
        "media_type",
        "received",
    )

    def __init__(self, response: httpx.Response, deadline: Deadline) -> None:
        self._response = response
        self._deadline = deadline
        self._stream: AsyncGenerator[bytes, None] | None = None
        self._head = b""
        self.media_type = ""
        self.extension = ""
        self.received = 0
        #: The server's Content-Type header, as sent.
        self.content_type: str | None = response.headers.get("content-type")
        self._expected = _comparable_length(response)

    def _check_head(self, head: bytes) -> None:
        kind = sniff_image(head[:SNIFF_BYTES])
        if kind is None:
            raise NotAnImageError(
                f"the document endpoint answered 200 with a body that is not an image "
                f"(Content-Type {self.content_type!r}, starts {_describe_head(head)})",
                content_type=self.content_type,
            )
        self.media_type, self.extension = kind

    def _check_length(self) -> None:
        expected = self._expected
        if expected is not None and self.received < expected:
            raise IncompleteBodyError(
                f"the image body ended after {self.received} of {expected} bytes",
                expected=expected,
                received=self.received,
            )

    async def read(self) -> bytes:
        """Return the whole body, once proven an image and complete."""
        parts: list[bytes] = []
        async for chunk in self._response.aiter_bytes():
            parts.append(chunk)
            self.received += len(chunk)
            self._check_deadline()  # a body that trickles in must not outlast the deadline
        content = b"".join(parts)
        self._check_head(content)
        self._check_length()
        return content

    async def start(self) -> None:
        """Read the first bytes and recognise the image (sets ``extension``)."""
        # httpx types it as an iterator; it is an async generator, closed in aclose().
        # Chunks as they arrive (no re-chunking): each is checked against the deadline.
        self._stream = cast("AsyncGenerator[bytes, None]", self._response.aiter_bytes())
        stream = self._stream
        head = b""
        async for chunk in stream:
            head += chunk
            if len(head) >= SNIFF_BYTES:
                break
        self.received = len(head)
        self._head = head
        self._check_deadline()
        self._check_head(head)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Yield the body's chunks; raise if it is not an image or ends short."""
        if self._stream is None:
            await self.start()
        assert self._stream is not None
        if self._head:
            yield self._head
            self._head = b""
        async for chunk in self._stream:
            self.received += len(chunk)
            self._check_deadline()
            yield chunk
        self._check_length()

    def _check_deadline(self) -> None:
        self._deadline.check(f"after {self.received} bytes of the body", sent=True)

    @property
    def streaming(self) -> bool:
        """Whether :meth:`start` opened a stream that :meth:`aclose` must release."""
        return self._stream is not None

    async def aclose(self) -> None:
        """Release the body's stream, read or not."""
        if self._stream is not None:
            await self._stream.aclose()


def _describe_head(head: bytes) -> str:
    if not head:
        return "empty"
    sample = head[:8].decode("ascii", "replace")
    printable = "".join(c if c.isprintable() else "." for c in sample)
    return f"{printable!r}"


async def read_image(body: ImageBody, token: str, box: Size | None) -> DocumentImage:
    """Read ``body`` whole into a :class:`DocumentImage`."""
    content = await body.read()
    return DocumentImage(content, body.content_type, body.media_type, body.extension, token, box)
