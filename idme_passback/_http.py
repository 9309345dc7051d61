"""Sending a request and classifying its answer: the one place httpx is spoken to.

Every httpx error is translated here, at the edge, into the library's own
type with the secrets scrubbed out; every non-200 answer becomes the typed
error of its status, with a short scrubbed excerpt of its body; a 429's
``Retry-After`` is parsed once, for both the limiter's hold and the error.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable

import httpx

from . import _telemetry as telemetry
from ._config import Endpoint
from ._deadline import Deadline
from ._decoding import ACCEPT_ENCODING, BodyReader
from ._tokens import scrub, shorten, tail_to_drop
from .bounds import DEFAULT_MAX_JSON_BYTES, Bounds
from .errors import (
    APIStatusError,
    DeadlineExceededError,
    MalformedResponseError,
    PassbackConnectionError,
    PassbackTimeoutError,
    RateLimitError,
    ResponseError,
    TransportError,
    status_error_class,
)
from .limiter import Permit
from .retry import parse_retry_after

logger = logging.getLogger("idme_passback")

#: The largest JSON body read by default (see :class:`~idme_passback.Bounds`).
MAX_JSON_BYTES = DEFAULT_MAX_JSON_BYTES
_EXCERPT_BYTES = 1024
_EXCERPT_CHARS = 200
# One decoding step may overshoot what the excerpt wants by a chunk.
_EXCERPT_SLACK = 64 * 1024


class Wire:
    """Sends requests through one ``httpx.AsyncClient`` and classifies the answers."""

    __slots__ = ("_headers", "_http", "bounds")

    def __init__(
        self, http: httpx.AsyncClient, headers: dict[str, str], bounds: Bounds | None = None
    ) -> None:
        self._http = http
        # Headers every request carries that the AsyncClient may not (a caller's client).
        # Only what the client decodes itself is asked for (httpx would add br, zstd).
        self._headers = {"Accept-Encoding": ACCEPT_ENCODING, **headers}
        self.bounds = bounds if bounds is not None else Bounds()

    def build(
        self,
        method: str,
        url: str,
        *,
        timeout: float | httpx.Timeout | None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Request:
        """Build a request with the client's headers and this attempt's timeout."""
        merged = self._headers if not headers else {**self._headers, **headers}
        if params and not self._http.params:
            # The query in the URL string: httpx parses it once, where params= costs a
            # second parse to merge them (benchmark row 1: 1.28x -> 1.20x). A caller's
            # client with params of its own keeps params=: httpx lets those replace a
            # query that is already in the URL.
            url = f"{url}?{httpx.QueryParams(params)}"
            params = None
        request = self._http.build_request(method, url, params=params, timeout=timeout)
        # Set on the request, they replace the client's as headers= would, for 1 µs
        # where headers= costs 15 (httpx copies and merges the client's headers twice).
        for name, value in merged.items():
            request.headers[name] = value
        return request

    async def send(
        self,
        request: httpx.Request,
        endpoint: Endpoint,
        secrets: tuple[str, ...],
        deadline: Deadline,
        *,
        permit: Permit | None = None,
        default_hold: float = 0.0,
    ) -> httpx.Response:
        """Send ``request``; return the 200 response, streaming, or raise the typed error.

        ``permit`` (document calls) is settled the moment the answer's headers
        arrive: the server has counted the request by then. After a 429 it
        holds the document for the Retry-After, or ``default_hold``.

        Raises:
            TransportError: the exchange failed (``sent`` says whether it left).
            APIStatusError: any status but 200.
        """
        try:
            # Never follow a redirect: the URL carries secrets, a Location may not deserve them.
            # The deadline bounds the whole wait: per-read timeouts cannot stop headers
            # that come a byte at a time.
            response = await deadline.run(
                lambda: self._http.send(request, stream=True, follow_redirects=False),
                f"waiting for the {endpoint.name} endpoint's answer",
                sent=True,
            )
        except httpx.HTTPError as exc:
            error: TransportError | None = translate(exc, secrets, endpoint)
        else:
            error = None
        if error is not None:
            # Raised outside the handler: the foreign error (its message and its chain
            # may hold echoed secret bytes) is neither the cause nor the context.
            telemetry.failed(endpoint, error)
            if permit is not None and not error.sent:
                permit.not_sent()
            raise error
        status = response.status_code
        telemetry.answered(endpoint, status)
        logger.debug("%s %s: %d", request.method, endpoint.name, status)
        try:
            retry_after = None
            if status == 429:
                # An HTTP date is read against the answer's own Date, not our clock.
                retry_after = parse_retry_after(
                    response.headers.get("retry-after"), date=response.headers.get("date")
                )
            if permit is not None:
                hold = None
                if status == 429:
                    hold = default_hold if retry_after is None else retry_after
                await permit.complete(hold=hold)
            if status == 200:
                return response
            failure = await self._status_error(response, endpoint, secrets, deadline, retry_after)
        except BaseException:
            await response.aclose()
            raise
        await response.aclose()
        raise failure

    async def read(
        self,
        response: httpx.Response,
        endpoint: Endpoint,
        secrets: tuple[str, ...],
        deadline: Deadline,
        limit: int | None = None,
    ) -> bytes:
        """Read a (non-image) body whole, within the bounds and the deadline; close it.

        ``limit`` is the most decoded bytes (``Bounds.max_json_bytes`` by default).

        Raises:
            BodyTooLargeError: the body is larger than ``limit``.
            ContentEncodingError: a stacked, unknown or corrupt encoding.
            DeadlineExceededError: the deadline passed before the body was in.
            TransportError: the body did not arrive.
        """
        parts = bytearray()
        failure: TransportError | None = None
        try:
            reader = BodyReader(
                response,
                limit=self.bounds.max_json_bytes if limit is None else limit,
                bounds=self.bounds,
                deadline=deadline,
                what=endpoint.name,
            )
            async with contextlib.aclosing(reader.chunks()) as chunks:
                async for chunk in chunks:
                    parts += chunk
        except httpx.HTTPError as exc:
            failure = translate(exc, secrets, endpoint)
        finally:
            await response.aclose()
        if failure is not None:
            raise failure  # outside the handler: nothing foreign chained
        return bytes(parts)

    async def _status_error(
        self,
        response: httpx.Response,
        endpoint: Endpoint,
        secrets: tuple[str, ...],
        deadline: Deadline,
        retry_after: float | None,
    ) -> APIStatusError:
        # Read past the excerpt by the longest form a secret can take (wholly
        # percent-encoded), so one that straddles the excerpt's end is whole in view.
        tail = tail_to_drop(secrets)
        wanted = _EXCERPT_BYTES + tail
        head = bytearray()
        try:
            reader = BodyReader(
                response,
                limit=wanted + _EXCERPT_SLACK,
                bounds=self.bounds,
                deadline=deadline,
                what=f"{response.status_code}",
                head_only=True,
            )
            async with contextlib.aclosing(reader.chunks()) as chunks:
                async for chunk in chunks:
                    head += chunk
                    if len(head) >= wanted:
                        break
        except (httpx.HTTPError, ResponseError, DeadlineExceededError):
            # An error body that breaks off, stalls past the deadline, or cannot be
            # decoded still tells its status: that is the error to raise.
            pass
        excerpt = _excerpt(bytes(head[:wanted]), secrets, tail if len(head) >= wanted else 0)
        code, description = _oauth_error(bytes(head[:wanted]), secrets)
        status = response.status_code
        reason = _printable(scrub(response.reason_phrase, secrets))[:60]
        message = f"the {endpoint.name} endpoint answered {status} {reason}".rstrip()
        if endpoint.rate_limited and len(secrets) > 1:
            message += f" for document {shorten(secrets[1])}"
        cls = status_error_class(status)
        if cls is RateLimitError:
            if retry_after is not None:
                message += f" (Retry-After {retry_after:g} s)"
            return RateLimitError(
                message,
                body_excerpt=excerpt,
                error=code,
                error_description=description,
                retry_after=retry_after,
            )
        return cls(
            message,
            status_code=status,
            body_excerpt=excerpt,
            error=code,
            error_description=description,
        )


def decode_json(body: bytes, endpoint: Endpoint) -> object:
    """Decode a JSON body.

    Raises:
        MalformedResponseError: not JSON, or nested too deeply to decode.
    """
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedResponseError(
            f"the {endpoint.name} endpoint answered 200 with a body that is not JSON"
        ) from None


def retryable(exc: Exception, endpoint: Endpoint) -> bool:
    """Whether ``exc`` is worth another try of a request to ``endpoint``."""
    if isinstance(exc, DeadlineExceededError):
        return False  # the call's time is up: another try could only be late
    if isinstance(exc, TransportError):
        return not exc.sent or endpoint.retry_after_send
    if not endpoint.retry_after_send:
        return False
    if isinstance(exc, ResponseError):
        return exc.retryable
    return isinstance(exc, APIStatusError) and (
        exc.status_code >= 500 or exc.status_code in (408, 429)
    )


def translate(exc: httpx.HTTPError, secrets: Iterable[str], endpoint: Endpoint) -> TransportError:
    """Turn one of httpx's errors into ours, at the edge, with no secret in the message."""
    detail = _printable(scrub(str(exc), secrets))[:200]
    return transport_error(exc, f"{endpoint.name} call", detail)


