"""The limiter's machinery: per-document queues of waiters, and the store's answers.

:class:`~idme_passback.RateLimiter` and its :class:`~idme_passback.Permit`
are the public face; this module holds what they drive: FIFO queues per
document, the bounded store calls (a store that fails or stalls is a
:class:`~idme_passback.LimiterUnavailableError`, and nothing is granted on
its word), and the releases and discards a failing store did not take,
kept and retried.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections import deque

import anyio

from .clock import Clock
from .errors import LimiterTimeoutError, LimiterUnavailableError, PassbackError
from .store import Denied, Grant, LimiterStore, MemoryStore

logger = logging.getLogger("idme_passback")

#: The longest 429 hold passed to a store (a hostile Retry-After must not overflow it).
MAX_HOLD = 86_400.0
#: Releases and discards the store did not take, kept to retry before later takes:
#: at most this many, each for at most this many seconds (by then the store's
#: lease has reclaimed the token anyway), tried again at most this often.
_MAX_UNSETTLED = 1024
_UNSETTLED_FOR = 900.0
_RETRY_GAP = 0.5
#: The longest a caller waits, shielded, for clean-up (a release, a discard):
#: past it the clean-up is kept and retried, so a stalled store cannot hold
#: a cancelled or finished caller for the whole store timeout.
_CLEANUP_TIMEOUT = 0.5


class _Waiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = anyio.Event()


class _Unsettled:
    """A release or a discard the store did not take, kept to try again.

    A release has ``grant``; a discard has ``token`` (the token it reserved
    under) and ``grant`` naming the reservation. Both are idempotent in a
    store, so trying one again after an unknown outcome is safe.
    """

    __slots__ = ("expires", "grant", "hold_until", "sent", "token", "wakes")

    def __init__(
        self,
        grant: Grant,
        *,
        sent: bool = True,
        hold_until: float | None = None,
        token: str | None = None,
        wakes: str | None = None,
    ) -> None:
        self.grant = grant
        # The local queue a release frees a token for (the store's key may be a digest).
        self.wakes = wakes
        self.sent = sent
        self.hold_until = hold_until  # on time.monotonic(), like the retry itself
        self.token = token
        self.expires = time.monotonic() + _UNSETTLED_FOR


class Lines:
    """The limiter's machinery: per-document queues of waiters, and the store's answers."""

    __slots__ = (
        "_cleanup_timeout",
        "_clock",
        "_limit",
        "_lineage_ttl",
        "_memory",
        "_next_retry",
        "_period",
        "_queues",
        "_roots",
        "_store",
        "_store_timeout",
        "_unsettled",
    )

    def __init__(  # noqa: PLR0917 - private; built once by RateLimiter
        self,
        store: LimiterStore,
        clock: Clock,
        limit: int,
        period: float,
        lineage_ttl: float,
        store_timeout: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self._limit = limit
        self._period = period
        self._lineage_ttl = lineage_ttl
        self._store_timeout = store_timeout
        self._cleanup_timeout = min(store_timeout, _CLEANUP_TIMEOUT)
        # The memory store answers without suspending and cannot fail or stall:
        # it is called as the plain functions it is, with no time bound (benchmark
        # rows 3a and 3b: a coroutine and a cancel scope per call cost the most there).
        self._memory = store if isinstance(store, MemoryStore) else None
        # Per document, the waiters in arrival order; present only while someone waits.
        self._queues: dict[str, deque[_Waiter]] = {}
        # Refreshed token -> (its document's first token, expiry), for shared queues.
        self._roots: dict[str, tuple[str, float]] = {}
        self._unsettled: deque[_Unsettled] = deque()
        self._next_retry = -math.inf  # on time.monotonic()

    @property
    def waiting_keys(self) -> int:
        return len(self._queues)

    def root(self, token: str) -> str:
        entry = self._roots.get(token)
        if entry is None:
            return token
        if entry[1] <= self._clock.now():
            del self._roots[token]
            return token
        return entry[0]

    def take_now(self, token: str) -> Grant | None:
        """A grant without suspending, or ``None``: the memory store, with nobody waiting.

        The memory store answers without suspending, so no one arriving later
        can overtake. (A plain call, not a coroutine: benchmark rows 3a and 3b.)
        """
        if self._memory is None:
            return None
        key = self.root(token)
        if key in self._queues:
            return None
        answer = self._memory.reserve_now(
            key, reservation="", limit=self._limit, period=self._period
        )
        return answer if isinstance(answer, Grant) else None

    async def take(self, token: str, timeout: float | None) -> Grant:  # noqa: ASYNC109
        # (timeout is on the limiter's clock, which may be fake: fail_after cannot measure it)
        """Wait for a token of ``token``'s document, first come, first served."""
        granted = self.take_now(token)
        if granted is not None:
            return granted
        give_up = math.inf if timeout is None else self._clock.now() + timeout
        if self._unsettled and time.monotonic() >= self._next_retry:
            await self._retry_unsettled(give_up)
        key = self.root(token)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        waiter = _Waiter()
        queue.append(waiter)
        waited = False
        try:
            while True:
                if waited and give_up <= self._clock.now():
                    # Woken at the deadline: a grant now would come too late to use.
                    raise LimiterTimeoutError("no rate-limit token came within the wait allowed")
                if queue[0] is waiter:
                    # Asked by root: a link this limiter made holds even if the store forgot it.
                    answer = await self._reserve(key, give_up)
                    if isinstance(answer, Grant):
                        return answer
                    delay = answer.delay
                else:
                    delay = math.inf  # until the waiters ahead have gone
                left = give_up - self._clock.now()
                if left <= 0 or (delay != math.inf and delay > left):
                    # The head's delay is a lower bound: past the deadline, give up now.
                    raise LimiterTimeoutError(
                        "no rate-limit token can come within the wait allowed"
                    )
                await self._wait(waiter, min(delay, left))
                waited = True
                waiter.event = anyio.Event()
        finally:
            self._leave(key, queue, waiter)

    async def try_take(self, token: str) -> Grant | None:
        """A token of ``token``'s document if one is free now (one store ask), else ``None``."""
        if self._memory is not None:
            return self.take_now(token)
        if self._unsettled and time.monotonic() >= self._next_retry:
            await self._retry_unsettled(math.inf)
        key = self.root(token)
        if key in self._queues:
            return None  # others are waiting for this document: they go first
        # No deadline of the caller's: only the store timeout bounds the ask.
        answer = await self._reserve(key, math.inf)
        return answer if isinstance(answer, Grant) else None

    def _leave(self, key: str, queue: deque[_Waiter], waiter: _Waiter) -> None:
        """Granted, timed out or cancelled, ``waiter`` leaves and the next goes first."""
        was_head = queue[0] is waiter
        queue.remove(waiter)
        if not queue:
            if self._queues.get(key) is queue:
                del self._queues[key]
        elif was_head:
            queue[0].event.set()

    async def _reserve(self, token: str, give_up: float) -> Grant | Denied:
        """Ask the store once, within the store timeout and the caller's deadline."""
        if self._memory is not None:
            # No id needed: its answer is never lost.
            answer = self._memory.reserve_now(
                token, reservation="", limit=self._limit, period=self._period
            )
        else:
            # A remote store needs an id it can be told to discard.
            reservation = secrets.token_hex(8)
            ask = self._store.reserve(
                token, reservation=reservation, limit=self._limit, period=self._period
            )
            bound = min(self._store_timeout, max(give_up - self._clock.now(), 0.0))
            try:
                with anyio.move_on_after(bound) as scope:
                    answer = await ask
            except Exception as exc:
                # Failed mid-round-trip: the reservation may exist. The store has
                # just failed, so the discard waits for a later take.
                self._keep(_Unsettled(Grant(token, reservation), token=token))
                if isinstance(exc, PassbackError):
                    raise
                raise LimiterUnavailableError(
                    f"the rate limiter's store failed ({type(exc).__name__})"
                ) from exc
            except BaseException:
                # Cancelled mid-round-trip: the store may be fine, so discard now.
                await self._discard(token, reservation)
                raise
            if scope.cancelled_caught:
                # Stalled: a discard now would stall too, and the caller's time is up.
                self._keep(_Unsettled(Grant(token, reservation), token=token))
                if bound < self._store_timeout:
                    raise LimiterTimeoutError(
                        "the deadline passed while the rate limiter's store was answering"
                    )
                raise LimiterUnavailableError(
                    f"the rate limiter's store did not answer within {bound:g} s"
                )
        if not isinstance(answer, Grant | Denied):
            # Fail closed: an answer of any other type is never a grant.
            raise LimiterUnavailableError(
                f"the store answered reserve() with a {type(answer).__name__}, "
                "not a Grant or a Denied"
            )
        if isinstance(answer, Denied) and not answer.delay > 0.001:
            if math.isnan(answer.delay):
                raise LimiterUnavailableError("the store answered reserve() with Denied(nan)")
            return Denied(0.001)  # "ask again now" must not spin
        return answer

    async def _discard(self, token: str, reservation: str) -> None:
        """Discard a reservation whose answer was lost: briefly now, or kept for later."""
        if not await self._clean_up(_Unsettled(Grant(token, reservation), token=token)):
            logger.warning("could not discard a lost rate-limit reservation; it will be retried")

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

    def give_back_now(self, grant: Grant, *, token: str, sent: bool, hold: float | None) -> bool:
        """Settle ``grant`` without suspending if the store allows (the memory store)."""
        if self._memory is None:
            return False
        self._memory.release_now(grant, sent=sent, period=self._period, hold=_hold(hold))
        self._wake_after_release(grant, token)
        return True

    async def give_back(self, grant: Grant, *, token: str, sent: bool, hold: float | None) -> None:
        """Settle ``grant``; a store that fails keeps it to retry, and raises nothing."""
        if self.give_back_now(grant, token=token, sent=sent, hold=hold):
            return
        hold = _hold(hold)
        until = None if hold is None else time.monotonic() + hold
        kept = _Unsettled(grant, sent=sent, hold_until=until, wakes=self.root(token))
        if not await self._clean_up(kept):
            logger.warning("the rate limiter's store did not take a release; it will be retried")
        self._wake_after_release(grant, token)

    def _wake_after_release(self, grant: Grant, token: str) -> None:
        if self._queues:
            # The store's key for the document (a Redis digest) need not be the local
            # queue's: wake both.
            self.wake(self.root(token))
            self.wake(grant.key)

    async def _clean_up(self, item: _Unsettled) -> bool:
        """Try ``item`` once, shielded and briefly (it is clean-up); keep it if that fails."""
        with anyio.move_on_after(self._cleanup_timeout, shield=True):
            if await self._attempt(item):
                return True
        self._keep(item)
        return False

    async def _attempt(self, item: _Unsettled) -> bool:
        try:
            if item.token is not None:
                await self._store.discard(item.token, reservation=item.grant.reservation)
            else:
                hold = None
                if item.hold_until is not None:
                    hold = max(item.hold_until - time.monotonic(), 0.0)
                await self._store.release(
                    item.grant, sent=item.sent, period=self._period, hold=hold
                )
        except Exception:  # any store failure: keep it and retry
            return False
        return True

    def _keep(self, item: _Unsettled) -> None:
        if len(self._unsettled) >= _MAX_UNSETTLED:
            self._unsettled.popleft()  # the store's lease reclaims the oldest
        self._unsettled.append(item)
        self._next_retry = min(self._next_retry, time.monotonic() + _RETRY_GAP)

    async def _retry_unsettled(self, give_up: float) -> None:
        """Retry kept releases and discards, oldest first, within the caller's time.

        Not shielded: a cancelled caller leaves the rest (and the one under
        way, which is idempotent) for a later take.
        """
        self._next_retry = time.monotonic() + _RETRY_GAP
        while self._unsettled:
            item = self._unsettled[0]
            if item.expires <= time.monotonic():
                self._unsettled.popleft()
                continue
            bound = min(self._store_timeout, give_up - self._clock.now())
            if bound <= 0:
                return
            with anyio.move_on_after(bound):
                if await self._attempt(item):
                    if self._unsettled and self._unsettled[0] is item:
                        self._unsettled.popleft()
                    if item.token is None:
                        self.wake(item.grant.key)
                    if item.wakes is not None:
                        self.wake(item.wakes)
                    continue
            return  # the store is still down: try again later

    def wake(self, key: str) -> None:
        queue = self._queues.get(key)
        if queue:
            queue[0].event.set()

    async def link(self, alias: str, token: str) -> None:
        root = self.root(token)
        if alias != root:
            self._roots[alias] = (root, self._clock.now() + self._lineage_ttl)
            if len(self._roots) > 1024 and len(self._roots) % 1024 == 0:
                self._forget_expired_links()
        # By root: the link holds even where the store forgot the one before it.
        if self._memory is not None:
            await self._memory.link(alias, root, self._lineage_ttl)
            return
        with anyio.move_on_after(self._store_timeout) as scope:
            await self._store.link(alias, root, self._lineage_ttl)
        if scope.cancelled_caught:
            raise LimiterUnavailableError(
                f"the rate limiter's store did not answer within {self._store_timeout:g} s"
            )

    def _forget_expired_links(self) -> None:
        now = self._clock.now()
        for alias in [a for a, (_, until) in self._roots.items() if until <= now]:
            del self._roots[alias]


def _hold(hold: float | None) -> float | None:
    """A 429 hold as a store takes it: at most :data:`MAX_HOLD`; NaN and negatives, none."""
    if hold is None:
        return None
    return min(hold, MAX_HOLD) if hold >= 0 else 0.0
