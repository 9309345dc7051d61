"""Clocks: where the limiter and the client read the time and wait.

Production code uses :class:`MonotonicClock`. Tests use
:class:`idme_passback.testing.FakeClock`, whose time moves only when told to,
so a 60-second rate-limit period costs a test suite nothing. Both work under
asyncio and trio (anyio primitives only).
"""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "MonotonicClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of monotonic time in seconds, and a way to wait on it."""

    def now(self) -> float:
        """Return the current time in seconds (any origin, never going back)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (``inf`` waits until cancelled)."""
        ...


class MonotonicClock:
    """Real time: :func:`time.monotonic` and :func:`anyio.sleep`."""

    __slots__ = ()

    def now(self) -> float:
        """Return :func:`time.monotonic`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of real time (``inf`` sleeps until cancelled)."""
        if math.isinf(seconds):
            await anyio.sleep_forever()
        await anyio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "MonotonicClock()"
