"""The ``download-many`` command: a bulk download with progress, a manifest and ``--resume``.

``--resume`` never fetches a document twice into a complete file. An item
counts as done when the manifest has an ``ok`` record for it (same input
position, token digest and size) whose file is still there with the bytes
recorded, or, failing a record, when its file is already in ``--out``
under the name this run would give it: the library writes files whole or
not at all (a temporary file, linked into place once complete), so a file
under its final name is complete. That is what a run killed between
writing a file and recording it leaves; the resumed run records it (with
its size and SHA-256) instead of fetching it again.

The manifest survives a torn last line (a run killed mid-write): the next
``--resume`` drops the cut line, with a warning, before appending.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, TextIO

import anyio.to_thread
import attrs

from .._imagetype import IMAGE_EXTENSIONS, SNIFF_BYTES, sniff_image
from .._tokens import shorten
from ..bulk import FetchResult, ItemLike
from ..errors import AuthenticationError, PermissionDeniedError
from ..sizing import parse_size
from ._commands import make_client
from ._context import Context
from ._exitcodes import ExitCode, UsageError
from ._inputs import Row, read_rows
from ._manifest import Manifest, make_record, token_digest
from ._progress import ProgressLine, format_bytes

__all__ = ["download_many"]

#: What identifies an item across runs: its input position, token digest and size.
ItemKey = tuple[int, str, str | None]


@attrs.frozen
class _Sent:
    """What the job needs to remember of an item while it is in flight."""

    index: int
    size: str | None


def _canonical_size(raw: str | None, default: str | None) -> str | None:
    if raw is None:
        return default
    try:
        return str(parse_size(raw))
    except ValueError:
        return raw


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _complete_file(path: Path, size: int | None = None) -> int | None:
    """The size of ``path`` if it is a regular file (not a symlink) holding an image."""
    try:
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return None
    if size is not None:
        return info.st_size if info.st_size == size else None
    try:
        with path.open("rb") as file:
            head = file.read(SNIFF_BYTES)
    except OSError:
        return None
    return info.st_size if sniff_image(head) is not None else None


@attrs.define
class _Resume:
    """What an earlier run finished, read from its manifest."""

    done: set[ItemKey] = attrs.Factory(set)
    unreadable: int = 0

    @classmethod
    def load(cls, path: Path, ctx: Context) -> _Resume:
        """Read ``path`` (repairing a torn last line first); a missing one means nothing done."""
        state = cls()
        if not path.exists():
            return state
        _repair(path, ctx)
        with path.open(encoding="utf-8", errors="replace") as file:
            for line in file:
                state._add(line)
        if state.unreadable:
            ctx.note(
                f"idme-passback: warning: skipped {state.unreadable} unreadable line(s) "
                f"of the manifest {str(path)!r}"
            )
        return state

    def _add(self, line: str) -> None:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            self.unreadable += 1
            return
        if not isinstance(record, dict):
            self.unreadable += 1
            return
        if record.get("status") != "ok":
            return
        index, digest, size, written, length = (
            record.get(name) for name in ("index", "token_sha256", "size", "path", "bytes")
        )
        if not (isinstance(index, int) and isinstance(digest, str) and isinstance(written, str)):
            return
        expected = length if isinstance(length, int) and not isinstance(length, bool) else None
        if _complete_file(Path(written), expected) is not None:
            self.done.add((index, digest, size if isinstance(size, str) else None))


def _repair(path: Path, ctx: Context) -> None:
    """Cut a torn last line (no newline at the end) off the manifest, with a warning."""
    with path.open("rb+") as file:
        end = file.seek(0, os.SEEK_END)
        if end == 0:
            return
        file.seek(end - 1)
        if file.read(1) == b"\n":
            return
        # Back to the last complete line, a block at a time.
        position = end
        keep = 0
        while position > 0:
            start = max(0, position - 64 * 1024)
            file.seek(start)
            block = file.read(position - start)
            cut = block.rfind(b"\n")
            if cut != -1:
                keep = start + cut + 1
                break
            position = start
        file.truncate(keep)
    ctx.note(
        f"idme-passback: warning: the manifest's last line was cut short (an interrupted "
        f"run); dropped it ({end - keep} bytes) before resuming"
    )


class _Feed:
    """The items handed to the library, minus those an earlier run finished.

    The library numbers the items it is given; the feed remembers which
    input position each of those numbers stands for. Rows that cannot be
    read, and files already complete on disk, never reach the library: the
    feed records them itself (``record``).
    """

    def __init__(
        self,
        rows: AsyncGenerator[Row, None],
        state: _Resume,
        default: str | None,
        out: Path,
        *,
        resume: bool,
        record: Callable[[dict[str, Any], bool], None],
    ) -> None:
        self._rows = rows
        self._state = state
        self._default = default
        self._out = out
        self._resume = resume
        self._record = record
        self._in_flight: dict[int, _Sent] = {}
        self.skipped = 0
        self.recovered = 0

    async def __aiter__(self) -> AsyncIterator[ItemLike]:
        fed = 0
        async with contextlib.aclosing(self._rows) as rows:
            async for row in rows:
                if row.problem is not None:
                    self._record(_bad_row(row), False)
                    continue
                size = _canonical_size(row.size, self._default)
                if self._resume and await self._finished(row, size):
                    continue
                self._in_flight[fed] = _Sent(row.index, size)
                fed += 1
                yield row.item()

    async def _finished(self, row: Row, size: str | None) -> bool:
        digest = token_digest(row.token)
        if (row.index, digest, size) in self._state.done:
            self.skipped += 1
            return True
        found = self._on_disk(row)
        if found is None:
            return False
        path, length = found
        sha256 = await anyio.to_thread.run_sync(_file_digest, path)
        self._record(
            {
                "index": row.index,
                "token": shorten(row.token),
                "token_sha256": digest,
                "size": size,
                "status": "ok",
                "path": str(path.resolve()),
                "bytes": length,
                "sha256": sha256,
                "error": None,
                "message": None,
                "recovered": True,
            },
            True,
        )
        self.recovered += 1
        return True

    def _on_disk(self, row: Row) -> tuple[Path, int] | None:
        """The item's file, if a complete one is already where this run would write it."""
        if row.filename is not None:
            names = [row.filename]
        else:
            stem = f"{row.index:06d}-{shorten(row.token).rstrip(chr(0x2026))}"
            names = [stem + extension for extension in IMAGE_EXTENSIONS]
        for name in names:
            if "/" in name or name.startswith("."):
                continue
            length = _complete_file(self._out / name)
            if length is not None:
                return self._out / name, length
        return None

    def claim(self, fed_index: int) -> _Sent:
        """Return (and forget) what was remembered of the item the library numbered so."""
        return self._in_flight.pop(fed_index)


