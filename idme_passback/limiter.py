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
* The store is asked under a bound: a store that fails or stalls is a
  :class:`~idme_passback.LimiterUnavailableError`, and nothing is granted
  on its word (the limiter fails closed).

Example::

    limiter = RateLimiter(limit=2, period=60.0)
    async with limiter.acquire(document_token) as permit:
        response = await send()
        await permit.complete()   # the response is here: the token cools from now
"""

from __future__ import annotations

import math

from ._lines import Lines
from .clock import Clock, MonotonicClock
from .errors import LimiterUnavailableError, PassbackError
from .store import Grant, LimiterStore, MemoryStore

__all__ = ["Permit", "RateLimiter"]

#: How long a refreshed token stays linked to its document's budget.
DEFAULT_LINEAGE_TTL = 86_400.0
#: Seconds one store round trip may take before the store counts as unavailable.
DEFAULT_STORE_TIMEOUT = 5.0


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

    __slots__ = ("_grant", "_lines", "_sent", "_settled", "_timeout", "_token")

    def __init__(
        self, lines: Lines, token: str, timeout: float | None, grant: Grant | None = None
    ) -> None:
        self._lines = lines
        self._token = token
        self._timeout = timeout
        self._grant = grant
        self._sent = True
        self._settled = False

    async def __aenter__(self) -> Permit:
        if self._grant is None:  # (a permit from try_acquire() is granted already)
            self._grant = self._lines.take_now(self._token) or await self._lines.take(
                self._token, self._timeout
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._settle(None)

    async def complete(self, *, hold: float | None = None) -> None:
        """Record that the response arrived now; with ``hold``, pause the document that long."""
        self._sent = True
        await self._settle(hold)

    def not_sent(self) -> None:
        """Record that the request never reached the server."""
        self._sent = False

    async def _settle(self, hold: float | None) -> None:
        if self._settled or self._grant is None:
            return
        self._settled = True
        grant, token, sent = self._grant, self._token, self._sent
        if not self._lines.give_back_now(grant, token=token, sent=sent, hold=hold):
            await self._lines.give_back(grant, token=token, sent=sent, hold=hold)

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
        lineage_ttl: how long a refreshed token stays linked to its document.
        store_timeout: seconds one store round trip may take before the
            store counts as unavailable (not used by the memory store).

    Raises:
        ValueError: for a non-positive ``limit``, ``period`` or ``store_timeout``.
    """

    __slots__ = ("_clock", "_limit", "_lines", "_period", "_store")

    def __init__(
        self,
        limit: int = 2,
        period: float = 60.0,
        *,
        store: LimiterStore | None = None,
        clock: Clock | None = None,
        lineage_ttl: float = DEFAULT_LINEAGE_TTL,
        store_timeout: float = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        for name, value in (("period", period), ("store_timeout", store_timeout)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self._limit = limit
        self._period = float(period)
        if store is None:
            store = MemoryStore(clock)
        if clock is None:
            clock = store.clock if isinstance(store, MemoryStore) else MonotonicClock()
        self._clock: Clock = clock
        self._store: LimiterStore = store
        self._lines = Lines(store, clock, limit, self._period, lineage_ttl, store_timeout)

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

    def __repr__(self) -> str:
        return (
            f"RateLimiter(limit={self._limit}, period={self._period}, "
            f"store={type(self._store).__name__}, waiting_keys={self._lines.waiting_keys})"
        )

    def acquire(self, token: str, *, timeout: float | None = None) -> Permit:
        """Wait for a token of ``token``'s document, and settle it on leaving.

        Use as ``async with limiter.acquire(token) as permit:``. Cancelling
        the wait consumes nothing. See :class:`Permit` for how the outcome of
        the request is reported.

        Raises:
            ValueError: a negative or NaN ``timeout``.
            LimiterTimeoutError: no token can come within ``timeout`` seconds
                (on this limiter's clock); nothing was consumed.
            LimiterUnavailableError: the store failed or stalled.
        """
        if timeout is not None and not timeout >= 0:  # negative, or NaN
            raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")
        return Permit(self._lines, token, timeout)

    async def try_acquire(self, token: str) -> Permit | None:
        """A permit at once if ``token``'s document has a token free now, else ``None``.

        Never waits for a token: it asks the store once (within
        ``store_timeout``) and does not queue. A document others are already
        waiting for answers ``None``, so they keep their turn. Use the permit
        as ``async with permit:``, exactly like one from :meth:`acquire`; it
        is granted already, so entering it does not wait. The bulk engine
        tries this before it spends a worker on an item.

        Raises:
            LimiterUnavailableError: the store failed or stalled.
        """
        grant = await self._lines.try_take(token)
        return None if grant is None else Permit(self._lines, token, None, grant)

    async def link(self, new_token: str, token: str) -> None:
        """Make ``new_token`` share ``token``'s budget (a refresh names the same document).

        Raises:
            LimiterUnavailableError: the store failed.
        """
        try:
            await self._lines.link(new_token, token)
        except PassbackError:
            raise
        except Exception as exc:
            raise LimiterUnavailableError(
                f"the rate limiter's store failed ({type(exc).__name__})"
            ) from exc
