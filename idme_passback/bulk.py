"""Many documents at once: lazy input, bounded memory, an outcome for every item.

The engine behind :meth:`PassbackClient.fetch_many` and
:meth:`PassbackClient.download_many`. Items are pulled from the input only
as room frees up, so memory stays flat however long the input is. Each
attempt first waits on the rate limiter and only then takes one of the
``concurrency`` slots: a document whose budget is spent waits without
idling a slot another document could use.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeAlias, TypeVar, cast

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from ._body import ImageBody, read_image
from ._files import check_target, write_atomically
from ._imagetype import IMAGE_EXTENSIONS
from ._tokens import check_token, shorten
from .limiter import Permit, RateLimiter
from .models import DocumentImage
from .sizing import Size, SizeLike, parse_size

T = TypeVar("T")

__all__ = [
    "BulkResults",
    "DocumentRequest",
    "FetchResult",
    "Progress",
]


def _optional_size(value: SizeLike | None) -> Size | None:
    return parse_size(value)


@attrs.frozen(repr=False)
class DocumentRequest:
    """One item of a bulk job: a document token, and optionally a size and a file name.

    ``filename`` (for :meth:`PassbackClient.download_many`) must be a bare
    file name: no folder separators, no leading dot.
    """

    token: str
    size: Size | None = attrs.field(default=None, converter=_optional_size)
    filename: str | None = None

    def __repr__(self) -> str:
        return (
            f"DocumentRequest(token={shorten(self.token)!r}, size={self.size!s}, "
            f"filename={self.filename!r})"
        )


ItemLike: TypeAlias = "str | tuple[str, SizeLike | None] | DocumentRequest"
AsyncIterableLike: TypeAlias = "AsyncIterable[ItemLike]"


@attrs.frozen
class Progress:
    """How far a bulk job has got: finished items, failures, total if known, bytes."""

    done: int
    failed: int
    total: int | None
    bytes: int

    @property
    def succeeded(self) -> int:
        """Items that finished without error."""
        return self.done - self.failed


ProgressHook: TypeAlias = Callable[[Progress], object]


@attrs.frozen(repr=False)
class FetchResult:
    """The outcome of one item: its position and token, and an image, a path or an error."""

    index: int
    token: str
    image: DocumentImage | None = None
    path: Path | None = None
    error: Exception | None = None
    bytes: int = 0

    @property
    def ok(self) -> bool:
        """Whether the item succeeded."""
        return self.error is None

    def __repr__(self) -> str:
        what = f"error={type(self.error).__name__}" if self.error else f"bytes={self.bytes}"
        return f"FetchResult(index={self.index}, token={shorten(self.token)!r}, {what})"


@attrs.frozen
class Outcome:
    """What a worker hands back on success."""

    image: DocumentImage | None = None
    path: Path | None = None
    bytes: int = 0


class Gate(Protocol):
    """The way into one attempt of a bulk item: the limiter first, then a slot."""

    def __call__(
        self, token: str, *, timeout: float | None
    ) -> AbstractAsyncContextManager[Permit]: ...


#: Reads one 200 body: into memory, or onto disk.
Consume: TypeAlias = Callable[[ImageBody], Awaitable[T]]


class FetchDocument(Protocol):
    """The client's document call, as the bulk engine drives it (through a gate)."""

    async def __call__(
        self, token: str, box: Size | None, consume: Consume[T], gate: Gate
    ) -> T: ...


Work: TypeAlias = Callable[[DocumentRequest, int, Gate], Awaitable[Outcome]]


def fetching(document: FetchDocument) -> Work:
    """The per-item work of :meth:`PassbackClient.fetch_many`: each image into memory."""

    async def fetch(request: DocumentRequest, index: int, gate: Gate) -> Outcome:
        async def consume(body: ImageBody) -> DocumentImage:
            return await read_image(body, request.token, request.size)

        image = await document(request.token, request.size, consume, gate)
        return Outcome(image=image, bytes=len(image.content))

    return fetch


