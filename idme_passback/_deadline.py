"""One call's deadline: a clock and an instant, asked by every wait of the call."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import attrs
import httpx

from .clock import Clock, MonotonicClock
from .errors import DeadlineExceededError

#: What an attempt's timeout may be: seconds, an httpx.Timeout, or none.
Timeout = float | httpx.Timeout | None
T = TypeVar("T")


@attrs.frozen
class Deadline:
    """When a call must be over, on the clock its waits are measured on.

    Made once per call (:meth:`after`), then asked by the limiter wait, each
    attempt's timeouts, each body chunk and each backoff.
    """

    clock: Clock = attrs.field(repr=False)
    #: The instant on ``clock``; ``inf`` for no deadline.
    at: float
    #: The seconds the caller allowed (for messages); ``None`` for no deadline.
    seconds: float | None

    @classmethod
    def after(cls, clock: Clock, seconds: float | None) -> Deadline:
        """The deadline ``seconds`` from now (``None``: never)."""
        if seconds is None:
            return cls(clock, math.inf, None)
        return cls(clock, clock.now() + seconds, seconds)

    def remaining(self) -> float:
        """Seconds left (``inf`` for no deadline, never below 0)."""
        if self.at == math.inf:
            return math.inf
        return max(self.at - self.clock.now(), 0.0)

    def wait_allowed(self, margin: float = 0.0) -> float | None:
        """Seconds left as a limiter timeout, less ``margin``: ``None`` for no deadline."""
        return None if self.at == math.inf else max(self.remaining() - margin, 0.0)

    def within(self, seconds: float | None) -> Deadline:
        """This deadline, or ``seconds`` from now if that comes sooner (``None``: this one)."""
        if seconds is None:
            return self
        at = self.clock.now() + seconds
        return self if self.at <= at else Deadline(self.clock, at, seconds)

    async def run(self, wait: Callable[[], Awaitable[T]], doing: str, *, sent: bool) -> T:
        """Await ``wait()``, abandoning it when the deadline passes.

        This is what bounds the waits that no per-read timeout can (a server
        that sends its headers or body a byte at a time): the wait is
        cancelled at the deadline, whatever it was doing.

        Raises:
            DeadlineExceededError: the deadline passed first (naming ``doing``).
        """
        if self.at == math.inf:
            return await wait()
        left = self.remaining()
        if left <= 0:
            raise self._exceeded(doing, sent=sent)
        if isinstance(self.clock, MonotonicClock):
            # The event loop's clock is monotonic too: its own timer does it.
            with anyio.move_on_after(left):
                return await wait()
            raise self._exceeded(doing, sent=sent)
        return await self._run_on_clock(wait, doing, sent=sent)

    async def _run_on_clock(self, wait: Callable[[], Awaitable[T]], doing: str, *, sent: bool) -> T:
        # Another clock (a test's FakeClock): a watchdog sleeps on it, then cancels the wait.
        fired = False
        result: list[T] = []
        failure: list[Exception] = []
        async with anyio.create_task_group() as group:

            async def watchdog() -> None:
                nonlocal fired
                await self.clock.sleep(self.remaining())
                fired = True
                group.cancel_scope.cancel()

            group.start_soon(watchdog)
            try:
                result.append(await wait())
            except Exception as exc:  # kept out of the group, so it is not wrapped in one
                failure.append(exc)
            group.cancel_scope.cancel()
        if result:
            return result[0]
        if failure:
            raise failure[0]
        assert fired
        raise self._exceeded(doing, sent=sent)

    def cap(self, timeout: Timeout) -> Timeout:
        """``timeout``, shortened so that no single wait of it outlasts the deadline."""
        left = self.remaining()
        if left == math.inf or _longest(timeout) <= left:
            return timeout
        return httpx.Timeout(max(left, 0.001))

    def check(self, doing: str, *, sent: bool) -> None:
        """Raise if the deadline has passed.

        Raises:
            DeadlineExceededError: naming what the call was ``doing``.
        """
        if self.at != math.inf and self.clock.now() >= self.at:
            raise self._exceeded(doing, sent=sent)

    def _exceeded(self, doing: str, *, sent: bool) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"the call's deadline of {self.seconds:g} s passed {doing}", sent=sent
        )


def _longest(timeout: Timeout) -> float:
    """The longest single wait a timeout setting allows (``inf`` for none)."""
    if not isinstance(timeout, httpx.Timeout):
        return math.inf if timeout is None else float(timeout)
    phases = (timeout.connect, timeout.read, timeout.write, timeout.pool)
    return max(math.inf if phase is None else phase for phase in phases)
