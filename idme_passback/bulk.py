"""Many documents at once: the values of a bulk job, and each item's work.

:meth:`PassbackClient.fetch_many` and :meth:`PassbackClient.download_many`
return a :class:`BulkResults`; iterate it inside ``async with``::

    async with client.fetch_many(tokens, concurrency=32) as results:
        async for result in results:
            ...   # break, return and raise are all safe here

The scheduling (lazy input, per-document fairness, bounded memory) lives in
a private module; this one holds what an item is, what its result is, and
how its input is checked (the per-item work lives in a private module too).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from typing import NoReturn, TypeAlias, TypeVar

import anyio
import anyio.abc
import attrs

from ._engine import Lifecycle, Scheduler, Work
from ._tokens import check_token, shorten
from .errors import InvalidFilenameError
from .limiter import RateLimiter
from .models import DocumentImage
from .sizing import Size, SizeLike, parse_size

T = TypeVar("T")

__all__ = [
    "BulkResults",
    "DocumentRequest",
    "FetchResult",
    "Progress",
    "ResultStream",
]


def _optional_size(value: SizeLike | None) -> Size | None:
    return parse_size(value)


@attrs.frozen(repr=False)
class DocumentRequest:
    """One item of a bulk job: a document token, and optionally a size and a file name.

    For :meth:`PassbackClient.download_many`, ``filename`` names the file
    exactly; ``stem`` names it but for the extension, which comes from the
    image's own bytes (``stem="alice-front"`` gives ``alice-front.jpg``).
    Both must be bare names: no folder separators, no leading dot.
    """

    token: str
    size: Size | None = attrs.field(default=None, converter=_optional_size)
    filename: str | None = None
    stem: str | None = None

    def __repr__(self) -> str:
        return (
            f"DocumentRequest(token={shorten(self.token)!r}, size={self.size!s}, "
            f"filename={self.filename!r}, stem={self.stem!r})"
        )


ItemLike: TypeAlias = "str | tuple[str, SizeLike | None] | DocumentRequest"


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
    #: The SHA-256 of the file written (downloads only), in hex.
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the item succeeded."""
        return self.error is None

    def __repr__(self) -> str:
        what = f"error={type(self.error).__name__}" if self.error else f"bytes={self.bytes}"
        return f"FetchResult(index={self.index}, token={shorten(self.token)!r}, {what})"


def safe_filename(name: str) -> str:
    """Return ``name`` if it is a bare file name that cannot leave its folder.

    Raises:
        InvalidFilenameError: for separators, a leading dot, NUL, or an empty name
            (also a ``ValueError``).
    """
    if (
        not name
        or name.startswith(".")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.sep in name
        or (os.altsep is not None and os.altsep in name)
        or len(name.encode("utf-8", "surrogateescape")) > 200
    ):
        raise InvalidFilenameError(
            "a bulk file name (or stem) must be a bare name (no folders, no leading dot, "
            f"at most 200 bytes), got {name[:40]!r}"
        )
    return name


