"""The per-document rate limiter: a completion-timed token bucket, FIFO per document.

The document endpoint allows ``limit`` requests per ``period`` per document,
and ID.me does not say how it counts. A bucket of ``limit`` tokens per
document where **a spent token comes back ``period`` seconds after the
response arrived** (not after the request was sent) is safe whichever way
the server counts: the server counts a request somewhere between sending
and answering, so two grants of one token are always at least ``period``
apart as the server sees them. A fixed window, a sliding window and a
token bucket on the server all accept that.

* A request that never left (connection refused, cancelled while waiting)
  gives its token back at once; one whose fate is unknown (a timeout after
  sending, a cancellation mid-request) counts as sent.
* Waiters on one document are served first come, first served; documents
  are independent, so a spent document never delays another.
* A cancelled waiter consumes nothing and does not delay those behind it.
* A 429 holds the document until the server's Retry-After has passed.
* A refreshed token shares its document's budget (:meth:`RateLimiter.link`).

Example::

    limiter = RateLimiter(limit=2, period=60.0)
    async with limiter.acquire(document_token) as permit:
        response = await send()
        await permit.complete()   # the response is here: the token cools from now
"""

from __future__ import annotations

import math
from collections import deque

import anyio
import anyio.lowlevel

from .clock import Clock, MonotonicClock
from .store import Grant, LimiterStore, MemoryStore

__all__ = ["Permit", "RateLimiter"]

#: How long a refreshed token stays linked to its document's budget.
DEFAULT_LINEAGE_TTL = 86_400.0


class _Waiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = anyio.Event()


class Permit:
    """One request on one document: the ``async with`` of :meth:`RateLimiter.acquire`.

    Entering waits for a token; tell the permit what happened to the request:

    * ``await permit.complete()``: the response arrived; the token cools from
      now. Pass ``hold=seconds`` after a 429 to pause the document too.
    * ``permit.not_sent()``: the request certainly never reached the server;
      its token comes back at once when the block is left.

    Leaving the block without either counts the request as sent, at the
    moment of leaving: the safe reading of an unknown fate (a timeout after
    sending, a cancellation mid-request). A permit is settled exactly once.
    """

    # One object per request, context manager and permit in one: this is the
    # limiter's hot path, so it allocates as little as it can.
    __slots__ = ("_grant", "_key", "_limiter", "_sent", "_settled", "_timeout", "_token")

    def __init__(self, limiter: RateLimiter, token: str, timeout: float | None = None) -> None:
        self._limiter = limiter
        self._token = token
        # The in-process queue this request waits in: its document's, where known.
        self._key = token
        self._timeout = timeout
        # The memory store names a grant by its key alone; remote stores hand a Grant.
        self._grant: Grant | str | None = None
        self._sent = True
        self._settled = False

    async def __aenter__(self) -> Permit:
        limiter, token = self._limiter, self._token
        fast = limiter._fast
        if fast is not None:
            # Waiters queue per document: a refreshed token joins its document's line.
            self._key = key = fast.root(token)
            if key not in limiter._queues:
                result = fast.reserve_nowait(token, limiter._limit, limiter._period)
                if type(result) is str:
                    self._grant = result
                    return self
        give_up = math.inf
        if self._timeout is not None:
            give_up = limiter._clock.now() + self._timeout
        self._grant = await limiter._reserve(token, self._key, give_up)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._grant is not None and not self._settled:
            await self._limiter._settle(self, None)

    async def complete(self, *, hold: float | None = None) -> None:
        """Record that the response arrived now; with ``hold``, pause the document that long."""
        self._sent = True
        if self._settled or self._grant is None:
            return
        grant, limiter = self._grant, self._limiter
        if type(grant) is str and limiter._fast is not None:
            # The memory store settles synchronously: no further await on the hot path.
            self._settled = True
            limiter._fast.release_key(grant, sent=True, period=limiter._period, hold=hold)
            if limiter._queues:
                limiter._wake(self._key)
            return
        await limiter._settle(self, hold)

    def not_sent(self) -> None:
        """Record that the request never reached the server."""
        self._sent = False

    @property
    def settled(self) -> bool:
        """Whether the token has been handed back to the store."""
        return self._settled

    def __repr__(self) -> str:
        return f"Permit(settled={self._settled})"


