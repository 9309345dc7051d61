"""The fake server's documents and what its document and refresh endpoints answer.

:class:`Documents` holds every document side the fake issued (its tokens,
rate-limit budget, script queues and rendered images) and decides each
document or refresh request: the API-token, document-token and size checks,
then a scripted step, a random throttle, the rate-limit decision and the
random faults, in that order. It reads the server's :class:`Settings` at every
request, so a test may change them between requests. Sizes are read with the
fake's own :mod:`._sizes`, never the library's sizing module.
"""

from __future__ import annotations

import collections
import math
import random
import uuid
from typing import Any, Literal, Protocol, cast

import attrs

from ._images import ImageFormat, content_type, render_card
from ._ratelimit import Algorithm, Budget, make_budget
from ._sizes import BadSize, Box, fit_inside, read_size
from ._wire import (
    MAINTENANCE_PAGE,
    Reply,
    ScriptStep,
    error_page,
    error_reply,
    html_reply,
    json_reply,
    method_not_allowed,
)

__all__ = ["Document", "Documents", "Settings"]

_CACHE_ENTRIES = 256

Query = dict[str, list[str]]


class Settings(Protocol):
    """The server's settings a decision reads (a :class:`FakePassbackServer`)."""

    api_token: str
    limit: int
    period: float
    algorithm: Algorithm
    original_size: tuple[int, int]
    image_format: ImageFormat
    error_rate: float
    cut_body_rate: float
    non_image_rate: float
    throttle_rate: float
    retry_after: int | str | None
    image_bytes: bytes | None


@attrs.define
class Document:
    """One document side: its number, its budget and its script queues."""

    id: int
    side: str
    budget: Budget
    scripts: dict[str, collections.deque[ScriptStep]] = attrs.Factory(
        lambda: {"document": collections.deque(), "refresh": collections.deque()}
    )


