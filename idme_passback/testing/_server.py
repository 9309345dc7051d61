"""A fake of ID.me's Document Passback API as a plain ASGI 3 application.

It serves the three endpoints of SPEC.md, enforces the per-document rate
limit with a choice of algorithm, injects faults on demand, and records every
request so tests can assert on what a client actually did.

Choices the real API leaves open, made here once:

* Rate limiting is per *document*: a refreshed token shares the budget of the
  token it came from. A request is counted when it arrives (before any
  latency), and only once it has passed the API-token, document-token and
  size checks. A request answered 429 is *not* counted, so a client that
  retries too early does not push its own wait further out. Faulty answers
  (500, a cut body, an HTML page) *are* counted: the server counted them.
* Refreshing a token does not invalidate the old one; both name the same
  document. Refresh calls are not rate limited.
* Images are never enlarged: ``size`` fits the original inside the box
  (computed by the fake's own code, not the library's sizing module).
* Every attributes call creates a new identity document with two sides, each
  its own document (own token, own budget).

A "cut" answer promises the full ``Content-Length`` and ends after half the
body. In-process (``httpx.ASGITransport``) the client simply receives fewer
bytes than announced; under uvicorn the server's HTTP layer refuses to end
the message short, the exception reaches uvicorn (which logs it at ERROR) and
the connection is closed, so the client sees an incomplete body. The fake
itself logs nothing.

The documents and the answers of the document and refresh endpoints live in
``_documents``, the attributes endpoint's access tokens and person in
``_attributes``, and the request record and the replies in ``_wire``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import attrs

from ..clock import Clock, MonotonicClock
from ._attributes import AccessTokens, access_token, document_tokens, person
from ._documents import Documents
from ._idme import FakeIdMe
from ._images import ImageFormat
from ._ratelimit import ALGORITHMS, Algorithm
from ._sizes import read_size
from ._wire import (
    Endpoint,
    Receive,
    Reply,
    RequestRecord,
    Scope,
    ScriptStep,
    Send,
    busiest_window,
    check_step,
    count_records,
    error_page,
    error_reply,
    html_reply,
    lifespan,
    method_not_allowed,
    read_request,
    receive_body,
    reply_from,
    send_reply,
)

__all__ = ["DEFAULT_ACCESS_TOKEN", "DEFAULT_API_TOKEN", "FakePassbackServer"]

#: The API token a fake accepts unless told otherwise (the seed's example format).
DEFAULT_API_TOKEN = "1234567-fd03-4ca4-a93e-aae6fce8e82b"
#: The access token a fake accepts unless told otherwise.
DEFAULT_ACCESS_TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"

_PREFIX = "/api/public/v3/"


class FakePassbackServer:
    """An in-memory Document Passback API, callable as an ASGI 3 application.

    Use it in-process through ``httpx.ASGITransport(app=fake)`` or serve it on
    loopback with uvicorn. See the module docstring for the behaviours the
    real API leaves open and how this fake settles them.

    Example::

        fake = FakePassbackServer(clock=FakeClock())
        token = fake.issue_document()
        transport = httpx.ASGITransport(app=fake)

    Args:
        api_token: the API token the document and refresh calls must carry.
        access_token: an access token the attributes call accepts (more come
            from :meth:`issue_access_token`).
        limit, period: at most ``limit`` counted requests per ``period``
            seconds per document.
        clock: where rate-limit time is read and latency is slept
            (:class:`~idme_passback.clock.MonotonicClock` by default).
        algorithm: ``"sliding"`` (any ``period``-long window), ``"fixed"``
            (windows aligned on multiples of ``period`` of clock time) or
            ``"bucket"`` (``limit`` tokens refilling ``limit`` per ``period``).
        original_size: the width and height of every document's original image.
        image_format: ``"JPEG"`` or ``"PNG"``.
        latency: seconds (or a callable returning seconds) slept on the clock
            before answering each request to the document endpoint, after
            the rate-limit decision.
        error_rate, cut_body_rate, non_image_rate: probabilities that a
            granted document request gets a 500 HTML page, half its body under
            a full ``Content-Length``, or a 200 HTML maintenance page.
        throttle_rate: probability that a document request within its budget
            is answered 429 all the same (``Retry-After`` 1 s, or
            ``retry_after``), as a server under load might; not counted.
        seed: seeds the fault draws and the document tokens (``None``: random).
        retry_after: a fixed ``Retry-After`` value (seconds or an HTTP date)
            for every 429 instead of the computed wait.
        single_use_access_tokens: a second attributes call with the same
            access token gets 401, as ID.me's OAuth documentation describes.
        image_bytes: serve exactly these bytes for every document and size.
        document_tokens_enabled: ``False`` leaves ``document_tokens`` out of
            the attributes payload (the feature is off on the consumer).
        idme: the OAuth/OIDC side and the attributes answer's shape (a
            :class:`FakeIdMe`; one with its defaults when omitted). It runs on
            this server's clock. Access tokens it issues are single-use and
            last 300 s; ``access_token`` and :meth:`issue_access_token` keep
            following ``single_use_access_tokens``.

    Raises:
        ValueError: for a bad limit, period, algorithm, format or rate.
    """

    def __init__(
        self,
        api_token: str = DEFAULT_API_TOKEN,
        access_token: str = DEFAULT_ACCESS_TOKEN,
        *,
        limit: int = 2,
        period: float = 60.0,
        clock: Clock | None = None,
        algorithm: Algorithm = "sliding",
        original_size: tuple[int, int] = (856, 540),
        image_format: ImageFormat = "JPEG",
        latency: float | Callable[[], float] = 0.0,
        error_rate: float = 0.0,
        cut_body_rate: float = 0.0,
        non_image_rate: float = 0.0,
        throttle_rate: float = 0.0,
        seed: int | str | None = None,
        retry_after: int | str | None = None,
        single_use_access_tokens: bool = False,
        image_bytes: bytes | None = None,
        document_tokens_enabled: bool = True,
        idme: FakeIdMe | None = None,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        if not period > 0:
            raise ValueError(f"period must be positive, got {period!r}")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        if image_format not in ("JPEG", "PNG"):
            raise ValueError(f"image_format must be 'JPEG' or 'PNG', got {image_format!r}")
        rates = (error_rate, cut_body_rate, non_image_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0:
            raise ValueError("fault rates must each be in [0, 1] and sum to at most 1")
        if not 0.0 <= throttle_rate <= 1.0:
            raise ValueError(f"throttle_rate must be in [0, 1], got {throttle_rate!r}")
        if not all(isinstance(side, int) and side > 0 for side in original_size):
            raise ValueError(f"original_size must be two positive ints, got {original_size!r}")

        self.api_token = api_token
        self.access_token = access_token
        self.limit = limit
        self.period = float(period)
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.algorithm: Algorithm = algorithm
        self.original_size = original_size
        self.image_format: ImageFormat = image_format
        self.latency = latency
        self.error_rate = error_rate
        self.cut_body_rate = cut_body_rate
        self.non_image_rate = non_image_rate
        self.throttle_rate = throttle_rate
        self.retry_after = retry_after
        self.single_use_access_tokens = single_use_access_tokens
        self.image_bytes = image_bytes
        self.document_tokens_enabled = document_tokens_enabled
        #: The OAuth/OIDC side: login, tokens, keys, and the attributes answer's shape.
        self.idme = idme if idme is not None else FakeIdMe()
        self.idme.bind(self.clock)
        #: Every request answered so far, oldest first.
        self.requests: list[RequestRecord] = []

        self._documents = Documents(self, seed)
        self._access_tokens = AccessTokens(access_token)

    def __repr__(self) -> str:
        return (
            f"FakePassbackServer(limit={self.limit}, period={self.period}, "
            f"algorithm={self.algorithm!r}, documents={len(self._documents)}, "
            f"requests={len(self.requests)})"
        )

    @property
    def client_id(self) -> str:
        """The OAuth client id the fake ID.me accepts."""
        return self.idme.client_id

    @property
    def client_secret(self) -> str | None:
        """The OAuth client secret the fake ID.me accepts."""
        return self.idme.client_secret

    # ------------------------------------------------------------------ helpers for tests

    def issue_document(self, side: Literal["front", "back"] = "front") -> str:
        """Create a new document side and return a document token for it."""
        return self._documents.issue(side)

    def issue_access_token(self) -> str:
        """Return a new access token the attributes call accepts."""
        token = self._documents.random_uuid().hex
        self._access_tokens.add(token)
        return token

    def document_id(self, token: str) -> int:
        """Return the internal number of the document ``token`` names.

        Raises:
            KeyError: if the token is unknown.
        """
        return self._documents.lookup(token).id

    def script(
        self,
        token: str,
        steps: Iterable[ScriptStep],
        *,
        endpoint: Literal["document", "refresh"] = "document",
    ) -> None:
        """Force the next answers for the document ``token`` names, one step per request.

        Steps are queued per document (a refreshed token plays the same
        queue) and consumed by requests that pass the token and size checks.
        A scripted answer replaces both the rate-limit decision and the random
        faults: a scripted 429 is not counted, any other step is counted even
        past the limit. Example: ``fake.script(token, [500, 429, "cut", 200])``.

        Raises:
            KeyError: if the token is unknown.
            ValueError, TypeError: for a step that is not a status or a known word.
        """
        checked = [check_step(step) for step in steps]
        self._documents.lookup(token).scripts[endpoint].extend(checked)

    def served_bytes(self, token: str, size: str | tuple[int, int] | None = None) -> bytes:
        """Return the exact body a successful document request for ``token`` and ``size`` gets.

        Raises:
            KeyError: if the token is unknown.
            ValueError: if ``size`` is not one the API accepts.
        """
        documents = self._documents
        return documents.image(documents.lookup(token), read_size(size))

    def count(
        self,
        *,
        endpoint: Endpoint | None = None,
        status: int | None = None,
        document: int | str | None = None,
        counted: bool | None = None,
        fault: str | None = None,
    ) -> int:
        """Return how many recorded requests match every filter given."""
        number = None if document is None else self._documents.number(document)
        return count_records(
            self.requests,
            endpoint=endpoint,
            status=status,
            document=number,
            counted=counted,
            fault=fault,
        )

    def max_in_window(
        self,
        document: int | str | None = None,
        *,
        period: float | None = None,
        include_rejected: bool = False,
    ) -> int:
        """Return the most document requests one document got in any window of ``period``.

        Windows are half-open, ``[t, t + period)``, and ``period`` defaults to
        the fake's. Only counted requests are measured unless
        ``include_rejected`` adds the ones answered 429. ``document`` (a token
        or a number) limits the measure to one document; by default it is the
        worst document. A client that respects the limit keeps this at most
        ``limit``, whatever the algorithm.
        """
        window = self.period if period is None else period
        only = None if document is None else self._documents.number(document)
        return busiest_window(
            self.requests, window, document=only, include_rejected=include_rejected
        )

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ASGI connection: ``lifespan`` or ``http``."""
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        reply = await self._handle(scope, await receive_body(receive))
        await send_reply(reply, send)

    async def _handle(self, scope: Scope, body: bytes = b"") -> Reply:
        now = self.clock.now()
        method, path, query, headers = read_request(scope)
        base = RequestRecord(method=method, path=path, endpoint=None, status=404, time=now)

        # Issuer and endpoint URLs follow the Host the client used (ASGI or loopback).
        origin = f"{scope.get('scheme', 'http')}://{headers.get('host', 'fake')}/"
        if path.startswith(("/oauth/", "/oidc/")):
            found = self.idme.handle(
                method, path, query=query, headers=headers, body=body, base=origin
            )
            if found is not None:
                endpoint, answer = found
                return self._finish(attrs.evolve(base, endpoint=endpoint), reply_from(answer))
        if path == _PREFIX + "attributes.json":
            return self._attributes(base, method, query, headers, origin)
        documents = _PREFIX + "documents/"
        rest = path[len(documents) :] if path.startswith(documents) else ""
        if rest.startswith("refresh/") and "/" not in rest[len("refresh/") :]:
            return self._refresh(base, method, rest[len("refresh/") :], query)
        if rest and "/" not in rest:
            return await self._document(base, method, rest, query)
        # ID.me answers an unknown path with an HTML page, not JSON.
        return self._finish(base, html_reply(404, error_page(404)))

    def _finish(self, record: RequestRecord, reply: Reply, **changes: Any) -> Reply:
        self.requests.append(attrs.evolve(record, status=reply.status, **changes))
        return reply

    def _attributes(
        self,
        base: RequestRecord,
        method: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        origin: str,
    ) -> Reply:
        record = attrs.evolve(base, endpoint="attributes")
        if method != "GET":
            return self._finish(record, method_not_allowed("GET"))
        token, via = access_token(query, headers)
        record = attrs.evolve(record, token_via=via)
        single_use = self.single_use_access_tokens
        refused = self._access_tokens.refused(token, self.idme, single_use=single_use)
        if refused is not None:
            return self._finish(record, error_reply(401, "invalid_token", refused))
        attributes = person(self._documents.random_uuid().hex)
        if self.document_tokens_enabled:
            front = self.issue_document("front")
            # A one-sided document (a passport) has no back to issue.
            two_sided = self.idme.document_back == "present"
            back = self.issue_document("back") if two_sided else None
            attributes.append(document_tokens(self.idme.document_tokens(front, back)))
        return self._finish(record, reply_from(self.idme.attributes(attributes, origin)))

    def _refresh(
        self, base: RequestRecord, method: str, token: str, query: dict[str, list[str]]
    ) -> Reply:
        record = attrs.evolve(base, endpoint="refresh")
        reply, changes = self._documents.refresh(method, token, query, record.time)
        return self._finish(record, reply, **changes)

    async def _document(
        self, base: RequestRecord, method: str, token: str, query: dict[str, list[str]]
    ) -> Reply:
        record = attrs.evolve(base, endpoint="document")
        reply, changes = self._documents.document(method, token, query, record.time)
        self._finish(record, reply, **changes)
        delay = self.latency() if callable(self.latency) else self.latency
        if delay > 0:
            await self.clock.sleep(delay)
        return reply