def downloading(
    document: FetchDocument, directory: str | os.PathLike[str], *, overwrite: bool
) -> Work:
    """The per-item work of :meth:`PassbackClient.download_many`: each image into a file.

    Raises:
        FileNotFoundError: ``directory`` does not exist (before anything is sent).
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"the folder {str(folder)!r} does not exist")

    async def download(request: DocumentRequest, index: int, gate: Gate) -> Outcome:
        name = request.filename
        target: Path | None = None
        stem = f"{index:06d}-{shorten(request.token).rstrip(chr(0x2026))}"
        if name is not None:
            target = check_target(folder / safe_filename(name), overwrite=overwrite)
        elif not overwrite:
            # The extension comes with the body, but a file of this item under any
            # image extension already means a refusal: find out before spending a request.
            for extension in IMAGE_EXTENSIONS:
                check_target(folder / (stem + extension), overwrite=False)

        async def consume(body: ImageBody) -> Path:
            final = target
            if final is None:
                # Named after the image's own type, known once its first bytes are in.
                await body.start()
                final = check_target(folder / (stem + body.extension), overwrite=overwrite)
            await write_atomically(final, body.chunks(), overwrite=overwrite)
            return final

        written = await document(request.token, request.size, consume, gate)
        return Outcome(path=written, bytes=written.stat().st_size)

    return download


#: Seconds a granted token may wait for a concurrency slot before it is given back.
SLOT_PATIENCE = 30.0


async def _take_slot(slots: anyio.Semaphore) -> bool:
    """Take a slot, waiting at most :data:`SLOT_PATIENCE`; say whether one was taken."""
    try:
        slots.acquire_nowait()
    except anyio.WouldBlock:
        pass
    else:
        return True
    with anyio.move_on_after(SLOT_PATIENCE):
        await slots.acquire()
        return True
    return False


def _gate(limiter: RateLimiter, slots: anyio.Semaphore) -> Gate:
    """The way into one attempt of a bulk item: the limiter first, then a slot."""

    @asynccontextmanager
    async def gate(token: str, *, timeout: float | None) -> AsyncIterator[Permit]:  # noqa: ASYNC109 - on the limiter's clock
        # Never hold a slot while the budget refills. Nor hold a granted token for
        # long while slots are busy (it could outlive a Redis lease): after
        # SLOT_PATIENCE it goes back unsent and queues again.
        while True:
            async with limiter.acquire(token, timeout=timeout) as permit:
                if await _take_slot(slots):
                    try:
                        yield permit
                    finally:
                        slots.release()
                    return
                permit.not_sent()

    return cast("Gate", gate)


def safe_filename(name: str) -> str:
    """Return ``name`` if it is a bare file name that cannot leave its folder.

    Raises:
        ValueError: for separators, a leading dot, NUL, or an empty name.
    """
    if (
        not name
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.sep in name
        or (os.altsep is not None and os.altsep in name)
        or len(name) > 255
    ):
        raise ValueError(
            "a bulk file name must be a bare name (no folders, no leading dot, "
            f"at most 255 characters), got {name[:40]!r}"
        )
    return name


def to_request(item: object, size: Size | None) -> DocumentRequest:
    """Turn one input item into a checked :class:`DocumentRequest`.

    Raises:
        InvalidTokenError, InvalidSizeError, TypeError: for a bad item.
    """
    if isinstance(item, DocumentRequest):
        request = item if item.size is not None else attrs.evolve(item, size=size)
    elif isinstance(item, str):
        request = DocumentRequest(item, size)
    elif isinstance(item, tuple) and len(item) == 2:
        token, item_size = item
        request = DocumentRequest(token, item_size if item_size is not None else size)
    else:
        raise TypeError(
            "a bulk item must be a token, a (token, size) pair or a DocumentRequest, "
            f"got {type(item).__name__}"
        )
    check_token(request.token)
    if request.filename is not None:
        safe_filename(request.filename)
    return request


def _token_of(item: object) -> str:
    """The token of an item that failed, as far as it has one (for its result)."""
    if isinstance(item, tuple) and item:
        item = item[0]
    token = item if isinstance(item, str) else getattr(item, "token", "")
    return str(token)


async def _items(
    items: Iterable[object] | AsyncIterable[object],
) -> AsyncGenerator[object, None]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
        return
    for count, item in enumerate(items):
        yield item
        if count % 256 == 255:
            # A long synchronous input must not starve the workers.
            await anyio.lowlevel.checkpoint()


class BulkResults:
    """The results of a bulk job, as an async iterator in completion order.

    ``async for result in client.fetch_many(...)`` runs the job. To stop
    early (``break``), iterate inside ``async with``, which stops the
    remaining work at once and leaves no temporary file::

        async with client.fetch_many(tokens) as results:
            async for result in results:
                ...
    """

    __slots__ = ("_generator",)

    def __init__(self, generator: AsyncGenerator[FetchResult, None]) -> None:
        self._generator = generator

    def __aiter__(self) -> AsyncGenerator[FetchResult, None]:
        """Return the iterator of results."""
        return self._generator

    async def __aenter__(self) -> AsyncGenerator[FetchResult, None]:
        """Start the job; leaving the block stops whatever is still running."""
        return self._generator

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the job."""
        await self._generator.aclose()


