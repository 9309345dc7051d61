"""The fake server's per-document rate limits: three algorithms, one interface.

The real API says "2 requests per minute per document" and nothing about the
algorithm behind it, so the fake can play any of the three a server might
use. Each :class:`Budget` belongs to one document; the server asks it
:meth:`Budget.acquire` for every request it counts and answers 429 when that
returns a positive wait.

Windows are half-open: a request at time ``t`` stops counting against the
sliding window at ``t + period`` exactly, which is also how
:func:`max_in_window` measures what a client did.
"""

from __future__ import annotations

import collections
import math
from typing import Literal, TypeAlias

__all__ = ["Algorithm", "Budget", "make_budget", "max_in_window"]

Algorithm: TypeAlias = Literal["sliding", "fixed", "bucket"]

ALGORITHMS: tuple[Algorithm, ...] = ("sliding", "fixed", "bucket")

# Float time (30 * (2 / 60)) must not refuse a token that is due exactly now.
_EPSILON = 1e-9


class Budget:
    """The rate-limit state of one document."""

    __slots__ = ()

    def acquire(self, now: float) -> float:
        """Count a request at ``now`` and return 0.0, or return the wait (> 0) and count nothing."""
        wait = self.wait(now)
        if wait > 0:
            return wait
        self.force(now)
        return 0.0

    def wait(self, now: float) -> float:  # pragma: no cover - abstract
        """Return the seconds until a request would be allowed (0.0 if it is now)."""
        raise NotImplementedError

    def force(self, now: float) -> None:  # pragma: no cover - abstract
        """Count a request at ``now`` even if the budget is spent (a scripted answer)."""
        raise NotImplementedError


class SlidingWindow(Budget):
    """At most ``limit`` counted requests in any ``period``-second window."""

    __slots__ = ("_limit", "_period", "_times")

    def __init__(self, limit: int, period: float) -> None:
        self._limit = limit
        self._period = period
        self._times: collections.deque[float] = collections.deque()

    def wait(self, now: float) -> float:
        """Return the seconds until fewer than ``limit`` requests remain in the window."""
        times = self._times
        while times and times[0] + self._period <= now + _EPSILON:
            times.popleft()
        if len(times) < self._limit:
            return 0.0
        # Forced requests can push the count past the limit: wait for enough to expire.
        return max(_EPSILON, times[len(times) - self._limit] + self._period - now)

    def force(self, now: float) -> None:
        """Record a request at ``now``."""
        self._times.append(now)


class FixedWindow(Budget):
    """At most ``limit`` requests per window ``[k * period, (k + 1) * period)`` of clock time."""

    __slots__ = ("_count", "_limit", "_period", "_window")

    def __init__(self, limit: int, period: float) -> None:
        self._limit = limit
        self._period = period
        self._window = -1
        self._count = 0

    def _roll(self, now: float) -> int:
        window = math.floor((now + _EPSILON) / self._period)
        if window != self._window:
            self._window = window
            self._count = 0
        return window

    def wait(self, now: float) -> float:
        """Return the seconds until the next window if this one is spent."""
        window = self._roll(now)
        if self._count < self._limit:
            return 0.0
        return max(_EPSILON, (window + 1) * self._period - now)

    def force(self, now: float) -> None:
        """Record a request in the window holding ``now``."""
        self._roll(now)
        self._count += 1


class TokenBucket(Budget):
    """A bucket of ``limit`` tokens refilling ``limit`` tokens per ``period``, continuously.

    This is the lenient algorithm: a full bucket allows ``limit`` at once and
    more as it refills, up to ``2 * limit`` in one period.
    """

    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens")

    def __init__(self, limit: int, period: float) -> None:
        self._capacity = float(limit)
        self._rate = limit / period
        self._tokens = float(limit)
        self._stamp: float | None = None

    def _refill(self, now: float) -> None:
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        if self._stamp is None or now > self._stamp:
            self._stamp = now

    def wait(self, now: float) -> float:
        """Return the seconds until one whole token is back."""
        self._refill(now)
        if self._tokens >= 1.0 - _EPSILON:
            return 0.0
        return max(_EPSILON, (1.0 - self._tokens) / self._rate)

    def force(self, now: float) -> None:
        """Take a token, going into debt if there is none (a scripted answer)."""
        self._refill(now)
        self._tokens -= 1.0


def make_budget(algorithm: Algorithm, limit: int, period: float) -> Budget:
    """Return a fresh budget of the named algorithm."""
    if algorithm == "sliding":
        return SlidingWindow(limit, period)
    if algorithm == "fixed":
        return FixedWindow(limit, period)
    if algorithm == "bucket":
        return TokenBucket(limit, period)
    raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


def max_in_window(times: list[float], period: float) -> int:
    """Return the most of ``times`` that fall in any half-open window ``[t, t + period)``."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, moment in enumerate(ordered):
        while ordered[start] + period <= moment + _EPSILON:
            start += 1
        best = max(best, end - start + 1)
    return best
