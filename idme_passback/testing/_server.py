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
"""

from __future__ import annotations

import collections
import json
import math
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http import HTTPStatus
from typing import Any, Literal, TypeAlias, cast
from urllib.parse import parse_qs

import attrs

from ..clock import Clock, MonotonicClock
from ._idme import FakeIdMe, IdMeAnswer
from ._images import ImageFormat, content_type, render_card
from ._ratelimit import ALGORITHMS, Algorithm, Budget, make_budget, max_in_window
from ._sizes import BadSize, Box, fit_inside, read_size

__all__ = [
    "DEFAULT_ACCESS_TOKEN",
    "DEFAULT_API_TOKEN",
    "Endpoint",
    "FakePassbackServer",
    "RequestRecord",
    "ScriptStep",
]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]

#: Which endpoint a request hit (the last four are the OAuth and OpenID Connect side).
Endpoint: TypeAlias = Literal[
    "attributes", "document", "refresh", "authorize", "token", "discovery", "jwks"
]
#: One forced answer: an HTTP status (200 is the normal answer, 429 a rate-limit
#: answer), ``"ok"`` (same as 200), ``"cut"`` (half the body under a full
#: Content-Length), ``"non_image"`` (a 200 HTML page) or ``"empty"`` (a 200
#: with the success Content-Type and no body).
ScriptStep: TypeAlias = int | Literal["ok", "cut", "non_image", "empty"]

#: The API token a fake accepts unless told otherwise (the seed's example format).
DEFAULT_API_TOKEN = "1234567-fd03-4ca4-a93e-aae6fce8e82b"
#: The access token a fake accepts unless told otherwise.
DEFAULT_ACCESS_TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"

_PREFIX = "/api/public/v3/"
_CHUNK = 64 * 1024
_CACHE_ENTRIES = 256
_STEP_WORDS = frozenset({"ok", "cut", "non_image", "empty"})

_MAINTENANCE_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Down for maintenance</title></head>"
    b"<body><h1>We'll be right back</h1><p>ID.me is down for scheduled maintenance."
    b"</p></body></html>\n"
)


def _error_page(status: int) -> bytes:
    try:
        title = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    return (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
        f"<body><h1>{title}</h1></body></html>\n"
    ).encode()


@attrs.frozen
class RequestRecord:
    """One request the fake answered, as a test sees it.

    ``path`` has no query string (so no API or access token); ``document`` is
    the fake's internal document number, the same for every token of one
    document; ``time`` is the clock's time when the request arrived.
    """

    method: str
    path: str
    endpoint: Endpoint | None
    status: int
    time: float
    #: Internal document number (document and refresh calls that found one).
    document: int | None = None
    #: The ``size`` query value exactly as sent, if any.
    size: str | None = None
    #: Whether the request spent rate-limit budget.
    counted: bool = False
    #: ``"error"``, ``"cut"``, ``"non_image"`` or ``"empty"`` for a faulty answer.
    fault: str | None = None
    #: Whether a :meth:`FakePassbackServer.script` step decided the answer.
    scripted: bool = False
    #: How the access token arrived on an attributes call: ``"query"`` or ``"header"``.
    token_via: Literal["query", "header"] | None = None


@attrs.define
class _Document:
    id: int
    side: str
    budget: Budget
    scripts: dict[str, collections.deque[ScriptStep]] = attrs.Factory(
        lambda: {"document": collections.deque(), "refresh": collections.deque()}
    )


@attrs.frozen
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    cut: bool = False


def _json(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), "application/json", headers)


def _error(status: int, code: str, description: str) -> _Reply:
    return _json(status, {"error": code, "error_description": description})


def _check_step(step: object) -> ScriptStep:
    if isinstance(step, bool) or not isinstance(step, int | str):
        raise TypeError(f"a script step is an int status or a word, got {type(step).__name__}")
    if isinstance(step, int):
        if not 200 <= step <= 599:
            raise ValueError(f"a scripted status must be from 200 to 599, got {step}")
        return step
    if step not in _STEP_WORDS:
        raise ValueError(f"a script word must be one of {sorted(_STEP_WORDS)}, got {step!r}")
    return cast("ScriptStep", step)


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

        # Deliberately predictable: a seeded fake must replay the same faults.
        self._faults = random.Random(seed)  # noqa: S311
        self._token_rng = None if seed is None else random.Random(f"tokens:{seed}")  # noqa: S311
        self._access_tokens = {access_token}
        self._used_access_tokens: set[str] = set()
        self._documents: list[_Document] = []
        self._by_token: dict[str, _Document] = {}
        self._images: collections.OrderedDict[tuple[int, tuple[int, int]], bytes] = (
            collections.OrderedDict()
        )

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
        document = _Document(
            id=len(self._documents) + 1,
            side=side,
            budget=make_budget(self.algorithm, self.limit, self.period),
        )
        self._documents.append(document)
        return self._new_token(document, dashes=True)

    def issue_access_token(self) -> str:
        """Return a new access token the attributes call accepts."""
        token = self._random_uuid().hex
        self._access_tokens.add(token)
        return token

    def document_id(self, token: str) -> int:
        """Return the internal number of the document ``token`` names.

        Raises:
            KeyError: if the token is unknown.
        """
        return self._lookup(token).id

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
        checked = [_check_step(step) for step in steps]
        self._lookup(token).scripts[endpoint].extend(checked)

    def served_bytes(self, token: str, size: str | tuple[int, int] | None = None) -> bytes:
        """Return the exact body a successful document request for ``token`` and ``size`` gets.

        Raises:
            KeyError: if the token is unknown.
            ValueError: if ``size`` is not one the API accepts.
        """
        return self._image(self._lookup(token), read_size(size))

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
        document_id = None if document is None else self._document_number(document)
        return sum(
            1
            for record in self.requests
            if (endpoint is None or record.endpoint == endpoint)
            and (status is None or record.status == status)
            and (document_id is None or record.document == document_id)
            and (counted is None or record.counted == counted)
            and (fault is None or record.fault == fault)
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
        only = None if document is None else self._document_number(document)
        times: dict[int, list[float]] = collections.defaultdict(list)
        for record in self.requests:
            if record.endpoint != "document" or record.document is None:
                continue
            if only is not None and record.document != only:
                continue
            if record.counted or (include_rejected and record.status == 429):
                times[record.document].append(record.time)
        return max((max_in_window(moments, window) for moments in times.values()), default=0)

    # ------------------------------------------------------------------ internals

    def _random_uuid(self) -> uuid.UUID:
        if self._token_rng is None:
            return uuid.uuid4()
        return uuid.UUID(int=self._token_rng.getrandbits(128), version=4)

    def _new_token(self, document: _Document, *, dashes: bool) -> str:
        while True:
            value = self._random_uuid()
            token = str(value) if dashes else value.hex
            if token not in self._by_token:
                self._by_token[token] = document
                return token

    def _lookup(self, token: str) -> _Document:
        try:
            return self._by_token[token]
        except KeyError:
            raise KeyError("unknown document token") from None

    def _document_number(self, document: int | str) -> int:
        return document if isinstance(document, int) else self._lookup(document).id

    def _image(self, document: _Document, size: Box | None) -> bytes:
        if self.image_bytes is not None:
            return self.image_bytes
        dimensions = fit_inside(self.original_size, size)
        key = (document.id, dimensions)
        cached = self._images.get(key)
        if cached is not None:
            self._images.move_to_end(key)
            return cached
        # Rendering is deterministic, so a bounded cache only costs time.
        body = render_card(
            document=document.id,
            side=document.side,
            original_size=self.original_size,
            size=dimensions,
            image_format=self.image_format,
        )
        self._images[key] = body
        if len(self._images) > _CACHE_ENTRIES:
            self._images.popitem(last=False)
        return body

    def _retry_after(self, wait: float) -> str:
        if self.retry_after is not None:
            return str(self.retry_after)
        return str(max(1, math.ceil(wait)))

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one ASGI connection: ``lifespan`` or ``http``."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        reply = await self._handle(scope, bytes(body))
        await self._send(reply, send)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _send(reply: _Reply, send: Send) -> None:
        headers = [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", str(len(reply.body)).encode()),
            *((name.encode(), value.encode()) for name, value in reply.headers),
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        # A cut answer promises the full length and ends after half of it.
        body = reply.body[: len(reply.body) // 2] if reply.cut else reply.body
        for start in range(0, len(body), _CHUNK):
            chunk = body[start : start + _CHUNK]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _handle(self, scope: Scope, body: bytes = b"") -> _Reply:
        now = self.clock.now()
        method: str = scope["method"]
        path: str = scope["path"]
        query = parse_qs(
            bytes(scope.get("query_string", b"")).decode("latin-1"), keep_blank_values=True
        )
        headers = {
            bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        base = RequestRecord(method=method, path=path, endpoint=None, status=404, time=now)

        # Issuer and endpoint URLs follow the Host the client used (ASGI or loopback).
        origin = f"{scope.get('scheme', 'http')}://{headers.get('host', 'fake')}/"
        if path.startswith(("/oauth/", "/oidc/")):
            found = self.idme.handle(
                method, path, query=query, headers=headers, body=body, base=origin
            )
            if found is not None:
                endpoint, answer = found
                return self._finish(attrs.evolve(base, endpoint=endpoint), _reply(answer))
        if path == _PREFIX + "attributes.json":
            return self._attributes(base, method, query, headers, origin)
        documents = _PREFIX + "documents/"
        rest = path[len(documents) :] if path.startswith(documents) else ""
        if rest.startswith("refresh/") and "/" not in rest[len("refresh/") :]:
            return self._refresh(base, method, rest[len("refresh/") :], query)
        if rest and "/" not in rest:
            return await self._document(base, method, rest, query)
        # ID.me answers an unknown path with an HTML page, not JSON.
        return self._finish(base, _Reply(404, _error_page(404), "text/html; charset=utf-8"))

    def _finish(self, record: RequestRecord, reply: _Reply, **changes: Any) -> _Reply:
        self.requests.append(attrs.evolve(record, status=reply.status, **changes))
        return reply

    def _attributes(
        self,
        base: RequestRecord,
        method: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        origin: str,
    ) -> _Reply:
        record = attrs.evolve(base, endpoint="attributes")
        if method != "GET":
            return self._finish(record, _method_not_allowed("GET"))
        token: str | None = None
        via: Literal["query", "header"] | None = None
        if "access_token" in query:
            token, via = query["access_token"][0], "query"
        else:
            scheme, _, value = headers.get("authorization", "").partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token, via = value.strip(), "header"
        record = attrs.evolve(record, token_via=via)
        refused = self._refused(token)
        if refused is not None:
            return self._finish(record, _error(401, "invalid_token", refused))
        attributes: list[dict[str, object]] = [
            {"handle": "fname", "name": "First Name", "value": "Jane"},
            {"handle": "lname", "name": "Last Name", "value": "Doe"},
            {"handle": "email", "name": "Email", "value": "jane.doe@example.com"},
            {"handle": "birth_date", "name": "Birth Date", "value": "1990-01-31"},
            {"handle": "uuid", "name": "Unique Identifier", "value": self._random_uuid().hex},
        ]
        if self.document_tokens_enabled:
            front = self.issue_document("front")
            # A one-sided document (a passport) has no back to issue.
            two_sided = self.idme.document_back == "present"
            back = self.issue_document("back") if two_sided else None
            attributes.append(
                {
                    "handle": "document_tokens",
                    "name": "Document Passback Tokens",
                    "value": self.idme.document_tokens(front, back),
                }
            )
        return self._finish(record, _reply(self.idme.attributes(attributes, origin)))

    def _refused(self, token: str | None) -> str | None:
        """Why the attributes call refuses ``token``; ``None`` when it buys the call."""
        if token is None:
            return "The access token is invalid or missing."
        issued = self.idme.check_access_token(token)
        if issued != "unknown":
            words = {"ok": None, "used": "has been used", "expired": "has expired"}[issued]
            return None if words is None else f"The access token {words}."
        if token not in self._access_tokens:
            return "The access token is invalid or missing."
        if self.single_use_access_tokens:
            if token in self._used_access_tokens:
                return "The access token has been used."
            self._used_access_tokens.add(token)
        return None

    def _authorize(
        self, method: str, token: str, query: dict[str, list[str]]
    ) -> _Document | _Reply:
        if method != "POST":
            return _method_not_allowed("POST")
        if query.get("token", [None])[0] != self.api_token:
            return _error(401, "invalid_token", "The API token is invalid or missing.")
        document = self._by_token.get(token)
        if document is None:
            return _error(404, "not_found", "The document token is unknown.")
        return document

    def _refresh(
        self, base: RequestRecord, method: str, token: str, query: dict[str, list[str]]
    ) -> _Reply:
        record = attrs.evolve(base, endpoint="refresh")
        found = self._authorize(method, token, query)
        if isinstance(found, _Reply):
            return self._finish(record, found)
        record = attrs.evolve(record, document=found.id)
        script = found.scripts["refresh"]
        if script:
            step = script.popleft()
            reply, fault = self._scripted(step, found, None, record.time, refresh=True)
            return self._finish(record, reply, fault=fault, scripted=True)
        new_token = self._new_token(found, dashes=False)
        return self._finish(record, _json(200, {"document_token": new_token}))

    async def _document(
        self, base: RequestRecord, method: str, token: str, query: dict[str, list[str]]
    ) -> _Reply:
        record = attrs.evolve(base, endpoint="document")
        reply, changes = self._decide_document(record, method, token, query)
        self._finish(record, reply, **changes)
        delay = self.latency() if callable(self.latency) else self.latency
        if delay > 0:
            await self.clock.sleep(delay)
        return reply

    def _decide_document(
        self, record: RequestRecord, method: str, token: str, query: dict[str, list[str]]
    ) -> tuple[_Reply, dict[str, Any]]:
        found = self._authorize(method, token, query)
        if isinstance(found, _Reply):
            return found, {}
        raw_size = query["size"][0] if "size" in query else None
        changes: dict[str, Any] = {"document": found.id, "size": raw_size}
        try:
            size = read_size(raw_size)
        except BadSize as exc:
            return _error(400, "invalid_size", str(exc)), changes
        now = record.time
        script = found.scripts["document"]
        if script:
            step = script.popleft()
            reply, fault = self._scripted(step, found, size, now, refresh=False)
            counted = reply.status != 429
            return reply, {**changes, "fault": fault, "scripted": True, "counted": counted}
        if self.throttle_rate and self._faults.random() < self.throttle_rate:
            return self._rate_limited(1.0), {**changes, "fault": "throttle"}
        wait = found.budget.acquire(now)
        if wait > 0:
            return self._rate_limited(wait), changes
        changes["counted"] = True
        draw = self._faults.random()
        if draw < self.error_rate:
            return self._fault_reply("error", found, size), {**changes, "fault": "error"}
        draw -= self.error_rate
        if draw < self.cut_body_rate:
            return self._fault_reply("cut", found, size), {**changes, "fault": "cut"}
        draw -= self.cut_body_rate
        if draw < self.non_image_rate:
            return self._fault_reply("non_image", found, size), {**changes, "fault": "non_image"}
        return self._image_reply(found, size), changes

    def _rate_limited(self, wait: float) -> _Reply:
        return _json(
            429,
            {
                "error": "rate_limit_exceeded",
                "error_description": f"At most {self.limit} requests per "
                f"{self.period:g} seconds per document.",
            },
            headers=(("retry-after", self._retry_after(wait)),),
        )

    def _image_reply(self, document: _Document, size: Box | None) -> _Reply:
        return _Reply(200, self._image(document, size), content_type(self.image_format))

    def _fault_reply(self, fault: str, document: _Document, size: Box | None) -> _Reply:
        if fault == "error":
            return _Reply(500, _error_page(500), "text/html; charset=utf-8")
        if fault == "non_image":
            return _Reply(200, _MAINTENANCE_PAGE, "text/html; charset=utf-8")
        if fault == "empty":
            return _Reply(200, b"", content_type(self.image_format))
        return attrs.evolve(self._image_reply(document, size), cut=True)

    def _scripted(
        self,
        step: ScriptStep,
        document: _Document,
        size: Box | None,
        now: float,
        *,
        refresh: bool,
    ) -> tuple[_Reply, str | None]:
        if step == 429:
            return self._rate_limited(document.budget.wait(now)), None
        if not refresh:
            document.budget.force(now)
        if step in (200, "ok", "cut", "empty") and refresh:
            reply = _json(200, {"document_token": self._new_token(document, dashes=False)})
            if step == "cut":
                return attrs.evolve(reply, cut=True), "cut"
            if step == "empty":
                return attrs.evolve(reply, body=b""), "empty"
            return reply, None
        if step in (200, "ok"):
            return self._image_reply(document, size), None
        if step in ("cut", "non_image", "empty"):
            return self._fault_reply(str(step), document, size), str(step)
        status = cast("int", step)
        if status >= 500:
            return _Reply(status, _error_page(status), "text/html; charset=utf-8"), "error"
        if status < 300:
            return _Reply(status, b"", content_type(self.image_format)), None
        return _error(status, "scripted_error", f"Scripted {status} answer."), "error"


def _reply(answer: IdMeAnswer) -> _Reply:
    return _Reply(answer.status, answer.body, answer.content_type, answer.headers)


def _method_not_allowed(allowed: str) -> _Reply:
    payload = {"error": "method_not_allowed", "error_description": f"Use {allowed}."}
    return _json(405, payload, headers=(("allow", allowed),))
