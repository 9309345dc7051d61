"""Download many identity-document images listed in a CSV, with a progress line and a summary.

Usage::

    export IDME_API_TOKEN=...              # the consumer's API token
    export IDME_PASSBACK_BASE_URL=...      # optional: a proxy or a fake server
    python examples/bulk_download.py tokens.csv out/

Each CSV row is ``token[,size[,filename]]``; a first row starting with
``token`` is taken as a header. Images go into ``out/`` (streamed, written
atomically), and ``out/summary.json`` lists what failed and why. The exit
status is 1 if anything failed. For resumable jobs with a manifest, see
``idme-passback download-many``.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import httpx

from idme_passback import (
    DocumentRequest,
    InvalidSizeError,
    PassbackClient,
    Progress,
)


def read_requests(csv_path: str | Path) -> Iterator[DocumentRequest | tuple[str, str | None]]:
    """Yield one item per CSV row, lazily: the file is never held in memory."""
    with open(csv_path, encoding="utf-8", newline="") as file:
        for number, row in enumerate(csv.reader(file)):
            cells = [cell.strip() for cell in row] + ["", "", ""]
            token, size, filename = cells[0], cells[1] or None, cells[2] or None
            if not token or (number == 0 and token.lower() == "token"):
                continue
            try:
                yield DocumentRequest(token, size, filename)
            except InvalidSizeError:
                # Handed over raw, the bad size fails this row alone, not the whole job.
                yield (token, size)


def progress_printer(stream: TextIO) -> Callable[[Progress], None]:
    """Return an ``on_progress`` hook that redraws one line on ``stream``."""

    def show(progress: Progress) -> None:
        total = "?" if progress.total is None else progress.total
        stream.write(f"\r{progress.done}/{total} done, {progress.failed} failed ")
        stream.flush()

    return show


def write_summary(out: Path, ok: int, failures: list[dict[str, object]]) -> Path:
    """Write ``summary.json`` into ``out`` and return its path."""
    summary = out / "summary.json"
    summary.write_text(json.dumps({"ok": ok, "failed": len(failures), "failures": failures}))
    return summary


async def main(
    csv_path: str | Path,
    out_dir: str | Path,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    stream: TextIO = sys.stderr,
    concurrency: int = 16,
) -> int:
    """Download every row of ``csv_path`` into ``out_dir``; return the exit status."""
    out = Path(out_dir)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any I/O
    ok = 0
    failures: list[dict[str, object]] = []
    # The API token comes from IDME_API_TOKEN: never from the command line.
    async with PassbackClient(
        base_url=os.environ.get("IDME_PASSBACK_BASE_URL") or None, transport=transport
    ) as client:
        job = client.download_many(
            read_requests(csv_path),
            out,
            concurrency=concurrency,
            on_progress=progress_printer(stream),
        )
        async with job as results:
            async for result in results:
                if result.ok:
                    ok += 1
                    continue
                failures.append(
                    {
                        "row": result.index,
                        "error": type(result.error).__name__,
                        # The library's messages never hold a token.
                        "message": str(result.error),
                    }
                )
    stream.write("\n")
    summary = write_summary(out, ok, failures)
    print(f"{ok} downloaded, {len(failures)} failed; summary in {summary}")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} TOKENS.csv OUT_DIR")
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
