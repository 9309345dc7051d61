"""The asynchronous client for ID.me's Document Passback API.

The client composes the pieces and holds no rule of its own: sizes are
checked by :mod:`idme_passback.sizing`, tokens by the token checks, every
document request waits on the :class:`~idme_passback.RateLimiter`, and bytes
travel through a pluggable httpx transport.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import os
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar, cast

import attrs
import httpx
from httpx._client import UseClientDefault

from . import bulk as _bulk
from ._body import ImageBody
from ._files import check_target, write_atomically
from ._imagetype import IMAGE_EXTENSIONS
from ._redact import install_redaction
from ._tokens import check_access_token, check_token, scrub, shorten
from ._version import __version__
from .errors import (
    APIStatusError,
    ConfigurationError,
    MalformedResponseError,
    PassbackConnectionError,
    PassbackError,
    PassbackTimeoutError,
    RateLimitError,
    ResponseError,
    TransportError,
    status_error_class,
)
from .limiter import Permit, RateLimiter
from .models import Attributes, DocumentImage, parse_attributes
from .retry import RetryPolicy, parse_retry_after, retryable_status
from .sizing import Size, SizeLike, parse_size

__all__ = ["DEFAULT_DEADLINE", "DEFAULT_TIMEOUT", "ENVIRONMENTS", "PassbackClient"]

T = TypeVar("T")

logger = logging.getLogger("idme_passback")

#: The documented base URLs.
ENVIRONMENTS: dict[str, str] = {
    "sandbox": "https://api.idmelabs.com/",
    "production": "https://api.id.me/",
}
#: Per attempt: 10 s to connect, 30 s between bytes read or written.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Seconds one call may take in all: waiting on the limiter, attempts and backoff.
DEFAULT_DEADLINE = 300.0

_ATTRIBUTES_PATH = "api/public/v3/attributes.json"
_DOCUMENT_PATH = "api/public/v3/documents/"
_REFRESH_PATH = "api/public/v3/documents/refresh/"
_EXCERPT_BYTES = 1024
# Bulk items take their turn in a queue: that wait is not theirs to time out on.
# Each attempt keeps its timeouts, and retries stay bounded by max_retries.
_NO_DEADLINE = math.inf
_EXCERPT_CHARS = 200

_Timeout = float | httpx.Timeout | None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class PassbackClient:
    """An async client for the Document Passback API; create once, share widely.

    Example::

        async with PassbackClient(api_token, environment="sandbox") as client:
            attributes = await client.get_attributes(access_token)
            front, back = attributes.document_tokens
            image = await client.get_document(front, size="300x200")
            await client.download_document(back, "back.jpg")

    Args:
        api_token: the API token ID.me provisioned for the consumer; read from
            ``IDME_API_TOKEN`` when omitted.
        environment: ``"sandbox"`` or ``"production"``.
        base_url: a base URL of your own (a proxy, a fake server); overrides
            ``environment``. Plain ``http://`` is accepted only for loopback
            hosts, in-process transports, or with ``allow_insecure_http=True``:
            it would send the API token in clear text.
        transport: any ``httpx.AsyncBaseTransport`` (a respx mock,
            ``httpx.ASGITransport``, a transport with its own TLS or proxy).
        http_client: a whole ``httpx.AsyncClient`` to send through instead;
            it stays the caller's to close.
        limiter: the :class:`RateLimiter` to share; each client has its own
            by default. Clients of one consumer should share one.
        timeout: per attempt; a number of seconds or an ``httpx.Timeout``.
        deadline: seconds a whole call may take, limiter waits and retries
            included; ``None`` for no deadline.
        max_retries: retries of a failed document or refresh call (default
            2, or ``retry_policy.max_retries``; this wins over the policy's).
        access_token_in: send the access token as the ``access_token`` query
            parameter (``"query"``, as documented) or as an
            ``Authorization: Bearer`` header (``"header"``).
        retry_policy: backoff and Retry-After settings (see :class:`RetryPolicy`).

    Raises:
        ConfigurationError: no API token, an unknown environment, or an unsafe base URL.
        InvalidTokenError: a malformed API token.
    """

    def __init__(
        self,
        api_token: str | None = None,
        *,
        environment: Literal["sandbox", "production"] = "sandbox",
        base_url: str | httpx.URL | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        limiter: RateLimiter | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        deadline: float | None = DEFAULT_DEADLINE,
        max_retries: int | None = None,
        access_token_in: Literal["query", "header"] = "query",
        allow_insecure_http: bool = False,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        if api_token is None:
            api_token = os.environ.get("IDME_API_TOKEN") or None
        if api_token is None:
            raise ConfigurationError(
                "no API token: pass api_token= or set the IDME_API_TOKEN environment variable"
            )
        self._api_token = check_token(api_token, kind="API token")
        if transport is not None and http_client is not None:
            raise ConfigurationError("pass transport= or http_client=, not both")
        if access_token_in not in ("query", "header"):
            raise ConfigurationError("access_token_in must be 'query' or 'header'")
        self._base_url = self._resolve_base_url(
            environment, base_url, transport, allow_insecure_http
        )
        self._access_token_in = access_token_in
        self._deadline = deadline
        policy = retry_policy or RetryPolicy()
        if max_retries is not None:
            # max_retries= is the short way to set just that; it wins over the policy's.
            policy = attrs.evolve(policy, max_retries=self._retries(max_retries))
        self._policy = policy
        self._limiter = limiter if limiter is not None else RateLimiter()
        self._clock = self._limiter.clock
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._owns_http = http_client is None
        user_agent = {"User-Agent": f"idme-passback/{__version__}"}
        self._http = http_client or httpx.AsyncClient(
            transport=transport, timeout=timeout, headers=user_agent, follow_redirects=False
        )
        # Per request, pass only what the client does not already hold.
        self._request_headers = None if self._owns_http else user_agent
        self._default_timeout: float | httpx.Timeout | UseClientDefault = (
            httpx.USE_CLIENT_DEFAULT if self._owns_http else timeout
        )
        # Tokens are checked URL-safe, so URLs are joined as strings, not parsed twice.
        self._document_prefix = f"{self._base_url}{_DOCUMENT_PATH}"
        self._refresh_prefix = f"{self._base_url}{_REFRESH_PATH}"
        self._token_query = f"?token={self._api_token}"
        self._longest_timeout = _longest(timeout)
        install_redaction()

    @staticmethod
    def _resolve_base_url(
        environment: str,
        base_url: str | httpx.URL | None,
        transport: httpx.AsyncBaseTransport | None,
        allow_insecure_http: bool,
    ) -> httpx.URL:
        if base_url is None:
            if environment not in ENVIRONMENTS:
                raise ConfigurationError(
                    f"environment must be one of {sorted(ENVIRONMENTS)}, got {environment!r}"
                )
            return httpx.URL(ENVIRONMENTS[environment])
        url = httpx.URL(str(base_url))
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError("base_url must be an absolute http:// or https:// URL")
        if url.query or url.fragment:
            raise ConfigurationError("base_url must not carry a query or fragment")
        in_process = isinstance(transport, httpx.ASGITransport | httpx.MockTransport)
        if (
            url.scheme == "http"
            and not allow_insecure_http
            and not in_process
            and not _is_loopback(url.host)
        ):
            raise ConfigurationError(
                "refusing plain http:// to a non-loopback host: the API token would travel "
                "in clear text; use https://, or pass allow_insecure_http=True"
            )
        if not url.raw_path.endswith(b"/"):
            url = url.copy_with(raw_path=url.raw_path + b"/")
        return url

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> PassbackClient:
        """Return the client; leaving the block closes it."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client this client made (a caller-supplied one stays open)."""
        if self._owns_http:
            await self._http.aclose()

    @property
    def limiter(self) -> RateLimiter:
        """The rate limiter every document request waits on."""
        return self._limiter

    @property
    def base_url(self) -> str:
        """The base URL requests go to."""
        return str(self._base_url)

    def __repr__(self) -> str:
        return f"PassbackClient(base_url={str(self._base_url)!r}, api_token=<hidden>)"

    # -- the three endpoints --------------------------------------------------

    async def get_attributes(
        self,
        access_token: str,
        *,
        timeout: _Timeout = None,
        deadline: float | None = None,
    ) -> Attributes:
        """Return the user's attributes, including the document tokens when enabled.

        Access tokens are single-use (ID.me revokes one that is reused), so
        this call is retried only after failures known to have happened
        before the request left (connection refused, DNS); anything later
        raises for the caller to start a new OAuth flow.

        Raises:
            InvalidTokenError: a malformed access token (nothing is sent).
            AuthenticationError: the access token was refused (expired or used).
            APIStatusError, TransportError, MalformedResponseError: other failures.
        """
        access_token = check_access_token(access_token)
        secrets = (self._api_token, access_token)
        params: dict[str, str] = {}
        headers = dict(self._request_headers or {})
        if self._access_token_in == "header":
            headers["Authorization"] = f"Bearer {access_token}"
        else:
            params["access_token"] = access_token

        async def attempt(give_up: float) -> Attributes:
            request = self._http.build_request(
                "GET",
                f"{self._base_url}{_ATTRIBUTES_PATH}",
                params=params,
                headers=headers,
                timeout=self._attempt_timeout(timeout, give_up),
            )
            return parse_attributes(await self._json(request, secrets, "attributes"))

        attributes = await self._call(
            attempt, max_retries=self._policy.max_retries, safe_only=True, deadline=deadline
        )
        if self._limiter.pair_front_back and attributes.has_document_tokens:
            tokens = attributes.document_tokens
            await self._limiter.link(tokens.back, tokens.front)
        return attributes

    async def get_document(
        self,
        token: str,
        *,
        size: SizeLike | None = None,
        timeout: _Timeout = None,
        max_retries: int | None = None,
        deadline: float | None = None,
    ) -> DocumentImage:
        """Return one side of the identity document, in memory.

        Args:
            token: the document token (front or back).
            size: a bounding box (``"300x200"``, ``(300, 200)`` or a
                :class:`Size`); the server fits the image inside it. ``None``
                for the original resolution.

        Raises:
            InvalidSizeError, InvalidTokenError: bad input (nothing is sent).
            NotAnImageError: the server's 200 was not an image, on every try.
            RateLimitError: 429s outlasted the retries, or asked too long a wait.
            APIStatusError, TransportError: other failures.
        """
        box = parse_size(size)
        content, body = await self._document(
            token, box, _read_whole, timeout=timeout, max_retries=max_retries, deadline=deadline
        )
        return _image(content, body, token, box)

    async def download_document(
        self,
        token: str,
        path: str | os.PathLike[str],
        *,
        size: SizeLike | None = None,
        overwrite: bool = False,
        timeout: _Timeout = None,
        max_retries: int | None = None,
        deadline: float | None = None,
    ) -> Path:
        """Stream one side of the identity document to ``path``, atomically, mode 0600.

        The body goes chunk by chunk into a temporary file in the target's
        folder, which is moved into place only once the body is complete and
        proven an image; on any failure (cancellation included) no file is
        left behind. ``path`` is used as given: its suffix is not changed to
        match the image type.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is false (checked
                before sending, and again when moving into place).
            FileNotFoundError: the folder does not exist (nothing is sent).
            and everything :meth:`get_document` raises.
        """
        box = parse_size(size)
        check_token(token)
        target = check_target(path, overwrite=overwrite)

        async def consume(body: ImageBody) -> Path:
            await write_atomically(target, body.chunks(), overwrite=overwrite)
            return target

        return await self._document(
            token, box, consume, timeout=timeout, max_retries=max_retries, deadline=deadline
        )

    async def refresh_document_token(
        self,
        token: str,
        *,
        timeout: _Timeout = None,
        max_retries: int | None = None,
        deadline: float | None = None,
    ) -> str:
        """Return a new document token for the same document (a repeat transaction).

        The new token shares the old one's rate-limit budget. Refresh calls
        themselves do not wait on the limiter: the API limits the document
        endpoint only.

        Raises:
            InvalidTokenError: a malformed token (nothing is sent).
            MalformedResponseError: the answer held no usable ``document_token``.
            APIStatusError, TransportError: other failures.
        """
        token = check_token(token)
        secrets = (self._api_token, token)

        async def attempt(give_up: float) -> str:
            request = self._http.build_request(
                "POST",
                f"{self._refresh_prefix}{token}{self._token_query}",
                headers=self._request_headers,
                timeout=self._attempt_timeout(timeout, give_up),
            )
            payload = await self._json(request, secrets, "refresh")
            new_token = payload.get("document_token") if isinstance(payload, dict) else None
            if not isinstance(new_token, str):
                raise MalformedResponseError("the refresh answer has no 'document_token' string")
            try:
                return check_token(new_token)
            except PassbackError:
                raise MalformedResponseError(
                    "the refresh answer's 'document_token' is not a usable token"
                ) from None

        new_token = await self._call(
            attempt, max_retries=self._retries(max_retries), safe_only=False, deadline=deadline
        )
        await self._limiter.link(new_token, token)
        return new_token

    # -- bulk -----------------------------------------------------------------

    def fetch_many(
        self,
        items: Iterable[_bulk.ItemLike] | _bulk.AsyncIterableLike,
        *,
        size: SizeLike | None = None,
        concurrency: int = 16,
        on_progress: _bulk.ProgressHook | None = None,
    ) -> _bulk.BulkResults:
        """Fetch many documents concurrently; yield one result per item, in completion order.

        ``items`` may be tokens, ``(token, size)`` pairs or
        :class:`DocumentRequest` values, from any iterable or async iterable;
        it is consumed lazily, so a generator of millions is never held in
        memory. Each result carries the item's position, its token, and the
        :class:`DocumentImage` or the typed error: one failure never stops
        the others. A document whose budget is spent waits on the limiter
        *before* taking a concurrency slot, so it never idles one.
        """
        return _bulk.run(
            self._fetch_for_bulk,
            items,
            size=size,
            concurrency=concurrency,
            limiter=self._limiter,
            on_progress=on_progress,
        )

    def download_many(
        self,
        items: Iterable[_bulk.ItemLike] | _bulk.AsyncIterableLike,
        directory: str | os.PathLike[str],
        *,
        size: SizeLike | None = None,
        concurrency: int = 16,
        on_progress: _bulk.ProgressHook | None = None,
        overwrite: bool = False,
    ) -> _bulk.BulkResults:
        """Download many documents into ``directory``; yield one result per item.

        Each file is written like :meth:`download_document` (streamed,
        atomic, 0600). File names come from the item's ``filename`` when
        given (a bare name: no folders, no '..') or else from its position
        and a shortened token, ``000042-d9ec9c.jpg``, with the extension
        taken from the image's own bytes: no token can steer a path outside
        ``directory``.

        Raises:
            FileNotFoundError: ``directory`` does not exist (before anything is sent).
        """
        folder = Path(directory)
        if not folder.is_dir():
            raise FileNotFoundError(f"the folder {str(folder)!r} does not exist")

        async def download(
            request: _bulk.DocumentRequest, index: int, gate: _bulk.Gate
        ) -> _bulk.Outcome:
            return await self._download_for_bulk(request, index, gate, folder, overwrite)

        return _bulk.run(
            download,
            items,
            size=size,
            concurrency=concurrency,
            limiter=self._limiter,
            on_progress=on_progress,
        )

    async def _fetch_for_bulk(
        self, request: _bulk.DocumentRequest, index: int, gate: _bulk.Gate
    ) -> _bulk.Outcome:
        content, body = await self._document(
            request.token, request.size, _read_whole, gate=gate, deadline=_NO_DEADLINE
        )
        image = _image(content, body, request.token, request.size)
        return _bulk.Outcome(image=image, bytes=len(content))

    async def _download_for_bulk(
        self,
        request: _bulk.DocumentRequest,
        index: int,
        gate: _bulk.Gate,
        folder: Path,
        overwrite: bool,
    ) -> _bulk.Outcome:
        name = request.filename
        target: Path | None = None
        stem = f"{index:06d}-{shorten(request.token).rstrip(chr(0x2026))}"
        if name is not None:
            target = check_target(folder / _bulk.safe_filename(name), overwrite=overwrite)
        elif not overwrite:
            # The extension comes with the body, but a file of this item under any
            # image extension already means a refusal: find out before spending a request.
            for extension in IMAGE_EXTENSIONS:
                check_target(folder / (stem + extension), overwrite=False)

        async def consume(body: ImageBody) -> Path:
            final = target
            if final is None:
                # Named after the image's own type, known once its first bytes are in.
                await body.start()
                final = check_target(folder / (stem + body.extension), overwrite=overwrite)
            await write_atomically(final, body.chunks(), overwrite=overwrite)
            return final

        written = await self._document(
            request.token, request.size, consume, gate=gate, deadline=_NO_DEADLINE
        )
        return _bulk.Outcome(path=written, bytes=written.stat().st_size)

    # -- the machinery ---------------------------------------------------------

    def _acquire(self, token: str, wait: float | None) -> AbstractAsyncContextManager[Permit]:
        return self._limiter.acquire(token, timeout=wait)

    def _retries(self, max_retries: int | None) -> int:
        if max_retries is None:
            return self._policy.max_retries
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError("max_retries must be an int >= 0")
        return max_retries

    def _attempt_timeout(
        self, timeout: _Timeout, give_up: float
    ) -> float | httpx.Timeout | UseClientDefault:
        """The attempt's timeout, shortened when the call's deadline is nearer."""
        if timeout is None:
            chosen, longest = self._default_timeout, self._longest_timeout
        else:
            chosen, longest = timeout, _longest(timeout)
        if give_up != math.inf:
            left = give_up - self._clock.now()
            if left < longest:
                return httpx.Timeout(max(left, 0.001))
        return chosen

    async def _document(
        self,
        token: str,
        box: Size | None,
        consume: Callable[[ImageBody], Awaitable[T]],
        *,
        timeout: _Timeout = None,
        max_retries: int | None = None,
        deadline: float | None = None,
        gate: _bulk.Gate | None = None,
    ) -> T:
        token = check_token(token)
        enter = gate if gate is not None else self._acquire
        secrets = (self._api_token, token)
        url = f"{self._document_prefix}{token}{self._token_query}"
        if box is not None:
            url += f"&size={box}"
        headers = self._request_headers

        async def attempt(give_up: float) -> T:
            wait = None if give_up == math.inf else give_up - self._clock.now()
            async with enter(token, wait) as permit:
                # Built once the limiter has granted, so its timeouts fit what is left.
                request = self._http.build_request(
                    "POST", url, headers=headers, timeout=self._attempt_timeout(timeout, give_up)
                )
                response = await self._send(request, secrets, "document", permit)
                try:
                    if response.status_code != 200:
                        raise await self._status_error(response, secrets, "document")
                    body = ImageBody(response, self._clock, give_up)
                    try:
                        return await consume(body)
                    finally:
                        if body.streaming:
                            await body.aclose()
                except httpx.HTTPError as exc:
                    raise _translate(exc, secrets, "document") from exc
                finally:
                    if not response.is_closed:  # a body read to its end closed it already
                        await response.aclose()

        return await self._call(
            attempt,
            max_retries=self._retries(max_retries),
            safe_only=False,
            deadline=deadline,
            limited=True,
        )

    async def _call(
        self,
        attempt: Callable[[float], Awaitable[T]],
        *,
        max_retries: int,
        safe_only: bool,
        deadline: float | None,
        limited: bool = False,
    ) -> T:
        """Run ``attempt`` with retries until it succeeds, retries run out, or the deadline.

        The deadline is a time on the client's clock that every wait respects:
        the limiter's, each backoff, each attempt's network timeouts, and each
        chunk of a streamed body. (No cancel scope: on the hot path it would
        cost more than the rest of the client's work together.)
        """
        seconds = self._deadline if deadline is None else deadline
        give_up = math.inf if seconds is None else self._clock.now() + seconds
        retry = 0
        while True:
            try:
                return await attempt(give_up)
            except TimeoutError:
                # Only the limiter raises this: no token could come before the deadline,
                # so this attempt was never sent.
                raise PassbackTimeoutError(
                    f"the call's deadline of {seconds:g} s would pass before the document's "
                    f"rate limit allows another request (after {retry} retries)",
                    sent=False,
                ) from None
            except PassbackError as exc:
                retry += 1
                if retry > max_retries or not self._retryable(exc, safe_only):
                    raise
                delay = self._policy.backoff(retry, self._rng)
                if isinstance(exc, RateLimitError):
                    if (exc.retry_after or 0.0) > self._policy.retry_after_cap:
                        raise
                    if limited:
                        # The limiter holds the document until Retry-After has passed.
                        delay = 0.0
                    elif exc.retry_after is not None:
                        delay = exc.retry_after
                if self._clock.now() + delay >= give_up:
                    raise PassbackTimeoutError(
                        f"the call's deadline of {seconds:g} s passed before retry {retry} "
                        f"(last failure: {type(exc).__name__})",
                        sent=True,
                    ) from exc
                logger.debug(
                    "%s: retry %d of %d in %.2f s", type(exc).__name__, retry, max_retries, delay
                )
                if delay:
                    await self._clock.sleep(delay)

    @staticmethod
    def _retryable(exc: PassbackError, safe_only: bool) -> bool:
        if isinstance(exc, TransportError):
            return not exc.sent or not safe_only
        if safe_only:
            return False
        if isinstance(exc, ResponseError):
            return exc.retryable
        return isinstance(exc, APIStatusError) and retryable_status(exc.status_code)

    async def _send(
        self,
        request: httpx.Request,
        secrets: tuple[str, ...],
        endpoint: str,
        permit: Permit | None = None,
    ) -> httpx.Response:
        """Send ``request`` and return the streaming response; settle ``permit`` on arrival."""
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            error = _translate(exc, secrets, endpoint)
            if permit is not None and not error.sent:
                permit.not_sent()
            raise error from exc
        if permit is not None:
            hold = None
            if response.status_code == 429:
                hold = parse_retry_after(response.headers.get("retry-after"))
                if hold is None:
                    hold = self._policy.default_retry_after or self._limiter.period
            # The response is here: the server has counted the request by now.
            await permit.complete(hold=hold)
        logger.debug("%s %s: %d", request.method, endpoint, response.status_code)
        return response

    async def _json(
        self, request: httpx.Request, secrets: tuple[str, ...], endpoint: str
    ) -> object:
        """Send ``request`` and return its decoded JSON body, or raise the typed error."""
        response = await self._send(request, secrets, endpoint)
        try:
            return await self._read_json(response, secrets, endpoint)
        except httpx.HTTPError as exc:
            raise _translate(exc, secrets, endpoint) from exc
        finally:
            await response.aclose()

    async def _read_json(
        self, response: httpx.Response, secrets: tuple[str, ...], endpoint: str
    ) -> object:
        if response.status_code != 200:
            raise await self._status_error(response, secrets, endpoint)
        body = await response.aread()
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedResponseError(
                f"the {endpoint} endpoint answered 200 with a body that is not JSON"
            ) from None

    async def _status_error(
        self, response: httpx.Response, secrets: tuple[str, ...], endpoint: str
    ) -> APIStatusError:
        # Read past the excerpt by the longest secret, so none is cut in two before
        # it is scrubbed.
        wanted = _EXCERPT_BYTES + max(map(len, secrets))
        head = bytearray()
        async with contextlib.aclosing(
            cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
        ) as stream:
            async for chunk in stream:
                head += chunk
                if len(head) >= wanted:
                    break
        excerpt = _excerpt(bytes(head[:wanted]), secrets)
        status = response.status_code
        cls = status_error_class(status)
        message = f"the {endpoint} endpoint answered {status} {response.reason_phrase}"
        if endpoint == "document" and len(secrets) > 1:
            message += f" for document {shorten(secrets[1])}"
        if cls is RateLimitError:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None:
                message += f" (Retry-After {retry_after:g} s)"
            return RateLimitError(message, body_excerpt=excerpt, retry_after=retry_after)
        return cls(message, status_code=status, body_excerpt=excerpt)


def _longest(timeout: float | httpx.Timeout | None) -> float:
    """The longest single wait a timeout setting allows (``inf`` for none)."""
    if not isinstance(timeout, httpx.Timeout):
        return math.inf if timeout is None else float(timeout)
    phases = (timeout.connect, timeout.read, timeout.write, timeout.pool)
    return max(math.inf if phase is None else phase for phase in phases)


async def _read_whole(body: ImageBody) -> tuple[bytes, ImageBody]:
    # A module-level function, not a closure: nothing to allocate per call.
    return await body.read(), body


def _image(content: bytes, body: ImageBody, token: str, box: Size | None) -> DocumentImage:
    return DocumentImage(content, body.content_type, body.media_type, body.extension, token, box)


def _excerpt(body: bytes, secrets: Iterable[str]) -> str:
    text = scrub(body.decode("utf-8", "replace"), secrets)[:_EXCERPT_BYTES]
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text[:_EXCERPT_CHARS]


def _translate(exc: httpx.HTTPError, secrets: Iterable[str], endpoint: str) -> TransportError:
    """Turn one of httpx's errors into ours, at the edge, with no secret in the message."""
    detail = scrub(str(exc), secrets)
    name = type(exc).__name__
    # These fail before a byte of the request leaves: safe to retry anything.
    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    if isinstance(exc, httpx.TimeoutException):
        return PassbackTimeoutError(
            f"the {endpoint} call timed out ({name}: {detail})", sent=not unsent
        )
    return PassbackConnectionError(
        f"the {endpoint} call failed on the wire ({name}: {detail})", sent=not unsent
    )
