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

import heapq
import itertools
import math
from typing import Protocol, runtime_checkable

import attrs

from .clock import Clock, MonotonicClock

__all__ = ["Grant", "LimiterStore", "MemoryStore"]


@attrs.frozen(repr=False)
class Grant:
    """One token of one key's bucket, handed out by a store."""

    key: str
    reservation: str

    def __repr__(self) -> str:
        return f"Grant(reservation={self.reservation!r})"


@runtime_checkable
class LimiterStore(Protocol):
    """The atomic bucket operations a :class:`RateLimiter` needs."""

    async def reserve(self, token: str, limit: int, period: float) -> Grant | float:
        """Take a token of ``token``'s document, or return the least delay worth waiting."""
        ...

    async def release(
        self, grant: Grant, *, sent: bool, period: float, hold: float | None = None
    ) -> None:
        """Settle a grant: ``sent`` cools the token for ``period`` from now, else frees it.

        With ``hold``, grant nothing on the grant's document for that many
        seconds from now (a 429's Retry-After).
        """
        ...

    async def hold(self, token: str, seconds: float) -> None:
        """Grant nothing on ``token``'s document for ``seconds`` from now (a 429's Retry-After)."""
        ...

    async def link(self, alias: str, token: str, ttl: float) -> None:
        """Make ``alias`` name the same document (budget) as ``token`` for ``ttl`` seconds."""
        ...


class _Bucket:
    __slots__ = ("cooling", "hold_until", "inflight")

    def __init__(self) -> None:
        self.inflight: set[int] = set()
        # reservation id -> time it becomes free again
        self.cooling: dict[int, float] = {}
        self.hold_until = -math.inf

    def prune(self, now: float) -> None:
        if self.cooling:
            for rid in [rid for rid, free_at in self.cooling.items() if free_at <= now]:
                del self.cooling[rid]

    def idle(self, now: float) -> bool:
        return not self.inflight and not self.cooling and self.hold_until <= now


class MemoryStore:
    """The store for one process: plain dictionaries, swept as time passes.

    A key whose tokens have all come back (and whose 429 hold has passed)
    leaves no state: every completion schedules a check at the moment its
    token comes back, and each call sweeps the checks that are due. A key
    with a token in flight is never dropped, so memory pressure can never
    make the limiter fail open.
    """

    __slots__ = ("_aliases", "_buckets", "_clock", "_due", "_ids")

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._buckets: dict[str, _Bucket] = {}
        self._aliases: dict[str, tuple[str, float]] = {}
        # (time, key, is_alias): when a bucket or alias may have become removable.
        self._due: list[tuple[float, str, bool]] = []
        self._ids = itertools.count()

    @property
    def clock(self) -> Clock:
        """The clock this store reads the time from."""
        return self._clock

    def __len__(self) -> int:
        """Return how many keys and aliases hold state now."""
        return len(self._buckets) + len(self._aliases)

    def _sweep(self, now: float) -> None:
        due = self._due
        while due and due[0][0] <= now:
            _, key, is_alias = heapq.heappop(due)
            if is_alias:
                entry = self._aliases.get(key)
                if entry is not None and entry[1] <= now:
                    del self._aliases[key]
                continue
            bucket = self._buckets.get(key)
            if bucket is not None:
                bucket.prune(now)
                if bucket.idle(now):
                    del self._buckets[key]

    def _root(self, token: str) -> str:
        entry = self._aliases.get(token)
        return token if entry is None else entry[0]

    def reserve_nowait(self, token: str, limit: int, period: float) -> Grant | float:
        """Synchronous :meth:`reserve`: the limiter's fast path for this store."""
        now = self._clock.now()
        if self._due:
            self._sweep(now)
        key = self._root(token)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
        else:
            bucket.prune(now)
            if bucket.hold_until > now:
                return bucket.hold_until - now
            if len(bucket.inflight) + len(bucket.cooling) >= limit:
                # An in-flight token comes back no sooner than ``period`` from now.
                soonest = now + period if bucket.inflight else math.inf
                if bucket.cooling:
                    soonest = min(soonest, *bucket.cooling.values())
                return max(soonest - now, 0.0)
        rid = next(self._ids)
        bucket.inflight.add(rid)
        return Grant(key, str(rid))

    async def reserve(self, token: str, limit: int, period: float) -> Grant | float:
        """Take a token of ``token``'s document, or return the least delay worth waiting."""
        return self.reserve_nowait(token, limit, period)

    def release_nowait(
        self, grant: Grant, *, sent: bool, period: float, hold: float | None = None
    ) -> None:
        """Synchronous :meth:`release`."""
        if hold is not None:
            self._hold(grant.key, hold)
        bucket = self._buckets.get(grant.key)
        rid = int(grant.reservation)
        if bucket is None or rid not in bucket.inflight:
            return
        bucket.inflight.discard(rid)
        now = self._clock.now()
        if sent:
            bucket.cooling[rid] = now + period
            heapq.heappush(self._due, (now + period, grant.key, False))
        elif bucket.idle(now):
            del self._buckets[grant.key]

    async def release(
        self, grant: Grant, *, sent: bool, period: float, hold: float | None = None
    ) -> None:
        """Settle a grant: ``sent`` cools the token for ``period`` from now, else frees it."""
        self.release_nowait(grant, sent=sent, period=period, hold=hold)

    async def hold(self, token: str, seconds: float) -> None:
        """Grant nothing on ``token``'s document for ``seconds`` from now."""
        self._hold(self._root(token), seconds)

    def _hold(self, key: str, seconds: float) -> None:
        now = self._clock.now()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
        until = now + seconds
        if until > bucket.hold_until:
            bucket.hold_until = until
            heapq.heappush(self._due, (until, key, False))

    async def link(self, alias: str, token: str, ttl: float) -> None:
        """Make ``alias`` share ``token``'s budget for ``ttl`` seconds."""
        if alias == token:
            return
        now = self._clock.now()
        key = self._root(token)
        if key == alias:
            return
        self._aliases[alias] = (key, now + ttl)
        heapq.heappush(self._due, (now + ttl, alias, True))

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._buckets)}, aliases={len(self._aliases)})"
