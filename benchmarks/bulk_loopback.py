"""Row 8: ``download_many`` over loopback against a bare httpx + gather loop doing the same work.

One uvicorn process serves the fake on 127.0.0.1 with 1-20 ms of latency per
document request (drawn uniformly) and a 2 KB JPEG; every item is a distinct
document, fetched once, so the limiter never waits (it still runs). Both
sides write each image the same way: a 0600 temporary file in the folder,
fsync, a hard link into place, and an fsync of the folder.

* ours: ``client.download_many(tokens, folder, concurrency=64)``;
* peer: ``asyncio.gather`` over every token with an ``asyncio.Semaphore(64)``,
  each ``httpx.AsyncClient.post(url)`` + ``aread()`` + the same atomic write.

Each side's items (4,000 quick, 20,000 full) run as jobs of 500 (quick) or
1,000 (full), interleaved with the other side's in ABBA order on one client a
side, so both meet the same moments of a shared machine (whose speed moved by
up to 25% between two whole runs of one side); each side's figure is its
items over its total time.

Which of two things bounds both sides depends on the disk. When its fsyncs
are quick, the client's event loop does: httpcore's connection pool, which
walks every pooled connection (and polls the idle ones) on each request
queued or released; creating each image's temporary file, which on this
machine's ``/tmp`` has cost from under 0.1 to 1.1 ms of kernel CPU; and
ours' own per-item work on top, which is where ours falls behind. When
they are slow, each item holds its slot through two of them and both sides
wait on the disk. ``python -m benchmarks.bulk_profile`` shows each side's
event-loop time split into these parts, and how busy the loop was.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import anyio.to_thread
import httpx

from benchmarks._util import API_TOKEN, DOCUMENT_PATH, Row, ServedFake, emit, parser

CONCURRENCY = 64
TARGET = 0.95


async def _write_atomically(folder: Path, directory: int, name: str, content: bytes) -> None:
    """The same write as ours: the bytes in the loop, then in anyio's worker threads
    an fsync of the file and, once it is linked into place, of the folder (through
    ``directory``, its descriptor held for the whole job, as ours is)."""
    fd, temp = tempfile.mkstemp(prefix=".bench-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            await anyio.to_thread.run_sync(os.fsync, file.fileno())
        os.link(temp, folder / name)
    finally:
        os.unlink(temp)
    await anyio.to_thread.run_sync(os.fsync, directory)


def abba(index: int) -> tuple[str, str]:
    """The order of the two sides in job ``index``: ABBA, so each goes first in
    every other pair of jobs."""
    return ("ours", "peer") if index % 4 in (0, 3) else ("peer", "ours")


def _http_client() -> httpx.AsyncClient:
    """Each side's ``httpx.AsyncClient``: a connection for every slot, kept alive."""
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    return httpx.AsyncClient(limits=limits, timeout=30.0)


class PeerSide:
    """The bare loop: one ``httpx.AsyncClient``, kept for the whole run."""

    def __init__(self, base: str, folder: Path) -> None:
        self._base = base
        self._folder = folder
        self._http = _http_client()
        self._directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)

    async def run(self, tokens: list[str], first: int) -> float:
        """Fetch and write ``tokens`` (files numbered from ``first``); seconds taken."""
        slots = asyncio.Semaphore(CONCURRENCY)
        http, base, folder, directory = self._http, self._base, self._folder, self._directory

        async def one(index: int, token: str) -> None:
            async with slots:
                response = await http.post(f"{base}{DOCUMENT_PATH}{token}?token={API_TOKEN}")
                content = await response.aread()
                response.raise_for_status()
                await _write_atomically(folder, directory, f"{index:06d}.jpg", content)

        start = time.perf_counter()
        await asyncio.gather(*(one(first + i, t) for i, t in enumerate(tokens)))
        return time.perf_counter() - start

    async def aclose(self) -> None:
        await self._http.aclose()
        os.close(self._directory)


