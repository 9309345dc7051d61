"""One attempt at each endpoint: build the request, send it, read and check the answer.

:class:`~idme_passback.PassbackClient` runs these inside the retry loop,
under the call's :class:`~idme_passback._deadline.Deadline`; each is one
straight line from the request to the typed result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol, TypeVar

import attrs
import httpx

from ._attributes import AttributesDecoder
from ._body import ImageBody
from ._config import ATTRIBUTES, CLIENT_DEFAULT, DOCUMENT, REFRESH, UseClientDefault
from ._deadline import Deadline, Timeout
from ._http import Wire, decode_json, translate
from ._tokens import check_token
from .bounds import Bounds
from .errors import (
    DeadlineExceededError,
    MalformedResponseError,
    PassbackError,
    TransportError,
)
from .limiter import Permit
from .models import Attributes, parse_attributes
from .sizing import Size

T = TypeVar("T")
TimeoutArg = Timeout | UseClientDefault


class Enter(Protocol):
    """How a document attempt gets its permit: the limiter's ``acquire``, or a bulk gate."""

    def __call__(
        self, token: str, *, timeout: float | None
    ) -> AbstractAsyncContextManager[Permit]: ...


@attrs.frozen
class Session:
    """What every attempt of one client needs, and nothing that changes."""

    wire: Wire
    base_url: str
    api_token: str = attrs.field(repr=False)
    timeout: Timeout
    access_token_in: Literal["query", "header"]
    decoder: AttributesDecoder
    #: How long a 429 without Retry-After pauses its document.
    default_hold: float
    #: What a server may make the client hold, and how late a request may leave.
    bounds: Bounds = attrs.Factory(Bounds)

    def cap(self, timeout: TimeoutArg, deadline: Deadline) -> Timeout:
        """The attempt's timeout (the client's by default), shortened to fit the deadline."""
        return deadline.cap(self.timeout if timeout is CLIENT_DEFAULT else timeout)


async def attributes_once(
    session: Session, access_token: str, timeout: TimeoutArg, deadline: Deadline
) -> Attributes:
    """One attributes request; its body decoded (JSON, JWT or JWE) and checked."""
    secrets = (session.api_token, access_token)
    params: dict[str, str] = {}
    headers: dict[str, str] = {}
    if session.access_token_in == "header":
        headers["Authorization"] = f"Bearer {access_token}"
    else:
        params["access_token"] = access_token
    # Signing keys are fetched only when a signed answer arrives (then cached): most
    # answers are plain JSON, and a fetch before every call would cost a request.
    request = session.wire.build(
        "GET",
        session.base_url + ATTRIBUTES.path,
        params=params,
        headers=headers,
        timeout=session.cap(timeout, deadline),
    )
    response = await session.wire.send(request, ATTRIBUTES, secrets, deadline)
    content_type = response.headers.get("content-type")
    body = await session.wire.read(response, ATTRIBUTES, secrets, deadline)
    try:
        # Decoding may fetch signing keys: that wait is the call's too.
        payload = await deadline.run(
            lambda: session.decoder.decode(body, content_type),
            "while decoding the attributes answer",
            sent=True,
        )
        return parse_attributes(payload, secrets=secrets)
    except RecursionError:
        raise MalformedResponseError(
            "the attributes answer is nested too deeply to decode"
        ) from None


async def document_once(  # noqa: PLR0917 - private; one call per client entry point
    session: Session,
    enter: Enter,
    token: str,
    box: Size | None,
    consume: Callable[[ImageBody], Awaitable[T]],
    timeout: TimeoutArg,
    deadline: Deadline,
    attempt_seconds: float | None = None,
) -> T:
    """One document request under a rate-limit permit; ``consume`` reads the 200 body.

    ``attempt_seconds`` bounds the attempt from the moment its permit is
    granted (bulk items, whose wait for their turn is not theirs to time out on).
    """
    secrets = (session.api_token, token)
    params = {"token": session.api_token}
    if box is not None:
        params["size"] = str(box)
    # Time kept for the request itself: a token that leaves less is not worth taking.
    margin = session.bounds.send_margin(deadline.seconds)
    async with enter(token, timeout=deadline.wait_allowed(margin)) as permit:
        # A slow limiter (or its store) may have used up the time: do not send late,
        # and give the token back, so the document keeps its request for later.
        if deadline.remaining() < max(margin, 1e-3):
            permit.not_sent()
            raise DeadlineExceededError(
                f"the call's deadline of {deadline.seconds:g} s would pass before a "
                "document request could be answered (it was not sent)",
                sent=False,
            )
        deadline = deadline.within(attempt_seconds)
        request = session.wire.build(
            "POST",
            f"{session.base_url}{DOCUMENT.path}{token}",
            params=params,
            # An image gains nothing from compression; a server that sends it anyway
            # is decoded within bounds.
            headers={"Accept-Encoding": "identity"},
            timeout=session.cap(timeout, deadline),
        )
        response = await session.wire.send(
            request, DOCUMENT, secrets, deadline, permit=permit, default_hold=session.default_hold
        )
        body = ImageBody(response, deadline, session.bounds)
        failure: TransportError | None = None
        try:
            return await consume(body)
        except httpx.HTTPError as exc:
            failure = translate(exc, secrets, DOCUMENT)
        finally:
            await body.aclose()
            await response.aclose()
        # Raised outside the handler: the foreign error is neither cause nor context.
        assert failure is not None  # consume() returned, or its httpx error was translated
        raise failure


async def refresh_once(
    session: Session, token: str, timeout: TimeoutArg, deadline: Deadline
) -> str:
    """One refresh request; the new document token, checked."""
    secrets = (session.api_token, token)
    request = session.wire.build(
        "POST",
        f"{session.base_url}{REFRESH.path}{token}",
        params={"token": session.api_token},
        timeout=session.cap(timeout, deadline),
    )
    response = await session.wire.send(request, REFRESH, secrets, deadline)
    body = await session.wire.read(response, REFRESH, secrets, deadline)
    return _new_token(decode_json(body, REFRESH))


def _new_token(payload: object) -> str:
    new_token = payload.get("document_token") if isinstance(payload, dict) else None
    if not isinstance(new_token, str):
        raise MalformedResponseError("the refresh answer has no 'document_token' string")
    try:
        return check_token(new_token)
    except PassbackError:
        raise MalformedResponseError(
            "the refresh answer's 'document_token' is not a usable token"
        ) from None
