"""Where the limiter keeps its buckets: the store protocol and the in-memory store.

A store holds, per document, the tokens that are out: *in flight* (granted,
no response yet) or *cooling* (response arrived at ``t``; free again at
``t + period``). It answers one question atomically: may this key have a
token now, and if not, how long at least until it might? Waiting, FIFO order
and cancellation live in :class:`~idme_passback.limiter.RateLimiter`, so a
store is only this small state machine. :class:`RedisStore` implements the
same machine in Lua for many processes.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

import attrs

from ._tokens import shorten
from .clock import Clock, MonotonicClock

__all__ = ["Denied", "Grant", "LimiterStore", "MemoryStore"]


@attrs.frozen
class Grant:
    """One token of one document's bucket, handed out by :meth:`LimiterStore.reserve`."""

    #: The bucket (document) the token belongs to; a refreshed token names its root.
    #: Shown shortened: in the memory store it is the document token itself.
    key: str = attrs.field(repr=lambda key: repr(shorten(key)))
    #: The id the limiter chose for this reservation (so a lost answer can be named).
    reservation: str = attrs.field(repr=False)
    #: Where the store filed the bucket, for the store's own use: the memory store's
    #: int (its release reuses that very object, one int a cooling key, not two equal
    #: ones); ``None`` from a store that needs none. Not part of equality.
    slot: int | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen
class Denied:
    """No token now: the least number of seconds worth waiting before asking again."""

    delay: float


@runtime_checkable
class LimiterStore(Protocol):
    """The atomic bucket operations a :class:`~idme_passback.RateLimiter` needs.

    A store answers ``reserve`` with a :class:`Grant` or a :class:`Denied`;
    anything else is refused by the limiter (it fails closed). Errors a store
    meets should be raised as :class:`~idme_passback.LimiterUnavailableError`;
    the limiter wraps any other exception in one.
    """

    async def reserve(
        self, token: str, *, reservation: str, limit: int, period: float
    ) -> Grant | Denied:
        """Take a token of ``token``'s document as ``reservation``, or say how long to wait."""
        ...

    async def release(
        self, grant: Grant, *, sent: bool, period: float, hold: float | None = None
    ) -> None:
        """Settle a grant: ``sent`` cools the token for ``period`` from now, else frees it.

        With ``hold``, grant nothing on the grant's document for that many
        seconds from now (a 429's Retry-After).
        """
        ...

    async def discard(self, token: str, *, reservation: str) -> None:
        """Free the reservation ``reservation`` of ``token``'s document, if it was ever made.

        Called when a :meth:`reserve` call's answer was lost (cancelled or
        failed mid-round-trip), so the token is not stranded.
        """
        ...

    async def link(self, alias: str, token: str, ttl: float) -> None:
        """Make ``alias`` name the same document (budget) as ``token`` for ``ttl`` seconds."""
        ...


class _Bucket:
    """A key with something going on: tokens in flight, several cooling, or a hold."""

    __slots__ = ("cooling", "hold_until", "inflight")

    def __init__(self) -> None:
        self.inflight = 0
        # When each cooling token becomes free again, ascending: pruned from the left.
        self.cooling: deque[float] = deque()
        self.hold_until = -math.inf

    def prune(self, now: float) -> None:
        cooling = self.cooling
        while cooling and cooling[0] <= now:
            cooling.popleft()


#: The bits of a token's hash a bucket is filed under (two 30-bit digits: a 32-byte int).
_SLOT_BITS = (1 << 60) - 1


def _slot(key: str) -> int:
    """The number the store files ``key``'s bucket under: its hash, not the token itself.

    A document token is a secret, and a one-shot key cools for a period after its
    request: filed by a 60-bit hash (32 bits on a 32-bit build), the store keeps
    no copy of it alive (and a cooling key costs a 32-byte int, not a ~96-byte
    string). Two tokens whose hashes collide (odds ~4e-8 with 300,000 keys in a
    period, on 64 bits) share one budget: stricter, never looser. Links (made by
    a refresh) are kept by their token, so a collision cannot send one
    document's requests to another document's bucket.
    """
    return hash(key) & _SLOT_BITS


# A key's state is a _Bucket, or one of two compact forms for the commonest
# cases, which cost no allocation on the hot path: ``True`` while its one token
# is in flight (and nothing else), then the float time that token comes back
# (a few dozen bytes per key while a bulk job's documents wait out their period).
_IN_FLIGHT = True
_State = _Bucket | float | bool


