"""What every call of one client composes: the session, the limiter, retries and the deadline.

:class:`~idme_passback.PassbackClient` checks its arguments, builds one
:class:`Core` and, for each public method, checks the call's input, opens
its telemetry span and asks the core; the core runs the attempts (see
:mod:`idme_passback._calls`) inside the retry loop, under one
:class:`~idme_passback._deadline.Deadline` per call.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import httpx

from . import _telemetry as telemetry
from ._attributes import AttributesDecoder
from ._body import ImageBody
from ._calls import Session, TimeoutArg, attributes_once, document_once, refresh_once
from ._config import (
    ATTRIBUTES,
    CLIENT_DEFAULT,
    DOCUMENT,
    REFRESH,
    Endpoint,
    UseClientDefault,
    check_deadline,
    check_retries,
)
from ._deadline import Deadline, Timeout
from ._engine import Gate
from ._http import Wire, retryable
from ._jose import JWKSSource
from ._tokens import remember
from ._version import __version__
from .bounds import Bounds
from .errors import PassbackError
from .limiter import RateLimiter
from .models import Attributes
from .retry import RetryPolicy, call_with_retries
from .sizing import Size

T = TypeVar("T")
logger = logging.getLogger("idme_passback")

DeadlineArg = float | None | UseClientDefault


class Core:
    """One client's way of running a call: its session, limiter, retry policy and deadline."""

    def __init__(
        self,
        *,
        api_token: str,
        base_url: str,
        http: httpx.AsyncClient,
        limiter: RateLimiter,
        policy: RetryPolicy,
        timeout: Timeout,
        deadline: float | None,
        access_token_in: Literal["query", "header"],
        decryption_key: object | None,
        verify_jwt: bool,
        bounds: Bounds,
        pair_front_back: bool,
    ) -> None:
        self.limiter = limiter
        self.server = httpx.URL(base_url).host
        self._api_token = api_token
        self._policy = policy
        self._deadline = deadline
        # A bulk item's call has no deadline of its own (each attempt has one): one value.
        self._no_deadline = Deadline.after(self.limiter.clock, None)
        self._pair_front_back = pair_front_back
        self._rng = random.Random()  # noqa: S311 - jitter, not cryptography
        self._session = Session(
            wire=Wire(http, {"User-Agent": f"idme-passback/{__version__}"}, bounds),
            base_url=base_url,
            api_token=api_token,
            timeout=timeout,
            access_token_in=access_token_in,
            decoder=AttributesDecoder(
                JWKSSource(base_url, http, clock=limiter.clock),
                decryption_key=decryption_key,
                verify=verify_jwt,
            ),
            default_hold=(
                limiter.period if policy.default_retry_after is None else policy.default_retry_after
            ),
            bounds=bounds,
        )

    def start(self, deadline: DeadlineArg) -> Deadline:
        """The call's deadline, starting now (checked before anything is sent)."""
        seconds = self._deadline if deadline is CLIENT_DEFAULT else check_deadline(deadline)
        return Deadline.after(self.limiter.clock, seconds)

    async def attributes(
        self, access_token: str, timeout: TimeoutArg, deadline: DeadlineArg
    ) -> Attributes:
        """The attributes call: retried only where the access token cannot have been spent."""
        remember(self._api_token, access_token)
        limit = self.start(deadline)
        attributes = await self._retrying(
            lambda: attributes_once(self._session, access_token, timeout, limit),
            ATTRIBUTES,
            self._policy.max_retries,
            limit,
        )
        _remember_tokens(attributes)
        if self._pair_front_back and attributes.has_document_tokens:
            await self._pair(attributes)
        return attributes

    async def document(  # noqa: PLR0917 - private; one call per public document method
        self,
        token: str,
        box: Size | None,
        consume: Callable[[ImageBody], Awaitable[T]],
        timeout: TimeoutArg,
        max_retries: int | None,
        deadline: DeadlineArg,
    ) -> T:
        """One document call: each attempt waits on the limiter; ``consume`` reads the 200."""
        remember(self._api_token, token)
        limit = self.start(deadline)
        return await self._document(
            token, box, consume, self.limiter.acquire, timeout, self._retries(max_retries), limit
        )

    async def bulk_document(
        self, token: str, box: Size | None, consume: Callable[[ImageBody], Awaitable[T]], gate: Gate
    ) -> T:
        """One bulk item's document call, its attempts let in by the bulk job's ``gate``."""
        # Bulk items queue for their turn: that wait is not theirs to time out on.
        # Each attempt, from the moment its permit is granted, has the client's
        # deadline (a server that trickles cannot hold a slot for ever), and
        # retries stay bounded by max_retries.
        limit = self._no_deadline
        remember(self._api_token, token)
        with telemetry.call("bulk_document", DOCUMENT, document=token, server=self.server):
            return await self._document(
                token,
                box,
                consume,
                gate,
                CLIENT_DEFAULT,
                self._policy.max_retries,
                limit,
                attempt_seconds=self._deadline,
            )

    async def _document(  # noqa: PLR0917 - private; the two document calls above
        self,
        token: str,
        box: Size | None,
        consume: Callable[[ImageBody], Awaitable[T]],
        source: Gate,
        timeout: TimeoutArg,
        retries: int,
        limit: Deadline,
        *,
        attempt_seconds: float | None = None,
    ) -> T:
        """The document attempts, each let in by ``source`` (the limiter or a bulk gate)."""
        enter = telemetry.timing(source, self.limiter.clock)
        counted = _counted(consume)
        return await self._retrying(
            lambda: document_once(
                self._session, enter, token, box, counted, timeout, limit, attempt_seconds
            ),
            DOCUMENT,
            retries,
            limit,
        )

    async def refresh(
        self, token: str, timeout: TimeoutArg, max_retries: int | None, deadline: DeadlineArg
    ) -> str:
        """The refresh call; the new token shares the old one's budget."""
        remember(self._api_token, token)
        limit = self.start(deadline)
        new_token = await self._retrying(
            lambda: refresh_once(self._session, token, timeout, limit),
            REFRESH,
            self._retries(max_retries),
            limit,
        )
        remember(new_token)
        await self.limiter.link(new_token, token)
        return new_token

    def _retries(self, max_retries: int | None) -> int:
        return self._policy.max_retries if max_retries is None else check_retries(max_retries)

    async def _retrying(
        self, attempt: Callable[[], Awaitable[T]], endpoint: Endpoint, retries: int, limit: Deadline
    ) -> T:
        return await call_with_retries(
            attempt,
            endpoint=endpoint,
            retryable=retryable,
            policy=self._policy,
            max_retries=retries,
            deadline=limit,
            rng=self._rng,
        )

    async def _pair(self, attributes: Attributes) -> None:
        # The access token is spent by now: nothing here may raise the payload away.
        try:
            tokens = attributes.document_tokens
            if tokens.back:
                await self.limiter.link(tokens.back, tokens.front)
        except PassbackError as exc:
            logger.warning("could not pair the front and back budgets: %s", type(exc).__name__)


def _counted(consume: Callable[[ImageBody], Awaitable[T]]) -> Callable[[ImageBody], Awaitable[T]]:
    """``consume``, adding the body's bytes to the call's telemetry once it is read."""

    async def counted(body: ImageBody) -> T:
        result = await consume(body)
        telemetry.received(body.received)
        return result

    return counted


def _remember_tokens(attributes: Attributes) -> None:
    """Keep the answer's document tokens in view for scrubbing, if it holds usable ones."""
    if attributes.has_document_tokens:
        # The payload is the caller's to inspect; a malformed pair raises there, not here.
        with contextlib.suppress(PassbackError):
            tokens = attributes.document_tokens
            remember(tokens.front, tokens.back)
