"""The bulk scheduler: lazy input, per-document runs, bounded waiters, bounded results.

Items are read from the input and queued *per document*: one task runs a
document's items one after another, and at most ``max_active`` documents
run at once. So a document whose budget is spent holds one waiter, however
many of its items are queued, and does not delay another document's first
request, within two windows: up to ``max_buffered`` items queued in all,
and up to ``max_active`` documents waiting at once (past either, reading
the input pauses until one frees, so memory stays bounded). Each attempt
waits on the rate limiter first and only then takes one of
``concurrency`` slots, and keeps its slot until its result has been
handed to the caller: at most ``concurrency`` results (images) are ever
held, whatever the consumer's speed.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.lowlevel

from .limiter import Permit, RateLimiter

#: Seconds a granted token may wait for a concurrency slot before it is given back.
SLOT_PATIENCE = 30.0


class Gate(Protocol):
    """The way into one attempt of a bulk item: the limiter first, then a slot."""

    def __call__(
        self, token: str, *, timeout: float | None
    ) -> AbstractAsyncContextManager[Permit]: ...


#: Hands one finished item's result to the caller (waits until taken).
Deliver = Callable[[Any], Awaitable[None]]
#: One item's work: (item, its index, the gate, deliver) -> None; raises on failure.
Work = Callable[[Any, int, Gate, Deliver], Awaitable[None]]
#: Turns an item that failed (or could not be read) into its result.
Failed = Callable[[Any, int, Exception], Any]
#: Checks one input item: (its document key, the checked item), or raises.
Prepare = Callable[[Any], tuple[str, Any]]


class Scheduler:
    """Runs one bulk job into ``send``; built and run by :class:`~idme_passback.BulkResults`."""

    def __init__(
        self,
        *,
        work: Work,
        prepare: Prepare,
        failed: Failed,
        limiter: RateLimiter,
        concurrency: int,
        max_active: int,
        max_buffered: int,
    ) -> None:
        self._work = work
        self._prepare = prepare
        self._failed = failed
        self._limiter = limiter
        self._slots = anyio.Semaphore(concurrency)
        self._active = anyio.Semaphore(max_active)
        self._room = anyio.Semaphore(max_buffered)
        self._queues: dict[str, deque[tuple[int, Any]]] = {}
        #: How many items the input held, once it has all been read.
        self.total: int | None = None
        #: What the input raised, if it did: reading stopped there.
        self.input_error: Exception | None = None

    async def run(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        send: anyio.abc.ObjectSendStream[Any],
    ) -> None:
        """Read ``items``, run them, and send each one's result; close ``send`` when done."""
        async with send, anyio.create_task_group() as runs:
            try:
                await self._read_into(items, runs, send)
            except Exception as exc:
                # The caller's input failed: what was read still runs and is delivered;
                # the error is the caller's, raised where the results end.
                self.input_error = exc

    async def _read_into(
        self,
        items: Iterable[Any] | AsyncIterable[Any],
        runs: anyio.abc.TaskGroup,
        send: anyio.abc.ObjectSendStream[Any],
    ) -> None:
        count = 0
        try:
            async with contextlib.aclosing(_read(items)) as stream:
                async for raw in stream:
                    await self._room.acquire()
                    try:
                        key, item = self._prepare(raw)
                    except Exception as exc:
                        # A malformed item fails alone.
                        await send.send(self._failed(raw, count, exc))
                        self._room.release()
                        count += 1
                        continue
                    queue = self._queues.get(key)
                    if queue is not None:
                        queue.append((count, item))
                    else:
                        await self._active.acquire()
                        self._queues[key] = deque([(count, item)])
                        runs.start_soon(self._run_document, key, send)
                    count += 1
        finally:
            self.total = count

    async def _run_document(self, key: str, send: anyio.abc.ObjectSendStream[Any]) -> None:
        queue = self._queues[key]
        try:
            while queue:
                index, item = queue[0]
                await self._one(index, item, send)
                queue.popleft()
                self._room.release()
        finally:
            del self._queues[key]
            self._active.release()

    async def _one(self, index: int, item: Any, send: anyio.abc.ObjectSendStream[Any]) -> None:
        delivered = False

        async def deliver(result: Any) -> None:
            nonlocal delivered
            await send.send(result)
            delivered = True

        try:
            await self._work(item, index, self._gate, deliver)
        except Exception as exc:
            if delivered:
                raise
            await send.send(self._failed(item, index, exc))

    @asynccontextmanager
    async def _gate(self, token: str, *, timeout: float | None) -> AsyncIterator[Permit]:  # noqa: ASYNC109 - on the limiter's clock
        # Never hold a slot while the budget refills. Nor hold a granted token for
        # long while slots are busy (it could outlive a Redis lease): after
        # SLOT_PATIENCE it goes back unsent and queues again.
        while True:
            async with self._limiter.acquire(token, timeout=timeout) as permit:
                try:
                    slot = await _take_slot(self._slots)
                except BaseException:
                    permit.not_sent()  # cancelled while waiting for a slot: nothing left
                    raise
                if slot:
                    try:
                        yield permit
                    finally:
                        self._slots.release()
                    return
                permit.not_sent()


async def _take_slot(slots: anyio.Semaphore) -> bool:
    """Take a slot, waiting at most :data:`SLOT_PATIENCE`; say whether one was taken."""
    with anyio.move_on_after(SLOT_PATIENCE):
        await slots.acquire()
        return True
    return False


async def _read(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    """The input's items, with a checkpoint now and then for a long synchronous input."""
    if isinstance(items, AsyncIterable):
        iterator = aiter(items)
        try:
            async for item in iterator:
                yield item
        finally:
            # We were iterating it: close it as its owner would (an async generator).
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        return
    for count, item in enumerate(items):
        yield item
        if count % 256 == 255:
            await anyio.lowlevel.checkpoint()
