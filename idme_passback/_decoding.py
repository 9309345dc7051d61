"""Reading a body within its bounds: decoded here, a chunk at a time, counted, and on time.

httpx would decode a compressed body for us, but a whole wire chunk at a
time: 64 KiB of ``gzip, gzip`` is gigabytes before the first byte could be
counted. So bodies are read raw and decoded here, at most one output chunk
per step, with the decoded bytes counted against the bound, the ratio of
decoded to received bytes checked, and every read bounded by the deadline.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, Iterator
from typing import cast

import httpx

from ._deadline import Deadline
from .bounds import Bounds
from .errors import BodyTooLargeError, ContentEncodingError, DecompressionBombError

__all__ = ["BodyReader", "content_length"]

#: The most bytes one decoding step may produce.
CHUNK = 64 * 1024
#: Below this many decoded bytes, no ratio is a bomb (small bodies compress well).
RATIO_FLOOR = 1024 * 1024
#: What the client decodes (and so asks for on the JSON endpoints).
ACCEPT_ENCODING = "gzip, deflate"
_GZIP = ("gzip", "x-gzip")


def content_length(response: httpx.Response) -> int | None:
    """The response's ``Content-Length``, if it is one number."""
    values = response.headers.get_list("content-length", split_commas=True)
    if len(set(values)) != 1 or not values[0].isascii() or not values[0].isdigit():
        return None
    return int(values[0])


def _codings(response: httpx.Response) -> list[str]:
    values = response.headers.get_list("content-encoding", split_commas=True)
    return [value.strip().lower() for value in values if value.strip().lower() != "identity"]


class _Decoder:
    """Identity: the bytes as they come."""

    def decode(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data

    def finish(self) -> None:
        """Raise if the encoded stream ended midway."""


class _Zlib(_Decoder):
    """``gzip`` (members may follow one another) or ``deflate`` (zlib-wrapped, or raw)."""

    def __init__(self, coding: str) -> None:
        self._coding = coding
        self._gzip = coding in _GZIP
        self._wbits = zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS
        self._inflate = zlib.decompressobj(self._wbits)
        # "deflate" is zlib-wrapped by the RFC, but some servers send it raw: the
        # first two bytes tell (held here until both have come).
        self._probe: bytes | None = None if self._gzip else b""
        self._fed = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self._probe is not None:
            data = self._probe + data
            if len(data) < 2:
                self._probe = data
                return
            self._probe = None
            if not (data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0):
                self._wbits = -zlib.MAX_WBITS
                self._inflate = zlib.decompressobj(self._wbits)
        while data:
            self._fed = True
            if self._inflate.eof:
                if not self._gzip:
                    return  # bytes past a deflate stream's end carry nothing
                self._inflate = zlib.decompressobj(self._wbits)  # the next gzip member
            try:
                out = self._inflate.decompress(data, CHUNK)
            except zlib.error:
                raise ContentEncodingError(
                    f"the body is not valid {self._coding} data", encoding=self._coding
                ) from None
            data = self._inflate.unconsumed_tail or (
                self._inflate.unused_data if self._inflate.eof else b""
            )
            if out:
                yield out

    def finish(self) -> None:
        if (self._fed or self._probe) and not self._inflate.eof:
            raise ContentEncodingError(
                f"the {self._coding} body ended before its end of stream", encoding=self._coding
            )


def _decoder(response: httpx.Response, what: str) -> _Decoder:
    codings = _codings(response)
    if not codings:
        return _Decoder()
    if len(codings) == 1 and codings[0] in (*_GZIP, "deflate"):
        return _Zlib(codings[0])
    shown = ", ".join(codings)[:60]
    kind = "stacked" if len(codings) > 1 else "unknown"
    raise ContentEncodingError(
        f"the {what} body has a {kind} Content-Encoding ({shown!r}); "
        "one layer of gzip or deflate is all the client decodes",
        encoding=shown,
    )


class BodyReader:
    """One response body, decoded and bounded; iterate :meth:`chunks` once.

    ``wire`` counts the bytes received, ``decoded`` the bytes produced. A
    response whose body httpx already holds (``httpx.Response(content=...)``
    from a mock or an in-process transport) is already decoded: it is only
    sliced and counted, and ``wire`` is ``None`` when its encoded size is unknown.

    Raises (from :meth:`chunks`, or at once for the encoding):
        ContentEncodingError: a stacked, unknown or corrupt encoding.
        BodyTooLargeError: more than ``limit`` decoded bytes.
        DecompressionBombError: more than the ratio allows.
        DeadlineExceededError: the deadline passed while waiting for bytes.
    """

    __slots__ = (
        "_deadline",
        "_decoder",
        "_limit",
        "_preloaded",
        "_ratio",
        "_response",
        "_what",
        "decoded",
        "wire",
    )

    def __init__(
        self,
        response: httpx.Response,
        *,
        limit: int,
        bounds: Bounds,
        deadline: Deadline,
        what: str,
        head_only: bool = False,
    ) -> None:
        self._response = response
        self._limit = limit
        self._ratio = bounds.max_decompression_ratio
        self._deadline = deadline
        self._what = what
        try:
            self._preloaded: bytes | None = response.content
        except httpx.ResponseNotRead:
            self._preloaded = None
        self._decoder = _decoder(response, what) if self._preloaded is None else _Decoder()
        self.wire: int | None = 0
        if self._preloaded is not None and _codings(response):
            self.wire = None
        self.decoded = 0
        announced = content_length(response)
        # (A caller that reads only the head, an error body's excerpt, need not refuse.)
        if not head_only and announced is not None and announced > limit and not _codings(response):
            raise BodyTooLargeError(
                f"the {what} body announces {announced} bytes, more than the {limit}-byte bound",
                limit=limit,
                received=announced,
            )

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Yield the decoded body, at most :data:`CHUNK` bytes at a time."""
        if self._preloaded is not None:
            for start in range(0, len(self._preloaded), CHUNK):
                out = self._preloaded[start : start + CHUNK]
                if self.wire is not None:
                    self.wire += len(out)
                self._count(len(out))
                yield out
            return
        # httpx types it as an iterator; it is an async generator, closed below.
        raw = cast("AsyncGenerator[bytes, None]", self._response.aiter_raw())
        try:
            while True:
                try:
                    data = await self._deadline.run(
                        raw.__anext__,
                        f"after {self.decoded} bytes of the {self._what} body",
                        sent=True,
                    )
                except StopAsyncIteration:
                    break
                self.wire = (self.wire or 0) + len(data)
                for out in self._decoder.decode(data):
                    self._count(len(out))
                    yield out
            self._decoder.finish()
        finally:
            await raw.aclose()

    def _count(self, size: int) -> None:
        self.decoded += size
        if self.decoded > self._limit:
            raise BodyTooLargeError(
                f"the {self._what} body is larger than the {self._limit}-byte bound",
                limit=self._limit,
                received=self.decoded,
            )
        wire = self.decoded if self.wire is None else self.wire
        if self.decoded > RATIO_FLOOR and self.decoded > self._ratio * max(wire, 1):
            raise DecompressionBombError(
                f"the {self._what} body decoded to {self.decoded} bytes from {self.wire} "
                f"received, more than {self._ratio:g} times as many",
                limit=self._limit,
                received=self.decoded,
            )