class RateLimiter:
    """Per-document limiter: at most ``limit`` requests per ``period`` seconds per document.

    One limiter may be shared by many clients, and should be by every client
    of one consumer, because the server's budget is per document. By default
    each :class:`~idme_passback.PassbackClient` makes its own.

    Args:
        limit: requests allowed per document per period (the API says 2).
        period: the period in seconds (the API says 60).
        store: where buckets live; a :class:`MemoryStore` on ``clock`` by
            default, or a :class:`~idme_passback.RedisStore` for many processes.
        clock: the clock waits are measured on (monotonic by default).
        pair_front_back: if true, the front and back tokens of one attributes
            call share one budget, for a server that counts per identity
            document rather than per side. Off by default: the API documents
            the limit "per document", and each side is fetched as one.
        lineage_ttl: how long a refreshed token stays linked to its document.

    Raises:
        ValueError: for a non-positive ``limit`` or ``period``.
    """

    __slots__ = (
        "_clock",
        "_fast",
        "_limit",
        "_lineage_ttl",
        "_pair_front_back",
        "_period",
        "_queues",
        "_store",
    )

    def __init__(
        self,
        limit: int = 2,
        period: float = 60.0,
        *,
        store: LimiterStore | None = None,
        clock: Clock | None = None,
        pair_front_back: bool = False,
        lineage_ttl: float = DEFAULT_LINEAGE_TTL,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        if not (isinstance(period, int | float) and math.isfinite(period) and period > 0):
            raise ValueError(f"period must be a positive number of seconds, got {period!r}")
        self._limit = limit
        self._period = float(period)
        if store is None:
            store = MemoryStore(clock)
        if clock is None:
            clock = store.clock if isinstance(store, MemoryStore) else MonotonicClock()
        self._clock: Clock = clock
        self._store: LimiterStore = store
        # The in-memory store answers synchronously: skip the await and the shield.
        self._fast = store if isinstance(store, MemoryStore) else None
        self._pair_front_back = pair_front_back
        self._lineage_ttl = lineage_ttl
        # Per key, the waiters in arrival order; present only while someone waits.
        self._queues: dict[str, deque[_Waiter]] = {}

    @property
    def limit(self) -> int:
        """Requests allowed per document per period."""
        return self._limit

    @property
    def period(self) -> float:
        """The period in seconds."""
        return self._period

    @property
    def clock(self) -> Clock:
        """The clock waits are measured on."""
        return self._clock

    @property
    def store(self) -> LimiterStore:
        """Where the buckets live."""
        return self._store

    @property
    def pair_front_back(self) -> bool:
        """Whether the two sides of one attributes call share one budget."""
        return self._pair_front_back

    def __repr__(self) -> str:
        return (
            f"RateLimiter(limit={self._limit}, period={self._period}, "
            f"store={type(self._store).__name__}, waiting_keys={len(self._queues)})"
        )

    def acquire(self, token: str, *, timeout: float | None = None) -> Permit:
        """Wait for a token of ``token``'s document, and settle it on leaving.

        Use as ``async with limiter.acquire(token) as permit:``. Cancelling
        the wait consumes nothing. See :class:`Permit` for how the outcome of
        the request is reported.

        Raises:
            TimeoutError: no token came within ``timeout`` seconds (on this
                limiter's clock); nothing was consumed.
        """
        return Permit(self, token, timeout)

    async def hold(self, token: str, seconds: float) -> None:
        """Grant nothing on ``token``'s document for ``seconds`` (for example after a 429)."""
        await self._store.hold(token, seconds)

    async def link(self, new_token: str, token: str) -> None:
        """Make ``new_token`` share ``token``'s budget (a refresh names the same document)."""
        await self._store.link(new_token, token, self._lineage_ttl)

    async def _try(self, token: str) -> Grant | str | float:
        if self._fast is not None:
            return self._fast.reserve_nowait(token, self._limit, self._period)
        # A reservation made while we are being cancelled must not be lost.
        with anyio.CancelScope(shield=True):
            result = await self._store.reserve(token, self._limit, self._period)
        if isinstance(result, Grant):
            try:
                await anyio.lowlevel.checkpoint_if_cancelled()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._store.release(result, sent=False, period=self._period)
                raise
        return result

    async def _reserve(self, token: str, key: str, give_up: float = math.inf) -> Grant | str:
        queue = self._queues.get(key)
        if queue is None:
            if self._fast is not None:
                # Nobody waits on this key: try at once. Synchronous, so no one
                # arriving later can overtake.
                taken = self._fast.reserve_nowait(token, self._limit, self._period)
                if isinstance(taken, str):
                    return taken
            # A remote store answers after an await: join the queue first, so
            # arrival order is fixed before anyone awaits.
            queue = self._queues[key] = deque()
        waiter = _Waiter()
        queue.append(waiter)
        try:
            while True:
                if queue[0] is waiter:
                    result = await self._try(token)
                    if not isinstance(result, float):
                        return result
                    delay = result
                else:
                    delay = math.inf  # until the waiters ahead have gone
                left = give_up - self._clock.now()
                if left <= 0 or (delay != math.inf and delay > left):
                    # A head waiter's delay is a lower bound: past the deadline, give up now.
                    raise TimeoutError("no rate-limit token can come in time")
                await self._wait(waiter, min(delay, left))
                waiter.event = anyio.Event()
        finally:
            # Whether granted or cancelled, this waiter leaves and the next goes first.
            was_head = queue[0] is waiter
            queue.remove(waiter)
            if not queue:
                if self._queues.get(key) is queue:
                    del self._queues[key]
            elif was_head:
                queue[0].event.set()

    async def _wait(self, waiter: _Waiter, delay: float) -> None:
        """Sleep ``delay`` on the clock, or less if a local release wakes us."""
        if math.isinf(delay):
            await waiter.event.wait()
            return
        async with anyio.create_task_group() as group:

            async def timer() -> None:
                await self._clock.sleep(delay)
                group.cancel_scope.cancel()

            group.start_soon(timer)
            await waiter.event.wait()
            group.cancel_scope.cancel()

    def _wake(self, token: str) -> None:
        queue = self._queues.get(token)
        if queue:
            queue[0].event.set()

    async def _settle(self, permit: Permit, hold: float | None) -> None:
        permit._settled = True
        grant = permit._grant
        if isinstance(grant, str):
            assert self._fast is not None
            self._fast.release_key(grant, sent=permit._sent, period=self._period, hold=hold)
        else:
            assert grant is not None
            with anyio.CancelScope(shield=True):
                await self._store.release(grant, sent=permit._sent, period=self._period, hold=hold)
        if self._queues:
            self._wake(permit._key)
