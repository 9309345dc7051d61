"""Virtual time for tests: :class:`FakeClock`.

Example::

    clock = FakeClock()
    limiter = RateLimiter(limit=2, period=60.0, clock=clock)
    ...
    await clock.advance(60.0)   # wakes every sleeper whose time has come, in order
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["FakeClock", "wait_all_tasks_blocked"]


def _running_asyncio_task() -> asyncio.Task[Any] | None:
    """The current asyncio task, or ``None`` under another event loop (trio)."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no asyncio loop runs in this thread
        return None


async def wait_all_tasks_blocked() -> None:
    """Return once every other task waits on something.

    anyio's own version polls with 0.1 s real sleeps on asyncio; here each
    round is a bare scheduler pass, so fake time costs no real time.
    """
    this = _running_asyncio_task()
    if this is not None:
        loop = asyncio.get_running_loop()
        for _ in range(100_000):
            await asyncio.sleep(0)
            # A callback still queued (a finished task's done-callback, which wakes
            # the task group waiting on it) means someone is about to run.
            if not _queued(loop) and all(
                task is this or _blocked(task) for task in asyncio.all_tasks()
            ):
                return
    await anyio.wait_all_tasks_blocked()


def _queued(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the loop holds callbacks ready to run (``False`` where it cannot tell)."""
    ready = getattr(loop, "_ready", None)
    return bool(ready)


def _blocked(task: asyncio.Task[Any]) -> bool:
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()


class FakeClock:
    """Virtual time for tests: it moves only through :meth:`advance`.

    Sleepers are woken in deadline order; after each wake-up the clock lets
    every task run until all are blocked again, so effects happen at the
    virtual instant they would in real time.
    """

    __slots__ = ("_counter", "_now", "_sleepers")

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        # (deadline, order, the sleeper's event)
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._counter = itertools.count()

    def now(self) -> float:
        """Return the virtual time."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until :meth:`advance` moves the clock ``seconds`` further."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._counter), event))
        try:
            await event.wait()
        finally:
            event.set()  # a cancelled sleeper's deadline is forgotten

    @property
    def next_deadline(self) -> float | None:
        """The earliest time a sleeper waits for, if any still waits."""
        self._drop_woken()
        return self._sleepers[0][0] if self._sleepers else None

    def _drop_woken(self) -> None:
        while self._sleepers and self._sleepers[0][2].is_set():
            heapq.heappop(self._sleepers)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order."""
        if seconds < 0:
            raise ValueError("a clock never goes back")
        target = self._now + seconds
        await wait_all_tasks_blocked()
        while True:
            deadline = self.next_deadline
            if deadline is None or deadline > target:
                break
            self._now = max(self._now, deadline)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                heapq.heappop(self._sleepers)[2].set()
            await wait_all_tasks_blocked()
        self._now = target
        await wait_all_tasks_blocked()

    async def run_until_idle(self, *, limit: float = 1e9) -> None:
        """Advance to each next deadline until no sleeper is left (or ``limit`` is passed)."""
        end = self._now + limit
        while True:
            await wait_all_tasks_blocked()
            deadline = self.next_deadline
            if deadline is None or deadline > end:
                return
            await self.advance(deadline - self._now)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"
