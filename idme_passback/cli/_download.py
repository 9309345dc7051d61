"""The ``download-many`` command: a bulk download with progress, a manifest and ``--resume``."""

from __future__ import annotations

import argparse
import collections
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import TextIO

import attrs

from ..bulk import FetchResult, ItemLike
from ..errors import AuthenticationError, PermissionDeniedError
from ..sizing import parse_size
from ._commands import make_client
from ._context import Context
from ._exitcodes import ExitCode, UsageError
from ._inputs import Row, read_rows
from ._manifest import Key, Manifest, completed, key, make_record
from ._progress import ProgressLine, format_bytes

__all__ = ["download_many"]


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


class _Feed:
    """The items handed to the library, minus those an earlier run finished.

    The library numbers the items it is given; the feed remembers which
    input position each of those numbers stands for.
    """

    def __init__(
        self, rows: AsyncGenerator[Row, None], done: set[Key], default: str | None
    ) -> None:
        self._rows = rows
        self._done = done
        self._default = default
        self._in_flight: dict[int, _Sent] = {}
        self.skipped = 0

    async def __aiter__(self) -> AsyncIterator[ItemLike]:
        fed = 0
        async with contextlib.aclosing(self._rows) as rows:
            async for row in rows:
                size = _canonical_size(row.size, self._default)
                if self._done and key(row.token, size) in self._done:
                    self.skipped += 1
                    continue
                self._in_flight[fed] = _Sent(row.index, size)
                fed += 1
                yield row.item()

    def claim(self, fed_index: int) -> _Sent:
        """Return (and forget) what was remembered of the item the library numbered so."""
        return self._in_flight.pop(fed_index)


def _open_input(name: str, ctx: Context) -> TextIO:
    if name == "-":
        return ctx.stdin
    # newline="" is what the csv module asks for.
    return open(name, encoding="utf-8", newline="")


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
            self.failed += 1
            self.errors[type(result.error).__name__] += 1


async def download_many(args: argparse.Namespace, ctx: Context) -> int:
    """Download every document listed in the input into ``--out``; see ``download-many --help``."""
    out, manifest_path, default = _prepare(args)
    done = completed(manifest_path) if args.resume else set()
    tally = _Tally()
    fatal: BaseException | None = None
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        source = _open_input(args.input, ctx)
        if source is not ctx.stdin:
            stack.callback(source.close)
        client = await stack.enter_async_context(make_client(args, ctx))
        manifest = stack.enter_context(Manifest(manifest_path, append=args.resume))
        feed = _Feed(read_rows(source), done, default)
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
                manifest.write(make_record(sent.index, result, sent.size, result.path))
                tally.add(result)
                if isinstance(result.error, AuthenticationError | PermissionDeniedError):
                    # A refused API token fails every item alike: stop spending requests.
                    fatal = result.error
                    break
        progress.finish()

    elapsed = time.monotonic() - started
    ctx.out(
        f"{tally.ok} downloaded, {tally.failed} failed, {feed.skipped} skipped "
        f"(done in an earlier run); {format_bytes(tally.bytes)} in {elapsed:.1f} s; "
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