def to_request(item: object, size: Size | None) -> DocumentRequest:
    """Turn one input item into a checked :class:`DocumentRequest`.

    Raises:
        InvalidTokenError, InvalidSizeError, TypeError, ValueError: for a bad item.
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
    for name in (request.filename, request.stem):
        if name is not None:
            safe_filename(name)
    return request


def _token_of(item: object) -> str:
    """The token of an item that failed, as far as it has one (for its result)."""
    if isinstance(item, tuple) and item:
        item = item[0]
    token = item if isinstance(item, str) else getattr(item, "token", "")
    return str(token)


def _failed(item: object, index: int, error: Exception) -> FetchResult:
    return FetchResult(index, _token_of(item), error=error)


class BulkResults:
    """A bulk job, started by ``async with``; its results arrive in completion order.

    ::

        async with client.fetch_many(tokens) as results:
            async for result in results:
                ...

    The job's tasks live inside the ``async with``: leaving it early
    (``break``, ``return``, an exception) stops them at once, sends no
    further request, leaves no temporary file, and lets the caller's own
    exception through unchanged.
    """

    __slots__ = (
        "_group",
        "_on_progress",
        "_scheduler",
        "_source",
        "_total",
        "_work",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        items: Iterable[object] | AsyncIterable[object],
        total: int | None,
        on_progress: ProgressHook | None,
        work: Work | None = None,
    ) -> None:
        self._work = work if isinstance(work, Lifecycle) else None
        self._scheduler = scheduler
        self._source = items
        self._total = total
        self._on_progress = on_progress
        self._group: anyio.abc.TaskGroup | None = None

    def __aiter__(self) -> NoReturn:
        """Refuse: a job's tasks need an owner, so iterate inside ``async with``."""
        raise TypeError(
            "iterate a bulk job inside `async with`: "
            "`async with client.fetch_many(...) as results: async for result in results: ...`"
        )

    async def __aenter__(self) -> ResultStream:
        """Start the job; leaving the block stops whatever is still running."""
        if self._group is not None:
            raise RuntimeError("a bulk job can be started only once")
        if self._work is not None:
            await self._work.start()
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self._group.start_soon(self._scheduler.run, self._source)
        return ResultStream(self._scheduler, self._total, self._on_progress)

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop the job (cancelling what still runs), then let any exception through."""
        assert self._group is not None
        self._group.cancel_scope.cancel()
        try:
            # The caller's exception is not passed in, so it is not wrapped in a group.
            await self._group.__aexit__(None, None, None)
        finally:
            if self._work is not None:
                self._work.close()


class ResultStream:
    """The results of a running bulk job: ``async for result in results``."""

    __slots__ = ("_bytes", "_done", "_failed", "_on_progress", "_scheduler", "_total")

    def __init__(
        self,
        scheduler: Scheduler,
        total: int | None,
        on_progress: ProgressHook | None,
    ) -> None:
        self._scheduler = scheduler
        self._total = total
        self._on_progress = on_progress
        self._done = self._failed = self._bytes = 0

    def __aiter__(self) -> ResultStream:
        """Return the iterator itself."""
        return self

    async def __anext__(self) -> FetchResult:
        """Return the next result to finish."""
        try:
            try:
                result: FetchResult = self._scheduler.results.get_nowait()
            except anyio.WouldBlock:
                result = await self._scheduler.results.get()
        except anyio.EndOfStream:
            if self._scheduler.input_error is not None:
                # The input itself failed (after every item read was delivered).
                raise self._scheduler.input_error from None
            raise StopAsyncIteration from None
        self._done += 1
        self._failed += not result.ok
        self._bytes += result.bytes
        if self._on_progress is not None:
            total = self._total if self._total is not None else self._scheduler.total
            # Called in the caller's own task: an exception it raises is the caller's.
            self._on_progress(Progress(self._done, self._failed, total, self._bytes))
        return result


def run(
    work: Work,
    items: Iterable[object] | AsyncIterable[object],
    *,
    size: SizeLike | None,
    concurrency: int,
    limiter: RateLimiter,
    on_progress: ProgressHook | None,
    max_active: int | None = None,
    max_buffered: int = 65_536,
) -> BulkResults:
    """Check the job's arguments, then return it, ready to start (see :class:`BulkResults`).

    Raises:
        ValueError: for a ``concurrency`` below 1.
        InvalidSizeError: for a bad default ``size`` (before anything is sent).
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
    default_size = parse_size(size)

    def prepare(item: object) -> tuple[str, DocumentRequest]:
        request = to_request(item, default_size)
        return request.token, request

    scheduler = Scheduler(
        work=work,
        prepare=prepare,
        failed=_failed,
        limiter=limiter,
        concurrency=concurrency,
        # Documents waiting on the limiter cost a task each: allow many, so spent
        # documents never block fresh ones, yet keep memory bounded.
        max_active=max_active if max_active is not None else max(1024, 16 * concurrency),
        max_buffered=max_buffered,
    )
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    return BulkResults(scheduler, items, total, on_progress, work)