def _bad_row(row: Row) -> dict[str, Any]:
    return {
        "index": row.index,
        "token": None,
        "token_sha256": None,
        "size": None,
        "status": "error",
        "path": None,
        "bytes": 0,
        "error": "InvalidRow",
        "message": row.problem,
    }


def _open_input(name: str, ctx: Context) -> TextIO:
    if name == "-":
        return ctx.stdin
    # newline="" is what the csv module asks for; bytes that are not UTF-8 become
    # surrogates, so such a row fails alone instead of ending the job.
    try:
        return open(name, encoding="utf-8", errors="surrogateescape", newline="")
    except OSError as exc:
        raise UsageError(f"cannot read the input {name!r}: {exc.strerror or exc}") from None


def _prepare(args: argparse.Namespace) -> tuple[Path, Path, str | None]:
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    default = parse_size(args.size)
    out = Path(args.out)
    try:
        # 0700: these are identity documents.
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--out {str(out)!r} exists and is not a folder") from None
    except OSError as exc:
        raise UsageError(f"cannot make the folder {str(out)!r}: {exc.strerror or exc}") from None
    manifest = Path(args.manifest) if args.manifest else out / "manifest.jsonl"
    if not args.resume and not args.overwrite and manifest.exists() and manifest.stat().st_size > 0:
        raise UsageError(
            f"the manifest {str(manifest)!r} exists: pass --resume to continue that job, "
            "or --overwrite to start again"
        )
    return out, manifest, None if default is None else str(default)


@attrs.define
class _Tally:
    ok: int = 0
    failed: int = 0
    bytes: int = 0
    errors: collections.Counter[str] = attrs.Factory(collections.Counter)

    def add(self, result: FetchResult) -> None:
        if result.error is None:
            self.ok += 1
            self.bytes += result.bytes
        else:
            self.fail(type(result.error).__name__)

    def fail(self, kind: str) -> None:
        self.failed += 1
        self.errors[kind] += 1


async def download_many(args: argparse.Namespace, ctx: Context) -> int:
    """Download every document listed in the input into ``--out``; see ``download-many --help``."""
    out, manifest_path, default = _prepare(args)
    state = _Resume.load(manifest_path, ctx) if args.resume else _Resume()
    tally = _Tally()
    fatal: BaseException | None = None
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        source = _open_input(args.input, ctx)
        if source is not ctx.stdin:
            stack.callback(source.close)
        client = await stack.enter_async_context(make_client(args, ctx))
        manifest = stack.enter_context(Manifest(manifest_path, append=args.resume))

        def record(entry: dict[str, Any], ok: bool) -> None:
            manifest.write(entry)
            if not ok:
                tally.fail(str(entry["error"]))

        feed = _Feed(read_rows(source), state, default, out, resume=args.resume, record=record)
        progress = ProgressLine(ctx.stderr)
        results = client.download_many(
            feed,
            out,
            size=default,
            concurrency=args.concurrency,
            on_progress=progress,
            overwrite=args.overwrite,
        )
        async with results as stream:
            async for result in stream:
                sent = feed.claim(result.index)
                entry = make_record(sent.index, result, sent.size, result.path)
                if result.sha256 is not None:
                    entry["sha256"] = result.sha256
                manifest.write(entry)
                tally.add(result)
                if isinstance(result.error, AuthenticationError | PermissionDeniedError):
                    # A refused API token fails every item alike: stop spending requests.
                    fatal = result.error
                    break
        progress.finish()

    elapsed = time.monotonic() - started
    found = f", {feed.recovered} found complete on disk" if feed.recovered else ""
    ctx.out(
        f"{tally.ok} downloaded, {tally.failed} failed, {feed.skipped} skipped "
        f"(done in an earlier run){found}; {format_bytes(tally.bytes)} in {elapsed:.1f} s; "
        f"manifest: {manifest_path}"
    )
    if fatal is not None:
        ctx.note(f"idme-passback: error: stopped early: {fatal}")
        return ExitCode.AUTHENTICATION
    if tally.failed:
        kinds = ", ".join(f"{name} {count}" for name, count in tally.errors.most_common())
        ctx.note(f"idme-passback: {tally.failed} item(s) failed ({kinds}); see {manifest_path}")
        return ExitCode.ITEMS_FAILED
    return ExitCode.OK
