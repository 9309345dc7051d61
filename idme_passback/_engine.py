"""The bulk scheduler: lazy input, a pool of workers, per-document fairness, bounded results.

``concurrency`` workers read the input themselves, one item at a time, and
run each item whose document has a token free at once (the limiter is asked
without waiting). A document with an item already under way collects its
later items in its own queue; a document whose budget is spent is *parked*:
one task waits on the limiter for it and runs its items one after another,
while the worker goes back to the input. So a spent document holds one
waiter, however many of its items are queued, and never delays another
document's first request, within two windows: up to ``max_buffered`` items
queued in all, and up to ``max_active`` documents parked at once (past
either, reading the input pauses until one frees, so memory stays bounded).

Every attempt runs in one of ``concurrency`` slots. A worker takes one and
then asks the limiter without waiting (a denial gives the slot straight
back); a parked document, and a retry, wait on the limiter holding none and
take one once granted. A slot is kept until the attempt's result has been
handed to the caller: at most ``concurrency`` results (images) are ever
held, whatever the consumer's speed.

A worker pool rather than a task per item: benchmark row 7 (items per second
beside a bare ``asyncio.gather``) needs it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
)
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

import anyio
import anyio.abc
import anyio.lowlevel

from ._bulk_io import END, Input, Results
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


@runtime_checkable
class Lifecycle(Protocol):
    """Work that holds something for the job's lifetime (a folder's descriptor)."""

    async def start(self) -> None: ...

    def close(self) -> None: ...


class _Attempts:
    """One item's way in and out: its first permit (granted by ``try_acquire``), whether
    it holds one of the job's slots (taken before its first attempt, or by the gate for a
    later one), and the hand-over of its result.

    One object per item, whose methods are the item's gate and hand-over (the
    work is handed ``gate`` and ``deliver``): no closures are made per item
    (benchmark row 7).
    """

    __slots__ = ("delivered", "detached", "first", "owner", "slot", "worker_group")

    def __init__(
        self,
        owner: Scheduler,
        first: Permit | None,
        *,
        slot: bool,
        worker_group: anyio.abc.TaskGroup | None = None,
    ) -> None:
        self.owner = owner
        self.first = first
        self.slot = slot
        #: For an item run by a worker: the group to start a new worker in before
        #: this one waits for a retry (see :meth:`detach`).
        self.worker_group = worker_group
        #: Whether :meth:`detach` handed the reading on: this task is no longer a worker.
        self.detached = False
        #: Whether the result was handed over.
        self.delivered = False

    def release(self) -> None:
        """Free the item's slot, unless its result took it (or it holds none)."""
        if self.slot:
            self.slot = False
            self.owner.slots.release()

    def gate(self, token: str, *, timeout: float | None) -> _Gate:
        """The way into one attempt (the :data:`Gate` the work is handed)."""
        return _Gate(self, token, timeout)

    async def deliver(self, result: Any) -> None:
        """Hand over the item's result, with its slot (the work's :data:`Deliver`)."""
        if not self.slot:  # (only ever called inside a gate, which holds one)
            await self.owner.slots.acquire()
        self.slot = False  # the slot goes with the result
        self.owner.results.put(result)
        self.delivered = True

    async def detach(self) -> None:
        """Before a retry's wait: hand the reading on to a new worker (once; workers only)."""
        group, self.worker_group = self.worker_group, None
        if group is not None:
            await self.owner.hand_on(group)
            self.detached = True


