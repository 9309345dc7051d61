"""Row 8: ``download_many`` over loopback against a bare httpx + gather loop doing the same work.

One uvicorn process serves the fake on 127.0.0.1 with 1-20 ms of latency per
document request (drawn uniformly) and a 2 KB JPEG; every item is a distinct
document, fetched once, so the limiter never waits (it still runs). Both
sides write each image the same way: a 0600 temporary file in the folder,
fsync, a hard link into place, and an fsync of the folder.

* ours: ``client.download_many(tokens, folder, concurrency=64)``;
* peer: ``asyncio.gather`` over every token with an ``asyncio.Semaphore(64)``,
  each ``httpx.AsyncClient.post(url)`` + ``aread()`` + the same atomic write.

The two sides run alternately (ours, peer, ours, peer, ...: three runs each
quick, two full); each side's best run counts, in items per second.

Both sides are bound by the client process's CPU, most of it in httpcore's
connection pool, which walks every pooled connection (and polls the idle
ones) on each request queued or released: a bare httpx client at concurrency
64 reaches about 170-200 requests a second on this machine even with no
latency, at ~100% of one core, while the uvicorn server idles (~9%). That,
not the disk or the library, is the ceiling both sides share.
"""

from __future__ import annotations

import asyncio
import os
import shutil
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


async def _peer(base: str, tokens: list[str], folder: Path) -> float:
    slots = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as http:

        async def one(index: int, token: str) -> None:
            async with slots:
                response = await http.post(f"{base}{DOCUMENT_PATH}{token}?token={API_TOKEN}")
                content = await response.aread()
                response.raise_for_status()
                await _write_atomically(folder, directory, f"{index:06d}.jpg", content)

        directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            start = time.perf_counter()
            await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
            return len(tokens) / (time.perf_counter() - start)
        finally:
            os.close(directory)


async def _ours(base: str, tokens: list[str], folder: Path) -> float:
    from idme_passback import PassbackClient, RateLimiter

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with (
        httpx.AsyncClient(limits=limits, timeout=30.0) as http,
        PassbackClient(
            API_TOKEN, base_url=base, http_client=http, limiter=RateLimiter(2, 60.0)
        ) as client,
    ):
        ok = 0
        start = time.perf_counter()
        async with client.download_many(tokens, folder, concurrency=CONCURRENCY) as results:
            async for result in results:
                ok += result.ok
        rate = len(tokens) / (time.perf_counter() - start)
    if ok != len(tokens):
        raise RuntimeError(f"ours: only {ok} of {len(tokens)} items succeeded")
    return rate


async def measure(quick: bool) -> list[Row]:
    n = 4000 if quick else 20_000
    rounds = 3 if quick else 2
    ours: list[float] = []
    peer: list[float] = []
    with ServedFake(documents=2 * rounds * n, latency=[0.001, 0.02], limit=2) as served:
        # Every run gets documents no run has fetched (the server's limit is real).
        batches = iter(served.tokens[i : i + n] for i in range(0, 2 * rounds * n, n))
        for _ in range(rounds):
            for run, results in ((_ours, ours), (_peer, peer)):
                folder = Path(tempfile.mkdtemp(prefix="idme-bench-"))
                try:
                    results.append(await run(served.base_url, next(batches), folder))
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
    best_ours, best_peer = max(ours), max(peer)
    ratio = best_ours / best_peer
    return [
        Row(
            "8",
            f"bulk over loopback: `download_many`, {n:,} items, concurrency {CONCURRENCY}",
            f"{best_ours:.0f} items/s",
            f"{best_peer:.0f} items/s",
            f"{ratio:.2f}x",
            f"≥ {TARGET}x",
            "1.00x (the bare loop's work, no checks)",
            ratio >= TARGET,
            f"uvicorn serving the fake on 127.0.0.1, 1-20 ms latency per request, a 2 KB "
            f"JPEG; every item a distinct document. Both sides write each image to a 0600 "
            f"temporary file, fsync it (anyio's worker threads), link it into place and "
            f"fsync the folder. Peer: "
            f"`asyncio.gather` with a `Semaphore({CONCURRENCY})` over bare "
            f"`httpx.AsyncClient.post`. Runs alternate ours/peer, {rounds} each; best of each "
            f"(ours {', '.join(f'{r:.0f}' for r in ours)}; peer "
            f"{', '.join(f'{r:.0f}' for r in peer)} items/s).",
        )
    ]


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    emit(asyncio.run(measure(args.quick)), args.json)


if __name__ == "__main__":
    main()
