"""What the fake Passback server reads, records and sends: requests, records, replies.

:class:`RequestRecord` is one answered request as a test sees it, and
:func:`count_records` and :func:`busiest_window` measure a list of them.
:class:`Reply` is one answer before it is sent, built by :func:`json_reply`,
:func:`error_reply`, :func:`html_reply` (ID.me's HTML pages) and
:func:`method_not_allowed`, and sent over ASGI by :func:`send_reply`; a cut
reply promises its full ``Content-Length`` and ends after half of it.
:func:`read_request` and :func:`receive_body` read an ASGI HTTP request.
:func:`check_step` validates one :data:`ScriptStep`.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http import HTTPStatus
from typing import Any, Literal, TypeAlias, cast
from urllib.parse import parse_qs

import attrs

from ._idme_oauth import IdMeAnswer
from ._ratelimit import max_in_window

__all__ = [
    "MAINTENANCE_PAGE",
    "Endpoint",
    "Message",
    "Receive",
    "Reply",
    "RequestRecord",
    "Scope",
    "ScriptStep",
    "Send",
    "busiest_window",
    "check_step",
    "count_records",
    "error_page",
    "error_reply",
    "html_reply",
    "json_reply",
    "lifespan",
    "method_not_allowed",
    "read_request",
    "receive_body",
    "reply_from",
    "send_reply",
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

_CHUNK = 64 * 1024
_STEP_WORDS = frozenset({"ok", "cut", "non_image", "empty"})
_HTML = "text/html; charset=utf-8"

#: The 200 HTML page a ``non_image`` fault serves.
MAINTENANCE_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Down for maintenance</title></head>"
    b"<body><h1>We'll be right back</h1><p>ID.me is down for scheduled maintenance."
    b"</p></body></html>\n"
)


def error_page(status: int) -> bytes:
    """The HTML page ID.me answers ``status`` with."""
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


def count_records(
    records: Iterable[RequestRecord],
    *,
    endpoint: Endpoint | None,
    status: int | None,
    document: int | None,
    counted: bool | None,
    fault: str | None,
) -> int:
    """How many of ``records`` match every filter that is not ``None``."""
    return sum(
        1
        for record in records
        if (endpoint is None or record.endpoint == endpoint)
        and (status is None or record.status == status)
        and (document is None or record.document == document)
        and (counted is None or record.counted == counted)
        and (fault is None or record.fault == fault)
    )


def busiest_window(
    records: Iterable[RequestRecord],
    window: float,
    *,
    document: int | None,
    include_rejected: bool,
) -> int:
    """The most document requests of ``records`` one document got in any ``window``.

    Only counted requests are measured, and the 429s too if ``include_rejected``;
    ``document`` limits the measure to that document.
    """
    times: dict[int, list[float]] = collections.defaultdict(list)
    for record in records:
        if record.endpoint != "document" or record.document is None:
            continue
        if document is not None and record.document != document:
            continue
        if record.counted or (include_rejected and record.status == 429):
            times[record.document].append(record.time)
    return max((max_in_window(moments, window) for moments in times.values()), default=0)


@attrs.frozen
class Reply:
    """One answer of the fake, before it is sent."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    #: Send half the body under the full ``Content-Length``.
    cut: bool = False


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON answer."""
    return Reply(status, json.dumps(payload).encode(), "application/json", headers)


def error_reply(status: int, code: str, description: str) -> Reply:
    """A JSON error answer: ``{"error": code, "error_description": description}``."""
    return json_reply(status, {"error": code, "error_description": description})


def html_reply(status: int, body: bytes) -> Reply:
    """An HTML answer."""
    return Reply(status, body, _HTML)


def method_not_allowed(allowed: str) -> Reply:
    """The 405 answer to a method other than ``allowed``."""
    payload = {"error": "method_not_allowed", "error_description": f"Use {allowed}."}
    return json_reply(405, payload, headers=(("allow", allowed),))


def reply_from(answer: IdMeAnswer) -> Reply:
    """The fake ID.me's answer as a reply."""
    return Reply(answer.status, answer.body, answer.content_type, answer.headers)


def check_step(step: object) -> ScriptStep:
    """Return ``step`` if it is a :data:`ScriptStep`.

    Raises:
        TypeError: for anything but an int or a str.
        ValueError: for a status outside 200 to 599 or an unknown word.
    """
    if isinstance(step, bool) or not isinstance(step, int | str):
        raise TypeError(f"a script step is an int status or a word, got {type(step).__name__}")
    if isinstance(step, int):
        if not 200 <= step <= 599:
            raise ValueError(f"a scripted status must be from 200 to 599, got {step}")
        return step
    if step not in _STEP_WORDS:
        raise ValueError(f"a script word must be one of {sorted(_STEP_WORDS)}, got {step!r}")
    return cast("ScriptStep", step)


def read_request(scope: Scope) -> tuple[str, str, dict[str, list[str]], dict[str, str]]:
    """The method, path, query (blank values kept) and lower-cased headers of ``scope``."""
    query = parse_qs(
        bytes(scope.get("query_string", b"")).decode("latin-1"), keep_blank_values=True
    )
    headers = {
        bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1")
        for name, value in scope.get("headers", [])
    }
    return scope["method"], scope["path"], query, headers


async def receive_body(receive: Receive) -> bytes:
    """The whole body of an ASGI HTTP request."""
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    return bytes(body)


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI ``lifespan`` connection until shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_reply(reply: Reply, send: Send) -> None:
    """Send ``reply`` as an ASGI HTTP response, its body in 64 KiB chunks."""
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
