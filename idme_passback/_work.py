"""The per-item work of bulk jobs: reading each image into memory, or naming and writing a file.

The client hands one of these to :func:`idme_passback.bulk.run`; the
scheduler (:mod:`idme_passback._engine`) calls it once per item, with the
gate each attempt enters and the hand-over for the item's result.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeAlias, TypeVar

from ._body import ImageBody, read_image
from ._dirfd import part_name
from ._engine import Deliver, Gate, Work
from ._files import Folder
from ._imagetype import IMAGE_EXTENSIONS
from ._tokens import shorten
from .bulk import DocumentRequest, FetchResult
from .sizing import Size

T = TypeVar("T")


#: Reads one 200 body: into memory, or onto disk.
Consume: TypeAlias = Callable[[ImageBody], Awaitable[T]]


class FetchDocument(Protocol):
    """The client's document call, as the bulk engine drives it (through a gate)."""

    async def __call__(
        self, token: str, box: Size | None, consume: Consume[T], gate: Gate
    ) -> T: ...


def fetching(document: FetchDocument) -> Work:
    """The per-item work of :meth:`PassbackClient.fetch_many`: each image into memory."""

    async def fetch(request: DocumentRequest, index: int, gate: Gate, deliver: Deliver) -> None:
        async def consume(body: ImageBody) -> None:
            image = await read_image(body, request.token, request.size)
            # Handed over while the slot is held: at most `concurrency` images wait.
            await deliver(FetchResult(index, request.token, image=image, bytes=len(image)))

        await document(request.token, request.size, consume, gate)

    return fetch


class _Downloads:
    """The per-item work of :meth:`PassbackClient.download_many`: each image into a file.

    The folder is opened when the job starts and written through that
    descriptor to the end; its stale temporary files (left by a killed run)
    are removed first. Each item is checked before its request is spent:
    a name the file system can hold and nothing in its place (a dangling
    symlink counts); that the folder takes new files is proved before the
    first request, and again after any write fails.
    """

    def __init__(
        self, document: FetchDocument, directory: str | os.PathLike[str], *, overwrite: bool
    ) -> None:
        self._document = document
        self._directory = Path(directory)
        self._overwrite = overwrite
        self._folder: Folder | None = None
        # Whether a probe file has shown the folder takes new files: proved before
        # the first request, and again after any write fails (not per item: a file
        # made and removed for every image doubles the folder's work).
        self._writable = False
        #: Temporary files known to be held, by name, with how many of this job's
        #: items claim each (a live writer's from before the job: one, for good).
        #: ``None``: the platform cannot tell, so each is checked on disk.
        self._claimed: Counter[str] | None = None
        Folder.open(self._directory).close()  # the folder must exist before anything is sent

    async def start(self) -> None:
        self._folder = Folder.open(self._directory)
        # One listing of the folder, in the loop: a thread here would be a wait
        # that fake clocks in tests cannot see. The temporary files it leaves are
        # live writers'; with the job's own, they are the only claims an item's
        # name is checked against before its request (benchmark row 8: one stat a
        # candidate name, not two). A writer that starts later is found when the
        # item's file is written (TargetExistsError, after its request).
        left = self._folder.sweep()
        self._claimed = None if left is None else Counter(left)

    def close(self) -> None:
        if self._folder is not None:
            self._folder.close()

    def _check(self, request: DocumentRequest, stem: str) -> str | None:
        """Check the item's file before its request; return its name if already known."""
        folder = self._folder
        assert folder is not None
        if request.filename is not None:
            name = folder.check_name(request.filename)
            folder.check_free(name, overwrite=self._overwrite)
            self._check_unclaimed(folder, name)
        else:
            # The extension comes with the body, but a file of this item under any
            # image extension already means a refusal: find out before spending a request.
            name = None
            for extension in IMAGE_EXTENSIONS:
                candidate = folder.check_name(stem + extension)
                if not self._overwrite:
                    folder.check_free(candidate, overwrite=False)
                self._check_unclaimed(folder, candidate)
        if not self._writable:
            folder.check_writable()
            self._writable = True
        return name

    def _check_unclaimed(self, folder: Folder, name: str) -> None:
        if self._claimed is None or part_name(name) in self._claimed:
            folder.check_unclaimed(name)

    @contextlib.contextmanager
    def _claiming(self, name: str) -> Iterator[None]:
        """Count ``name``'s temporary file among the claims while this item writes it."""
        claimed = self._claimed
        if claimed is None:
            yield
            return
        claim = part_name(name)
        claimed[claim] += 1
        try:
            yield
        finally:
            # Counted, not a set: an item that fails on a name another item is
            # still writing must not take that item's claim away.
            claimed[claim] -= 1
            if claimed[claim] <= 0:
                del claimed[claim]

    async def __call__(
        self, request: DocumentRequest, index: int, gate: Gate, deliver: Deliver
    ) -> None:
        folder = self._folder
        if folder is None:
            raise RuntimeError("the download job has not started")
        stem = request.stem or f"{index:06d}-{shorten(request.token).rstrip(chr(0x2026))}"
        known = self._check(request, stem)

        async def consume(body: ImageBody) -> None:
            name = known
            if name is None:
                # Named after the image's own type, known once its first bytes are in.
                await body.start()
                name = stem + body.extension
                folder.check_free(name, overwrite=self._overwrite)
            try:
                with self._claiming(name):
                    written = await folder.write(name, body.chunks(), overwrite=self._overwrite)
            except OSError:
                self._writable = False  # the folder may have stopped taking files
                raise
            await deliver(
                FetchResult(
                    index,
                    request.token,
                    path=self._directory / name,
                    bytes=written.bytes,
                    sha256=written.sha256,
                )
            )

        await self._document(request.token, request.size, consume, gate)


def downloading(
    document: FetchDocument, directory: str | os.PathLike[str], *, overwrite: bool
) -> Work:
    """The per-item work of :meth:`PassbackClient.download_many`: each image into a file.

    Raises:
        FolderNotFoundError: ``directory`` does not exist (before anything is sent).
    """
    return _Downloads(document, directory, overwrite=overwrite)
