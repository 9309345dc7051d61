"""The asynchronous client for ID.me's Document Passback API.

The client composes the pieces and holds no machinery of its own: sizes are
checked by :mod:`idme_passback.sizing`, tokens by the token checks, every
document request waits on the :class:`~idme_passback.RateLimiter`, bytes
travel through a pluggable httpx transport (sent and classified in one
private module), and failures are retried by one loop beside
:class:`~idme_passback.RetryPolicy`, all under one deadline per call.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Iterable
from pathlib import Path
from typing import Literal

import attrs
import httpx

from . import _telemetry as telemetry
from . import bulk
from ._body import ImageBody, read_image
from ._calls import TimeoutArg
from ._config import (
    ATTRIBUTES,
    CLIENT_DEFAULT,
    DEFAULT_DEADLINE,
    DEFAULT_TIMEOUT,
    DOCUMENT,
    ENVIRONMENTS,
    REFRESH,
    check_deadline,
    check_retries,
    resolve_base_url,
)
from ._core import Core, DeadlineArg
from ._files import check_target
from ._lifecycle import OwnsHTTP
from ._redact import install_redaction
from ._sentry import note_base_url
from ._tokens import check_access_token, check_token, remember
from ._work import downloading, fetching
from .bounds import Bounds
from .errors import ConfigurationError
from .limiter import RateLimiter
from .models import Attributes, DocumentImage
from .retry import RetryPolicy
from .sizing import SizeLike, parse_size

__all__ = [
    "CLIENT_DEFAULT",
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "ENVIRONMENTS",
    "PassbackClient",
]


class PassbackClient(OwnsHTTP):
    """An async client for the Document Passback API; create once, share widely.

    Example::

        async with PassbackClient(api_token, environment="sandbox") as client:
            attributes = await client.get_attributes(access_token)
            tokens = attributes.document_tokens
            image = await client.get_document(tokens.front, size="300x200")
            await client.download_document(tokens.back, "back.jpg")

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
            it stays the caller's to close. Redirects are never followed,
            whatever it says: the URLs carry secrets.
        limiter: the :class:`RateLimiter` to share; each client has its own
            by default. Clients of one consumer should share one.
        timeout: per attempt; a number of seconds or an ``httpx.Timeout``.
        deadline: seconds a whole call may take, limiter waits and retries
            included; ``None`` for no deadline.
        max_retries: retries of a failed document or refresh call (default
            2, or ``retry_policy.max_retries``; this wins over the policy's).
        access_token_in: send the access token as an ``Authorization: Bearer``
            header (``"header"``, the default, as ID.me's own SDKs do; it keeps
            the token out of every URL) or as the ``access_token`` query
            parameter the API page documents (``"query"``).
        pair_front_back: if true, the front and back tokens of one attributes
            call share one rate-limit budget, for a server that counts per
            identity document rather than per side. Off by default: the API
            documents the limit "per document", and each side is fetched as one.
        retry_policy: backoff and Retry-After settings (see :class:`RetryPolicy`).
        attributes_decryption_key: the consumer's RSA private key (PEM, a JWK
            dict or a joserfc key), for attributes answered as a JWE.
        verify_attributes_jwt: verify a JWT answer against ID.me's JWKS for
            the base URL (the default); off only behind a proxy that re-signs.
        bounds: the most a server may make the client hold (image and JSON
            sizes, decompression) and the least time a document request is
            sent with (see :class:`Bounds`; its defaults fit identity documents).

    Raises:
        ConfigurationError: no API token, an unknown environment, an unsafe
            base URL, or a bad ``deadline`` or ``max_retries``.
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
        access_token_in: Literal["query", "header"] = "header",
        pair_front_back: bool = False,
        allow_insecure_http: bool = False,
        retry_policy: RetryPolicy | None = None,
        attributes_decryption_key: object | None = None,
        verify_attributes_jwt: bool = True,
        bounds: Bounds | None = None,
    ) -> None:
        if api_token is None:
            api_token = os.environ.get("IDME_API_TOKEN") or None
        if api_token is None:
            raise ConfigurationError(
                "no API token: pass api_token= or set the IDME_API_TOKEN environment variable"
            )
        self._api_token = check_token(api_token, kind="API token")
        remember(self._api_token)
        if transport is not None and http_client is not None:
            raise ConfigurationError("pass transport= or http_client=, not both")
        if access_token_in not in ("query", "header"):
            raise ConfigurationError("access_token_in must be 'query' or 'header'")
        in_process = isinstance(transport, httpx.ASGITransport | httpx.MockTransport)
        self._base_url = str(
            resolve_base_url(
                environment,
                base_url,
                in_process=in_process,
                allow_insecure_http=allow_insecure_http,
            )
        )
        deadline = check_deadline(deadline)
        if bounds is not None and not isinstance(bounds, Bounds):
            raise ConfigurationError(f"bounds must be a Bounds, got {type(bounds).__name__}")
        policy = retry_policy or RetryPolicy()
        if max_retries is not None:
            # max_retries= is the short way to set just that; it wins over the policy's.
            policy = attrs.evolve(policy, max_retries=check_retries(max_retries))
        self._adopt(http_client, lambda: httpx.AsyncClient(transport=transport, timeout=timeout))
        self._core = Core(
            api_token=self._api_token,
            base_url=self._base_url,
            http=self._http,
            limiter=limiter if limiter is not None else RateLimiter(),
            policy=policy,
            timeout=timeout,
            deadline=deadline,
            access_token_in=access_token_in,
            decryption_key=attributes_decryption_key,
            verify_jwt=verify_attributes_jwt,
            bounds=bounds if bounds is not None else Bounds(),
            pair_front_back=pair_front_back,
        )
        note_base_url(self._base_url)
        install_redaction()

    @property
    def limiter(self) -> RateLimiter:
        """The rate limiter every document request waits on."""
        return self._core.limiter

    @property
    def base_url(self) -> str:
        """The base URL requests go to."""
        return self._base_url

    def __repr__(self) -> str:
        return f"PassbackClient(base_url={self._base_url!r}, api_token=<hidden>)"

    # -- the three endpoints --------------------------------------------------

    async def get_attributes(
        self,
        access_token: str,
        *,
        timeout: TimeoutArg = CLIENT_DEFAULT,
        deadline: DeadlineArg = CLIENT_DEFAULT,
    ) -> Attributes:
        """Return the user's attributes, including the document tokens when enabled.

        Access tokens are single-use (ID.me revokes one that is reused), so
        this call is retried only after failures known to have happened
        before the request left (connection refused, DNS); anything later
        raises for the caller to start a new OAuth flow.

        Raises:
            InvalidTokenError: a malformed access token (nothing is sent).
            ConfigurationError: a bad ``deadline`` (nothing is sent).
            AuthenticationError: the access token was refused (expired or used).
            APIStatusError, TransportError, MalformedResponseError: other failures.
        """
        access_token = check_access_token(access_token)
        with telemetry.call("get_attributes", ATTRIBUTES, server=self._core.server):
            return await self._core.attributes(access_token, timeout, deadline)

    async def get_document(
        self,
        token: str,
        *,
        size: SizeLike | None = None,
        timeout: TimeoutArg = CLIENT_DEFAULT,
        max_retries: int | None = None,
        deadline: DeadlineArg = CLIENT_DEFAULT,
    ) -> DocumentImage:
        """Return one side of the identity document, in memory.

        Args:
            token: the document token (front or back).
            size: a bounding box (``"300x200"``, ``(300, 200)`` or a
                :class:`Size`); the server fits the image inside it. ``None``
                for the original resolution.

        Raises:
            InvalidSizeError, InvalidTokenError, ConfigurationError: bad input
                (nothing is sent).
            NotAnImageError: the server's 200 was not an image, on every try.
            RateLimitError: 429s outlasted the retries, or asked too long a wait.
            DeadlineExceededError: the call's deadline passed.
            APIStatusError, TransportError: other failures.
        """
        box = parse_size(size)
        token = check_token(token)

        async def consume(body: ImageBody) -> DocumentImage:
            return await read_image(body, token, box)

        with telemetry.call("get_document", DOCUMENT, document=token, server=self._core.server):
            return await self._core.document(token, box, consume, timeout, max_retries, deadline)

    async def download_document(
        self,
        token: str,
        path: str | os.PathLike[str],
        *,
        size: SizeLike | None = None,
        overwrite: bool = False,
        timeout: TimeoutArg = CLIENT_DEFAULT,
        max_retries: int | None = None,
        deadline: DeadlineArg = CLIENT_DEFAULT,
    ) -> Path:
        """Stream one side of the identity document to ``path``, atomically, mode 0600.

        The body goes chunk by chunk into a temporary file in the target's
        folder (``.NAME.idme-part``, locked while written), which is moved into
        place only once the body is complete and proven an image; on any
        failure (cancellation included) no file is left behind, and one left
        by a killed process is removed by the next write of the same file.
        The folder is opened once, before the request, and written through
        that descriptor: swapping it for a symlink meanwhile moves nothing.
        ``path`` is used as given: its suffix is not changed to match the
        image type.

        Raises:
            TargetExistsError: ``path`` exists (a dangling symlink too) and
                ``overwrite`` is false; checked before sending, and again when
                moving into place. Also a ``FileExistsError``.
            FolderNotFoundError: the folder does not exist (nothing is sent);
                also a ``FileNotFoundError``.
            FolderNotWritableError: the folder does not take new files
                (nothing is sent); also a ``PermissionError``.
            InvalidFilenameError: a name the file system cannot hold (nothing
                is sent).
            FileWriteError: the disk failed midway (full, I/O error).
            and everything :meth:`get_document` raises.
        """
        box = parse_size(size)
        token = check_token(token)
        self._core.start(deadline)  # a bad deadline fails before the folder is opened
        target = check_target(path, overwrite=overwrite)

        async def consume(body: ImageBody) -> Path:
            await target.folder.write(target.name, body.chunks(), overwrite=overwrite)
            return target.path

        try:
            with telemetry.call(
                "download_document", DOCUMENT, document=token, server=self._core.server
            ):
                return await self._core.document(
                    token, box, consume, timeout, max_retries, deadline
                )
        finally:
            target.folder.close()

    async def refresh_document_token(
        self,
        token: str,
        *,
        timeout: TimeoutArg = CLIENT_DEFAULT,
        max_retries: int | None = None,
        deadline: DeadlineArg = CLIENT_DEFAULT,
    ) -> str:
        """Return a new document token for the same document (a repeat transaction).

        The new token shares the old one's rate-limit budget. Refresh calls
        themselves do not wait on the limiter: the API limits the document
        endpoint only.

        Raises:
            InvalidTokenError, ConfigurationError: bad input (nothing is sent).
            MalformedResponseError: the answer held no usable ``document_token``.
            APIStatusError, TransportError: other failures.
        """
        token = check_token(token)
        with telemetry.call(
            "refresh_document_token", REFRESH, document=token, server=self._core.server
        ):
            return await self._core.refresh(token, timeout, max_retries, deadline)

    # -- bulk -----------------------------------------------------------------

    def fetch_many(
        self,
        items: Iterable[bulk.ItemLike] | AsyncIterable[bulk.ItemLike],
        *,
        size: SizeLike | None = None,
        concurrency: int = 16,
        on_progress: bulk.ProgressHook | None = None,
    ) -> bulk.BulkResults:
        """Fetch many documents concurrently; results come in completion order.

        Use inside ``async with``, which owns the job's tasks::

            async with client.fetch_many(tokens, concurrency=32) as results:
                async for result in results:
                    ...

        ``break``, ``return`` or an exception in the loop stops the job at
        once and sends no further request. ``items`` may be tokens,
        ``(token, size)`` pairs or :class:`DocumentRequest` values, from any
        iterable or async iterable; ``concurrency`` workers consume it lazily,
        so a generator of millions is never held in memory. Each result
        carries the item's position, its token, and the
        :class:`DocumentImage` or the typed error: one failure never stops
        the others. A document whose budget is spent waits on the limiter
        holding no concurrency slot, so it never idles one, and its queued
        items do not delay another document (within the windows of 65,536
        queued items and ``max(1024, 16 * concurrency)`` waiting documents,
        past which reading pauses to bound memory). At most ``concurrency``
        images are held at once, however slow the consumer.
        """
        return bulk.run(
            fetching(self._core.bulk_document),
            items,
            size=size,
            concurrency=concurrency,
            limiter=self._core.limiter,
            on_progress=on_progress,
        )

    async def fetch_all(
        self,
        items: Iterable[bulk.ItemLike] | AsyncIterable[bulk.ItemLike],
        *,
        size: SizeLike | None = None,
        concurrency: int = 16,
    ) -> list[bulk.FetchResult]:
        """Fetch a small job's documents; return every result, in input order.

        A convenience over :meth:`fetch_many` for jobs that fit in memory.
        """
        async with self.fetch_many(items, size=size, concurrency=concurrency) as results:
            return sorted([result async for result in results], key=lambda r: r.index)

    def download_many(
        self,
        items: Iterable[bulk.ItemLike] | AsyncIterable[bulk.ItemLike],
        directory: str | os.PathLike[str],
        *,
        size: SizeLike | None = None,
        concurrency: int = 16,
        on_progress: bulk.ProgressHook | None = None,
        overwrite: bool = False,
    ) -> bulk.BulkResults:
        """Download many documents into ``directory``; use like :meth:`fetch_many`.

        Each file is written like :meth:`download_document` (streamed,
        atomic, 0600). File names come from the item's ``filename`` when
        given (a bare name: no folders, no '..'), or its ``stem`` plus the
        image's extension, or else its position and a shortened token,
        ``000042-d9ec9c.jpg``, the extension taken from the image's own
        bytes: no token can steer a path outside ``directory``.

        Raises:
            FileNotFoundError: ``directory`` does not exist (before anything is sent).
        """
        return bulk.run(
            downloading(self._core.bulk_document, directory, overwrite=overwrite),
            items,
            size=size,
            concurrency=concurrency,
            limiter=self._core.limiter,
            on_progress=on_progress,
        )