class Scheduler:
    """Runs one bulk job into :attr:`results`; built and run by :class:`BulkResults`."""

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
        self.limiter = limiter
        self._workers = concurrency
        self.slots = anyio.Semaphore(concurrency, fast_acquire=True)
        self._parked = anyio.Semaphore(max_active, fast_acquire=True)
        self._room = anyio.Semaphore(max_buffered, fast_acquire=True)
        # Per document with an item under way (in a worker, or parked): its items,
        # the one under way first.
        self._queues: dict[str, deque[tuple[int, Any]]] = {}
        self._input: Input | None = None
        #: Where finished results wait for the caller.
        self.results = Results(self.slots)
        #: What the input raised, if it did: reading stopped there.
        self.input_error: Exception | None = None

    @property
    def total(self) -> int | None:
        """How many items the input held, once it has all been read."""
        source = self._input
        return source.count if source is not None and source.done else None

    async def run(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        """Read ``items``, run them, and hand over each one's result; close the results."""
        source = self._input = Input(items)
        try:
            async with anyio.create_task_group() as group:
                for _ in range(self._workers):
                    group.start_soon(self._worker, group)
        finally:
            self.results.close()
            await source.aclose()

    async def _worker(self, group: anyio.abc.TaskGroup) -> None:
        source = self._input
        assert source is not None
        while True:
            await self._room.acquire()
            try:
                raw = await source.next()
            except Exception as exc:
                # The caller's input failed: what was read still runs and is delivered;
                # the error is the caller's, raised where the results end.
                self.input_error = exc
                raw = END
            if raw is END:
                self._room.release()
                return
            index = source.count - 1
            try:
                key, item = self._prepare(raw)
            except Exception as exc:
                # A malformed item fails alone.
                self._room.release()
                await self._fail(raw, index, exc)
                continue
            queue = self._queues.get(key)
            if queue is not None:
                queue.append((index, item))  # behind its document's item under way
                continue
            queue = self._queues[key] = deque([(index, item)])
            if not await self._drive(key, queue, group):
                return  # this task now waits on a retry: another worker reads on

    async def _drive(
        self, key: str, queue: deque[tuple[int, Any]], group: anyio.abc.TaskGroup
    ) -> bool:
        """Run ``key``'s items in this worker while its budget lasts; then park the rest.

        Returns whether this task is still a worker: an item that must wait on
        the limiter for a retry hands the reading to a new worker first, and
        this task stays with its document, parked.
        """
        while queue:
            index, item = queue[0]
            # Awaited even when a slot is free: this is the item's cancellation point,
            # so a job the caller has left sends nothing more (the request itself may
            # reach the server before its first checkpoint).
            await self.slots.acquire()
            try:
                permit = await self.limiter.try_acquire(key)
            except Exception as exc:
                # The store failed: this item fails alone, its slot going with its result.
                self.results.put(self._failed(item, index, exc))
                self._done(queue)
                continue
            except BaseException:
                self.slots.release()
                raise
            if permit is None:
                # Spent: one task waits for this document; the worker reads on.
                self.slots.release()
                await self._parked.acquire()
                group.start_soon(self._run_parked, key, queue)
                return True
            attempts = _Attempts(self, permit, slot=True, worker_group=group)
            await self._one(index, item, attempts)
            self._done(queue)
            if attempts.detached:
                await self._run_parked(key, queue)
                return False
        del self._queues[key]
        return True

    async def _run_parked(self, key: str, queue: deque[tuple[int, Any]]) -> None:
        try:
            while queue:
                index, item = queue[0]
                await self._one(index, item, _Attempts(self, None, slot=False))
                self._done(queue)
        finally:
            del self._queues[key]
            self._parked.release()

    async def hand_on(self, group: anyio.abc.TaskGroup) -> None:
        """Start a worker in this one's place: its task stays with its document, parked."""
        await self._parked.acquire()
        group.start_soon(self._worker, group)  # `concurrency` workers keep reading

    def _done(self, queue: deque[tuple[int, Any]]) -> None:
        queue.popleft()
        self._room.release()

    async def _fail(self, item: Any, index: int, exc: Exception) -> None:
        await self.slots.acquire()  # a failure waits its turn like an image
        self.results.put(self._failed(item, index, exc))

    async def _one(self, index: int, item: Any, attempts: _Attempts) -> None:
        try:
            await self._work(item, index, attempts.gate, attempts.deliver)
        except Exception as exc:
            if attempts.delivered:
                raise
            if attempts.slot:
                attempts.slot = False
                self.results.put(self._failed(item, index, exc))
            else:
                await self._fail(item, index, exc)
        finally:
            attempts.release()
            unused, attempts.first = attempts.first, None
            if unused is not None:
                # The item failed before its request (a file check): nothing was sent.
                with anyio.CancelScope(shield=True):
                    async with unused:
                        unused.not_sent()


class _Gate:
    """One attempt's way in: the permit granted already (a first attempt, its slot held),
    or the limiter and then a slot.

    A later attempt (or a parked document's) never holds a slot while the
    budget refills, nor a granted token for long while slots are busy (it
    could outlive a Redis lease): after :data:`SLOT_PATIENCE` the token goes
    back unsent and the attempt queues again.
    """

    __slots__ = ("_attempts", "_permit", "_timeout", "_token")

    def __init__(self, attempts: _Attempts, token: str, timeout: float | None) -> None:
        self._attempts = attempts
        self._token = token
        self._timeout = timeout
        self._permit: Permit | None = None

    async def __aenter__(self) -> Permit:
        attempts = self._attempts
        first, attempts.first = attempts.first, None
        if first is not None:
            self._permit = first  # granted, with its slot taken before the grant
            return await first.__aenter__()
        while True:
            permit = attempts.owner.limiter.acquire(self._token, timeout=self._timeout)
            await permit.__aenter__()
            try:
                attempts.slot = await _take_slot(attempts.owner.slots)
            except BaseException:
                permit.not_sent()  # cancelled while waiting for a slot: nothing left
                await permit.__aexit__(None, None, None)
                raise
            if attempts.slot:
                self._permit = permit
                return permit
            permit.not_sent()
            await permit.__aexit__(None, None, None)

    async def __aexit__(self, *exc_info: object) -> None:
        attempts = self._attempts
        attempts.release()
        assert self._permit is not None
        await self._permit.__aexit__(*exc_info)
        if isinstance(exc_info[1], Exception):
            # The attempt failed: a retry may follow, after a backoff and a wait on
            # the limiter. A worker hands the reading on rather than idle through them.
            await attempts.detach()


async def _take_slot(slots: anyio.Semaphore) -> bool:
    """Take a slot, waiting at most :data:`SLOT_PATIENCE`; say whether one was taken."""
    if _took(slots):  # (no cancel scope when one is free: most of the time)
        return True
    with anyio.move_on_after(SLOT_PATIENCE):
        await slots.acquire()
        return True
    return False


def _took(semaphore: anyio.Semaphore) -> bool:
    """Take one of ``semaphore``'s units if one is free now; say whether it was."""
    try:
        semaphore.acquire_nowait()
    except anyio.WouldBlock:
        return False
    return True