class Documents:
    """Every document the fake issued, and the decisions on requests for them.

    Args:
        settings: the server whose settings are read at every request.
        seed: seeds the fault draws and the tokens (``None``: random).
    """

    def __init__(self, settings: Settings, seed: int | str | None) -> None:
        self._settings = settings
        # Deliberately predictable: a seeded fake must replay the same faults.
        self._faults = random.Random(seed)  # noqa: S311
        self._token_rng = None if seed is None else random.Random(f"tokens:{seed}")  # noqa: S311
        self._documents: list[Document] = []
        self._by_token: dict[str, Document] = {}
        self._images: collections.OrderedDict[tuple[int, tuple[int, int]], bytes] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._documents)

    def random_uuid(self) -> uuid.UUID:
        """A random UUID 4, from the seeded sequence when the fake has a seed."""
        if self._token_rng is None:
            return uuid.uuid4()
        return uuid.UUID(int=self._token_rng.getrandbits(128), version=4)

    def issue(self, side: Literal["front", "back"]) -> str:
        """Create a new document side and return a document token for it."""
        settings = self._settings
        document = Document(
            id=len(self._documents) + 1,
            side=side,
            budget=make_budget(settings.algorithm, settings.limit, settings.period),
        )
        self._documents.append(document)
        return self._new_token(document, dashes=True)

    def lookup(self, token: str) -> Document:
        """The document ``token`` names.

        Raises:
            KeyError: if the token is unknown.
        """
        try:
            return self._by_token[token]
        except KeyError:
            raise KeyError("unknown document token") from None

    def number(self, document: int | str) -> int:
        """The number of a document given by number or by token."""
        return document if isinstance(document, int) else self.lookup(document).id

    def image(self, document: Document, size: Box | None) -> bytes:
        """The image a successful request for ``document`` at ``size`` gets."""
        settings = self._settings
        if settings.image_bytes is not None:
            return settings.image_bytes
        dimensions = fit_inside(settings.original_size, size)
        key = (document.id, dimensions)
        cached = self._images.get(key)
        if cached is not None:
            self._images.move_to_end(key)
            return cached
        # Rendering is deterministic, so a bounded cache only costs time.
        body = render_card(
            document=document.id,
            side=document.side,
            original_size=settings.original_size,
            size=dimensions,
            image_format=settings.image_format,
        )
        self._images[key] = body
        if len(self._images) > _CACHE_ENTRIES:
            self._images.popitem(last=False)
        return body

    # ------------------------------------------------------------------ decisions

    def refresh(
        self, method: str, token: str, query: Query, now: float
    ) -> tuple[Reply, dict[str, Any]]:
        """Answer a refresh request at ``now``; also the request record's changes."""
        found = self._authorize(method, token, query)
        if isinstance(found, Reply):
            return found, {}
        changes: dict[str, Any] = {"document": found.id}
        script = found.scripts["refresh"]
        if script:
            step = script.popleft()
            reply, fault = self._scripted(step, found, None, now, refresh=True)
            return reply, {**changes, "fault": fault, "scripted": True}
        new_token = self._new_token(found, dashes=False)
        return json_reply(200, {"document_token": new_token}), changes

    def document(
        self, method: str, token: str, query: Query, now: float
    ) -> tuple[Reply, dict[str, Any]]:
        """Answer a document request at ``now``; also the request record's changes."""
        found = self._authorize(method, token, query)
        if isinstance(found, Reply):
            return found, {}
        raw_size = query["size"][0] if "size" in query else None
        changes: dict[str, Any] = {"document": found.id, "size": raw_size}
        try:
            size = read_size(raw_size)
        except BadSize as exc:
            return error_reply(400, "invalid_size", str(exc)), changes
        script = found.scripts["document"]
        if script:
            step = script.popleft()
            reply, fault = self._scripted(step, found, size, now, refresh=False)
            counted = reply.status != 429
            return reply, {**changes, "fault": fault, "scripted": True, "counted": counted}
        settings = self._settings
        if settings.throttle_rate and self._faults.random() < settings.throttle_rate:
            return self._rate_limited(1.0), {**changes, "fault": "throttle"}
        wait = found.budget.acquire(now)
        if wait > 0:
            return self._rate_limited(wait), changes
        changes["counted"] = True
        draw = self._faults.random()
        if draw < settings.error_rate:
            return self._fault_reply("error", found, size), {**changes, "fault": "error"}
        draw -= settings.error_rate
        if draw < settings.cut_body_rate:
            return self._fault_reply("cut", found, size), {**changes, "fault": "cut"}
        draw -= settings.cut_body_rate
        if draw < settings.non_image_rate:
            return self._fault_reply("non_image", found, size), {**changes, "fault": "non_image"}
        return self._image_reply(found, size), changes

    # ------------------------------------------------------------------ internals

    def _new_token(self, document: Document, *, dashes: bool) -> str:
        while True:
            value = self.random_uuid()
            token = str(value) if dashes else value.hex
            if token not in self._by_token:
                self._by_token[token] = document
                return token

    def _authorize(self, method: str, token: str, query: Query) -> Document | Reply:
        if method != "POST":
            return method_not_allowed("POST")
        if query.get("token", [None])[0] != self._settings.api_token:
            return error_reply(401, "invalid_token", "The API token is invalid or missing.")
        document = self._by_token.get(token)
        if document is None:
            return error_reply(404, "not_found", "The document token is unknown.")
        return document

    def _rate_limited(self, wait: float) -> Reply:
        settings = self._settings
        return json_reply(
            429,
            {
                "error": "rate_limit_exceeded",
                "error_description": f"At most {settings.limit} requests per "
                f"{settings.period:g} seconds per document.",
            },
            headers=(("retry-after", self._retry_after(wait)),),
        )

    def _retry_after(self, wait: float) -> str:
        if self._settings.retry_after is not None:
            return str(self._settings.retry_after)
        return str(max(1, math.ceil(wait)))

    def _image_reply(self, document: Document, size: Box | None) -> Reply:
        return Reply(200, self.image(document, size), content_type(self._settings.image_format))

    def _fault_reply(self, fault: str, document: Document, size: Box | None) -> Reply:
        if fault == "error":
            return html_reply(500, error_page(500))
        if fault == "non_image":
            return html_reply(200, MAINTENANCE_PAGE)
        if fault == "empty":
            return Reply(200, b"", content_type(self._settings.image_format))
        return attrs.evolve(self._image_reply(document, size), cut=True)

    def _scripted(
        self,
        step: ScriptStep,
        document: Document,
        size: Box | None,
        now: float,
        *,
        refresh: bool,
    ) -> tuple[Reply, str | None]:
        if step == 429:
            return self._rate_limited(document.budget.wait(now)), None
        if not refresh:
            document.budget.force(now)
        if step in (200, "ok", "cut", "empty") and refresh:
            reply = json_reply(200, {"document_token": self._new_token(document, dashes=False)})
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
            return html_reply(status, error_page(status)), "error"
        if status < 300:
            return Reply(status, b"", content_type(self._settings.image_format)), None
        return error_reply(status, "scripted_error", f"Scripted {status} answer."), "error"