class MemoryStore:
    """The store for one process: plain dictionaries, swept as time passes.

    A key whose tokens have all come back (and whose 429 hold has passed)
    leaves no state: every completion schedules a check at the moment its
    token comes back, and each call sweeps the checks that are due. A key
    with a token in flight is never dropped, so memory pressure can never
    make the limiter fail open.
    """

    __slots__ = (
        "_aliases",
        "_buckets",
        "_clock",
        "_due_at",
        "_due_key",
        "_later",
        "_link_expiry",
        "_now",
        "_peak",
    )

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        # The real clock's reading, without a method call in between.
        self._now: Callable[[], float] = (
            time.monotonic if isinstance(self._clock, MonotonicClock) else self._clock.now
        )
        # Filed by _slot(token), not by the token: a cooling key keeps no secret alive.
        self._buckets: dict[int, _State] = {}
        # A refresh's links, by token (few; each kept for the link's ttl): alias -> root.
        self._aliases: dict[str, tuple[str, float]] = {}
        self._link_expiry: list[tuple[float, str]] = []
        # Completions arrive in time order (one clock, one period), so their
        # checks queue up already sorted: two flat deques, no tuples.
        self._due_at: deque[float] = deque()
        self._due_key: deque[int] = deque()
        # Holds and anything out of order: (time, slot).
        self._later: list[tuple[float, int]] = []
        self._peak = 0

    @property
    def clock(self) -> Clock:
        """The clock this store reads the time from."""
        return self._clock

    def __len__(self) -> int:
        """Return how many keys and aliases hold state now."""
        return len(self._buckets) + len(self._aliases)

    def _schedule(self, at: float, slot: int) -> None:
        if not self._due_at or self._due_at[-1] <= at:
            self._due_at.append(at)
            self._due_key.append(slot)
        else:
            heapq.heappush(self._later, (at, slot))

    def _sweep(self, now: float) -> None:
        self._peak = max(self._peak, len(self._buckets))
        due_at, due_key = self._due_at, self._due_key
        while due_at and due_at[0] <= now:
            due_at.popleft()
            self._settle_key(due_key.popleft(), now)
        later = self._later
        while later and later[0][0] <= now:
            self._settle_key(heapq.heappop(later)[1], now)
        links = self._link_expiry
        while links and links[0][0] <= now:
            alias = heapq.heappop(links)[1]
            entry = self._aliases.get(alias)
            if entry is not None and entry[1] <= now:
                del self._aliases[alias]
        # dicts never give back their table: rebuild once most keys are gone.
        size = len(self._buckets)
        if self._peak > 1024 and size < self._peak // 4:
            self._buckets = dict(self._buckets)
            self._peak = size

    def _settle_key(self, slot: int, now: float) -> None:
        """A check on ``slot`` fell due: drop, compact or re-check its state."""
        state = self._buckets.get(slot)
        if state is None or state is _IN_FLIGHT:
            return
        if isinstance(state, float):
            if state <= now:
                del self._buckets[slot]
            return
        assert isinstance(state, _Bucket)
        state.prune(now)
        if state.cooling:
            # Each key keeps one pending check, when its last token out comes back:
            # a busy key costs one check a period, not one per request.
            self._schedule(state.cooling[-1], slot)
        self._compact(slot, state, now)

    def _compact(self, slot: int, bucket: _Bucket, now: float) -> None:
        if bucket.inflight or bucket.hold_until > now:
            return
        if not bucket.cooling:
            del self._buckets[slot]
        elif len(bucket.cooling) == 1:
            self._buckets[slot] = bucket.cooling[0]

    def _expand(self, slot: int, state: _State | None, now: float) -> _Bucket:
        """Return ``slot``'s state as a full :class:`_Bucket`, storing it if it was compact."""
        if isinstance(state, _Bucket):
            return state
        bucket = self._buckets[slot] = _Bucket()
        if state is _IN_FLIGHT:
            bucket.inflight = 1
        elif isinstance(state, float) and state > now:
            bucket.cooling.append(state)
        return bucket

    def _root(self, token: str) -> str:
        """Return the key of ``token``'s document (itself, unless linked by a refresh)."""
        if not self._aliases:
            return token
        entry = self._aliases.get(token)
        return token if entry is None else entry[0]

    def _reserve(self, token: str, reservation: str, limit: int, period: float) -> Grant | float:
        """Take a token: the grant, or the least delay worth waiting."""
        now = self._now()
        if (
            (self._due_at and self._due_at[0] <= now)
            or (self._later and self._later[0][0] <= now)
            or (self._link_expiry and self._link_expiry[0][0] <= now)
        ):
            self._sweep(now)
        key = self._root(token)
        slot = _slot(key)
        state = self._buckets.get(slot)
        if state is None:
            self._buckets[slot] = _IN_FLIGHT
            return Grant(key, reservation, slot)
        if state is _IN_FLIGHT:
            if limit == 1:
                return period  # an in-flight token comes back no sooner
            bucket = self._expand(slot, state, now)
        elif isinstance(state, float):
            if limit == 1 and state > now:
                return state - now
            bucket = self._expand(slot, state, now)
        else:
            bucket = cast("_Bucket", state)
            if bucket.hold_until > now:
                return bucket.hold_until - now
            if bucket.inflight + len(bucket.cooling) >= limit:
                bucket.prune(now)
            if bucket.inflight + len(bucket.cooling) >= limit:
                # An in-flight token comes back no sooner than a period from now.
                soonest = now + period if bucket.inflight else math.inf
                if bucket.cooling:
                    soonest = min(soonest, bucket.cooling[0])
                return max(soonest - now, 0.0)
        bucket.inflight += 1
        return Grant(key, reservation, slot)

    async def reserve(
        self, token: str, *, reservation: str, limit: int, period: float
    ) -> Grant | Denied:
        """Take a token of ``token``'s document, or say how long at least to wait.

        Answers without suspending, so a reservation can never be half made.
        """
        return self.reserve_now(token, reservation=reservation, limit=limit, period=period)

    def reserve_now(
        self, token: str, *, reservation: str, limit: int, period: float
    ) -> Grant | Denied:
        """:meth:`reserve`, as the plain call it is (the limiter's path for this store)."""
        result = self._reserve(token, reservation, limit, period)
        return result if isinstance(result, Grant) else Denied(result)

    def _release(self, slot: int, *, sent: bool, period: float, hold: float | None) -> None:
        bucket = self._buckets.get(slot)
        if bucket is _IN_FLIGHT:
            if hold is None:
                if sent:
                    free_at = self._now() + period
                    self._buckets[slot] = free_at
                    self._schedule(free_at, slot)
                else:
                    del self._buckets[slot]
                return
            bucket = self._expand(slot, bucket, self._now())
        if not isinstance(bucket, _Bucket) or bucket.inflight <= 0:
            return
        bucket.inflight -= 1
        now = self._now()
        if hold is not None:
            self._hold(slot, hold)
        if sent:
            free_at = now + period
            cooling = bucket.cooling
            if not cooling:
                # The key's first cooling token: it needs a check when that comes back
                # (which, finding later tokens, schedules the next).
                cooling.append(free_at)
                self._schedule(free_at, slot)
            elif cooling[-1] <= free_at:
                cooling.append(free_at)
            else:
                bisect.insort(cooling, free_at)
        if not bucket.inflight:
            self._compact(slot, bucket, now)

    async def release(
        self, grant: Grant, *, sent: bool, period: float, hold: float | None = None
    ) -> None:
        """Settle a grant: ``sent`` cools the token for ``period`` from now, else frees it."""
        self.release_now(grant, sent=sent, period=period, hold=hold)

    def release_now(
        self, grant: Grant, *, sent: bool, period: float, hold: float | None = None
    ) -> None:
        """:meth:`release`, as the plain call it is (the limiter's path for this store)."""
        # Its own grants carry their int; a Grant made elsewhere is filed anew.
        slot = _slot(grant.key) if grant.slot is None else grant.slot
        self._release(slot, sent=sent, period=period, hold=hold)

    async def discard(self, token: str, *, reservation: str) -> None:
        """Nothing to do: :meth:`reserve` never suspends, so its answer is never lost."""

    def _hold(self, slot: int, seconds: float) -> None:
        now = self._now()
        bucket = self._expand(slot, self._buckets.get(slot), now)
        until = now + seconds
        if until > bucket.hold_until:
            bucket.hold_until = until
            heapq.heappush(self._later, (until, slot))

    async def link(self, alias: str, token: str, ttl: float) -> None:
        """Make ``alias`` share ``token``'s budget for ``ttl`` seconds."""
        if alias == token:
            return
        now = self._now()
        key = self._root(token)
        if key == alias:
            return
        self._aliases[alias] = (key, now + ttl)
        heapq.heappush(self._link_expiry, (now + ttl, alias))

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._buckets)}, aliases={len(self._aliases)})"