def transport_error(exc: httpx.HTTPError, what: str, detail: str) -> TransportError:
    """httpx's ``exc`` as ours: ``what`` timed out, or failed on the wire (``detail`` scrubbed)."""
    name = type(exc).__name__
    # These fail before a byte of the request leaves: safe to retry anything.
    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    if isinstance(exc, httpx.TimeoutException):
        return PassbackTimeoutError(f"the {what} timed out ({name}: {detail})", sent=not unsent)
    return PassbackConnectionError(
        f"the {what} failed on the wire ({name}: {detail})", sent=not unsent
    )


def _printable(text: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _excerpt(body: bytes, secrets: Iterable[str], tail: int) -> str:
    """The scrubbed start of a body; ``tail``: characters at the end that may be cut short.

    Decoded first, scrubbed on the whole text, cut only then: a secret that
    starts before the cut goes whole, and the last ``tail`` characters (which
    may hold the start of one the read cut off) are dropped.
    """
    text = body.decode("utf-8", "replace")
    text = scrub(text, secrets, cut=min(_EXCERPT_BYTES, max(0, len(text) - tail)))
    return _printable(text)[:_EXCERPT_CHARS]


def _oauth_error(body: bytes, secrets: Iterable[str]) -> tuple[str | None, str | None]:
    """The ``error`` and ``error_description`` of a JSON error body, scrubbed."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(payload, dict):
        return None, None
    found: list[str | None] = []
    for name in ("error", "error_description"):
        value = payload.get(name)
        found.append(_printable(scrub(value, secrets))[:200] if isinstance(value, str) else None)
    return found[0], found[1]
