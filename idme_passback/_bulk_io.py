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
_UNREAD = object()


class Input:
    """The job's input, read by every worker in turn, one item at a time.

    It reads one item ahead, so that the end (and with it the job's total) is
    known as soon as the last item has been handed out.
    """

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        self._sync: Iterator[Any] | None = None
        self._async: AsyncIterator[Any] | None = None
        if isinstance(items, AsyncIterable):
            self._async = aiter(items)
            self._lock = anyio.Lock(fast_acquire=True)  # an async iterator has one reader
        else:
            self._sync = iter(items)
        self._run = 0
        # The item read ahead, or END once the input has ended; _UNREAD before the first.
        self._ahead: Any = _UNREAD
        # What the input raised while reading ahead: the caller's, raised in turn.
        self._error: Exception | None = None
        #: Items handed out so far.
        self.count = 0

    @property
    def done(self) -> bool:
        """Whether every item has been handed out (or the input failed)."""
        return self._ahead is END

    async def next(self) -> Any:
        """The next item, or :data:`END`; an exception the input raises is the caller's."""
        self._run += 1
        if self._run >= _READ_RUN:
            # A run of items that need no request (queued behind their document,
            # or malformed) must not keep the event loop to itself.
            self._run = 0
            await anyio.lowlevel.checkpoint()
        if self._sync is not None:
            return self._hand_out()
        async with self._lock:
            if self._ahead is _UNREAD:
                self._ahead = await self._read_async()
            item = self._take()
            if item is not END:
                self._ahead = await self._read_async()
            return item

    def _hand_out(self) -> Any:
        """:meth:`next` for a plain iterator: nothing here suspends, so no lock."""
        if self._ahead is _UNREAD:
            self._ahead = self._read_sync()
        item = self._take()
        if item is not END:
            self._ahead = self._read_sync()
        return item

    def _take(self) -> Any:
        item, error = self._ahead, self._error
        if item is END:
            if error is not None:
                self._error = None
                raise error
            return END
        self.count += 1
        return item

    def _read_sync(self) -> Any:
        assert self._sync is not None
        try:
            return next(self._sync)
        except StopIteration:
            return END
        except Exception as exc:
            self._error = exc
            return END

    async def _read_async(self) -> Any:
        assert self._async is not None
        try:
            return await anext(self._async)
        except StopAsyncIteration:
            return END
        except Exception as exc:
            self._error = exc
            return END

    async def aclose(self) -> None:
        """Close an async input we were iterating, as its owner would (an async generator)."""
        self._ahead = END
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
