"""The two ends of a bulk job: its input, read by every worker in turn, and its results.

Results wait for the caller each holding one of the job's concurrency slots,
so however slow the caller, at most ``concurrency`` results exist at once.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any

import anyio
import anyio.lowlevel

#: Items a worker reads without reaching the event loop before it yields once.
_READ_RUN = 256


#: What :meth:`Input.next` answers once the input has ended.
END = object()


class Input:
    """The job's input, read by every worker in turn, one item at a time."""

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._sync: Iterator[Any] | None = None
        self._async: AsyncIterator[Any] | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
            self._lock = anyio.Lock(fast_acquire=True)  # an async iterator has one reader
        else:
            self._sync = iter(items)
        self._run = 0
        self.done = False
        #: Items read so far.
        self.count = 0

    async def next(self) -> Any:
        """The next item, or ``_END``; an exception the input raises is the caller's."""
        if self.done:
            return END
        self._run += 1
        if self._run >= _READ_RUN:
            # A run of items that need no request (queued behind their document,
            # or malformed) must not keep the event loop to itself.
            self._run = 0
            await anyio.lowlevel.checkpoint()
        try:
            if self._sync is not None:
                item = next(self._sync)
            else:
                assert self._async is not None
                async with self._lock:
                    if self.done:
                        return END
                    item = await anext(self._async)
        except (StopIteration, StopAsyncIteration):
            self.done = True
            return END
        except BaseException:
            self.done = True
            raise
        self.count += 1
        return item

    async def aclose(self) -> None:
        """Close an async input we were iterating, as its owner would (an async generator)."""
        self.done = True
        aclose = getattr(self._async, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


class Results:
    """Finished results waiting for the caller; each holds a concurrency slot until taken.

    So whatever the caller's speed, at most ``concurrency`` results (images)
    exist at once, in flight or waiting. Handing one over never waits: its
    slot was taken before its request (or, for a failure, before the hand-over).
    """

    def __init__(self, slots: anyio.Semaphore) -> None:
        self._slots = slots
        self._waiting: deque[Any] = deque()
        self._arrived: anyio.Event | None = None
        self._closed = False

    def put(self, result: Any) -> None:
        """Hand over ``result``, with the slot its producer holds."""
        self._waiting.append(result)
        if self._arrived is not None:
            self._arrived.set()

    def close(self) -> None:
        """No more results will come."""
        self._closed = True
        if self._arrived is not None:
            self._arrived.set()

    def get_nowait(self) -> Any:
        """The next result if one is waiting (freeing its slot); ``anyio.WouldBlock`` if not."""
        if not self._waiting:
            raise anyio.WouldBlock
        result = self._waiting.popleft()
        self._slots.release()
        return result

    async def get(self) -> Any:
        """The next result (freeing its slot); ``anyio.EndOfStream`` once all are taken."""
        while not self._waiting:
            if self._closed:
                raise anyio.EndOfStream
            self._arrived = anyio.Event()
            await self._arrived.wait()
            self._arrived = None
        result = self._waiting.popleft()
        self._slots.release()
        return result