class OursSide:
    """``download_many`` on one client (over a caller's ``httpx.AsyncClient``), kept for the run."""

    def __init__(self, base: str, folder: Path) -> None:
        from idme_passback import PassbackClient, RateLimiter

        self._folder = folder
        self._http = _http_client()
        self._client = PassbackClient(
            API_TOKEN, base_url=base, http_client=self._http, limiter=RateLimiter(2, 60.0)
        )

    async def run(self, tokens: list[str], first: int) -> float:
        """One ``download_many`` job over ``tokens`` (files numbered from ``first``); seconds."""
        from idme_passback import DocumentRequest

        # Named across jobs as the peer's are: each job would number its items from 0.
        items = [DocumentRequest(t, stem=f"{first + i:06d}") for i, t in enumerate(tokens)]
        ok = 0
        start = time.perf_counter()
        async with self._client.download_many(
            items, self._folder, concurrency=CONCURRENCY
        ) as results:
            async for result in results:
                ok += result.ok
        seconds = time.perf_counter() - start
        if ok != len(tokens):
            raise RuntimeError(f"ours: only {ok} of {len(tokens)} items succeeded")
        return seconds

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._http.aclose()


async def measure(quick: bool) -> list[Row]:
    n, chunk = (4000, 500) if quick else (20_000, 1000)
    chunks = n // chunk
    seconds = {"ours": 0.0, "peer": 0.0}
    pairs: list[float] = []
    with ServedFake(documents=2 * n, latency=[0.001, 0.02], limit=2) as served:
        # Every item a document no run has fetched (the server's limit is real).
        tokens = {"ours": served.tokens[:n], "peer": served.tokens[n:]}
        folders = {side: Path(tempfile.mkdtemp(prefix=f"idme-bench-{side}-")) for side in seconds}
        sides: dict[str, OursSide | PeerSide] = {
            "ours": OursSide(served.base_url, folders["ours"]),
            "peer": PeerSide(served.base_url, folders["peer"]),
        }
        try:
            for index in range(chunks):
                taken = {}
                for side in abba(index):
                    first = index * chunk
                    batch = tokens[side][first : first + chunk]
                    taken[side] = await sides[side].run(batch, first)
                    seconds[side] += taken[side]
                pairs.append(taken["peer"] / taken["ours"])
        finally:
            for runner in sides.values():
                await runner.aclose()
            for folder in folders.values():
                shutil.rmtree(folder, ignore_errors=True)
    ours, peer = n / seconds["ours"], n / seconds["peer"]
    ratio = ours / peer
    pairs.sort()
    median = statistics.median(pairs)
    return [
        Row(
            "8",
            f"bulk over loopback: `download_many`, {n:,} items, concurrency {CONCURRENCY}",
            f"{ours:.0f} items/s",
            f"{peer:.0f} items/s",
            f"{ratio:.2f}x",
            f"≥ {TARGET}x",
            "1.00x (the bare loop's work, no checks)",
            ratio >= TARGET,
            f"uvicorn serving the fake on 127.0.0.1, 1-20 ms latency per request, a 2 KB "
            f"JPEG; every item a distinct document. Both sides write each image to a 0600 "
            f"temporary file, fsync it (anyio's worker threads), link it into place and "
            f"fsync the folder, one folder a side that grows to {n:,} files. Peer: "
            f"`asyncio.gather` with a `Semaphore({CONCURRENCY})` over bare "
            f"`httpx.AsyncClient.post`. Each side's {n:,} items run as {chunks} jobs of "
            f"{chunk:,}, interleaved with the other side's (ABBA order, one client a side "
            f"for the whole run), so both meet the same moments of a shared machine; the "
            f"figure is each side's items over its total time. Ratios of the {chunks} "
            f"pairs: {pairs[0]:.2f}x to {pairs[-1]:.2f}x, median "
            f"{median:.2f}x.",
        )
    ]


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    emit(asyncio.run(measure(args.quick)), args.json)


if __name__ == "__main__":
    main()