def run(
    work: Work,
    items: Iterable[object] | AsyncIterable[object],
    *,
    size: SizeLike | None,
    concurrency: int,
    limiter: RateLimiter,
    on_progress: ProgressHook | None,
    max_pending: int | None = None,
) -> BulkResults:
    """Check the job's arguments, then return its results (see :class:`BulkResults`).

    Raises:
        ValueError: for a ``concurrency`` below 1.
        InvalidSizeError: for a bad default ``size`` (before anything is sent).
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
    default_size = parse_size(size)
    # Items waiting on the limiter cost a task each; allow many so spent
    # documents never block fresh ones, yet keep memory bounded.
    pending = max_pending if max_pending is not None else max(1024, 16 * concurrency)
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    return BulkResults(
        _run(work, items, default_size, concurrency, pending, limiter, on_progress, total)
    )


async def _run(  # noqa: PLR0917 - private; called once, positionally, by run()
    work: Work,
    items: Iterable[object] | AsyncIterable[object],
    size: Size | None,
    concurrency: int,
    max_pending: int,
    limiter: RateLimiter,
    on_progress: ProgressHook | None,
    total: int | None,
) -> AsyncGenerator[FetchResult, None]:
    slots = anyio.Semaphore(concurrency, fast_acquire=True)
    # Acquiring room yields, so each worker reaches the limiter in input order.
    room = anyio.Semaphore(max_pending)
    send, receive = anyio.create_memory_object_stream[FetchResult](concurrency)
    counted = {"total": total}

    gate = _gate(limiter, slots)

    async def worker(index: int, item: object) -> None:
        try:
            request = to_request(item, size)
            outcome = await work(request, index, gate)
            result = FetchResult(
                index, request.token, outcome.image, outcome.path, None, outcome.bytes
            )
        except Exception as exc:
            result = FetchResult(index, _token_of(item), error=exc)
        try:
            await send.send(result)
        finally:
            room.release()

    async def producer() -> None:
        async with send, anyio.create_task_group() as workers:
            count = 0
            async with contextlib.aclosing(_items(items)) as stream:
                async for item in stream:
                    await room.acquire()
                    workers.start_soon(worker, count, item)
                    count += 1
            counted["total"] = count

    done = failed = transferred = 0
    async with anyio.create_task_group() as group:
        group.start_soon(producer)
        async with receive:
            async for result in receive:
                done += 1
                failed += not result.ok
                transferred += result.bytes
                if on_progress is not None:
                    on_progress(Progress(done, failed, counted["total"], transferred))
                try:
                    yield result
                except GeneratorExit:
                    # The consumer stopped early (aclose): stop the rest, then return
                    # quietly, outside the task group, as a closing generator must.
                    break
        group.cancel_scope.cancel()
