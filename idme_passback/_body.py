"""Reading a document body: prove it is an image, and that it arrived whole."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import httpx

from ._deadline import Deadline
from ._decoding import BodyReader, content_length
from ._imagetype import SNIFF_BYTES, sniff_image
from ._tokens import scrub
from .bounds import Bounds
from .errors import IncompleteBodyError, NotAnImageError
from .models import DocumentImage
from .sizing import Size

_CONTENT_TYPE_CHARS = 100
_LOOKS_LIKE = {b"<": "like HTML or XML", b"{": "like JSON", b"[": "like JSON"}


class ImageBody:
    """A 200 response's body, proven an image, whole and within bounds before it is used.

    :meth:`read` returns it all (for an image kept in memory). For streaming,
    :meth:`start` reads just enough to recognise the image (so ``extension``
    is known before a file is named), and :meth:`chunks` yields the body
    chunk by chunk (decoded by :class:`BodyReader`: at most 64 KiB at a
    time, never past ``Bounds.max_image_bytes``, every wait under the
    deadline), checking the bytes received against Content-Length at the
    end. Every check raises, so a caller that writes chunks as they come
    must discard what it wrote; :meth:`aclose` releases the stream.
    """

    __slots__ = (
        "_bounds",
        "_deadline",
        "_expected",
        "_head",
        "_reader",
        "_response",
        "_stream",
        "content_type",
        "extension",
        "media_type",
        "received",
    )

    def __init__(
        self, response: httpx.Response, deadline: Deadline, bounds: Bounds | None = None
    ) -> None:
        self._response = response
        self._deadline = deadline
        self._bounds = bounds if bounds is not None else Bounds()
        self._reader: BodyReader | None = None
        self._stream: AsyncGenerator[bytes, None] | None = None
        self._head = b""
        self.media_type = ""
        self.extension = ""
        #: Decoded bytes read so far.
        self.received = 0
        #: The server's Content-Type header, scrubbed of any secret it echoes.
        self.content_type: str | None = _content_type(response.headers.get("content-type"))
        # Held against the bytes received (Content-Length counts them, encoded or not).
        self._expected = content_length(response)

    def _open(self) -> AsyncGenerator[bytes, None]:
        """Start reading (raises at once for a refused encoding or announced size)."""
        self._reader = BodyReader(
            self._response,
            limit=self._bounds.max_image_bytes,
            bounds=self._bounds,
            deadline=self._deadline,
            what="document",
        )
        self._stream = self._reader.chunks()
        return self._stream

    def _check_head(self, head: bytes) -> None:
        kind = sniff_image(head[:SNIFF_BYTES])
        if kind is None:
            raise NotAnImageError(
                f"the document endpoint answered 200 with a body that is not an image "
                f"(Content-Type {self.content_type!r}; {_describe_head(head)})",
                content_type=self.content_type,
            )
        self.media_type, self.extension = kind

    def _check_length(self) -> None:
        expected = self._expected
        wire = 0 if self._reader is None else self._reader.wire
        if expected is not None and wire is not None and wire < expected:
            raise IncompleteBodyError(
                f"the image body ended after {wire} of {expected} bytes",
                expected=expected,
                received=wire,
            )

    async def read(self) -> bytes:
        """Return the whole body, once proven an image, complete and within bounds."""
        parts: list[bytes] = []
        async for chunk in self._open():
            parts.append(chunk)
            self.received += len(chunk)
        content = b"".join(parts)
        self._check_head(content)
        self._check_length()
        return content

    async def start(self) -> None:
        """Read the first bytes and recognise the image (sets ``extension``)."""
        stream = self._open()
        head = b""
        async for chunk in stream:
            head += chunk
            if len(head) >= SNIFF_BYTES:
                break
        self.received = len(head)
        self._head = head
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
            yield chunk
        self._check_length()

    @property
    def streaming(self) -> bool:
        """Whether :meth:`start` opened a stream that :meth:`aclose` must release."""
        return self._stream is not None

    async def aclose(self) -> None:
        """Release the body's stream, read or not."""
        if self._stream is not None:
            await self._stream.aclose()


def _content_type(value: str | None) -> str | None:
    # A server is not trusted with what it echoes: scrubbed whole, then cut.
    if value is None:
        return None
    text = " ".join("".join(c if c.isprintable() else " " for c in scrub(value)).split())
    return text[:_CONTENT_TYPE_CHARS]


def _describe_head(head: bytes) -> str:
    # What the body looks like, never its bytes: they may begin an echoed secret.
    if not head:
        return "empty"
    kind = _LOOKS_LIKE.get(head.lstrip()[:1], "no known image signature")
    return f"{len(head)} bytes, {kind}"


async def read_image(body: ImageBody, token: str, box: Size | None) -> DocumentImage:
    """Read ``body`` whole into a :class:`DocumentImage`."""
    content = await body.read()
    return DocumentImage(content, body.content_type, body.media_type, body.extension, token, box)
