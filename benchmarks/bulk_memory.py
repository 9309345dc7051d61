"""Row 6: peak client memory while downloading 48 images of 8 MiB, 12 at a time.

A FakePassbackServer whose every image is 8 MiB (a JPEG header and padding)
is served by uvicorn in another process on loopback; 48 distinct documents,
limit 2, so the limiter never throttles (each side fetches each document
once). Each side runs in a fresh client process that samples its own RSS
every 10 ms in a thread:

* ours: ``client.download_many(tokens, folder, concurrency=12)`` (streamed,
  atomic, fsync'd files);
* peer: a client that buffers: ``get_document`` then write the bytes, under
  an ``asyncio.Semaphore(12)``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._util import (
    API_TOKEN,
    Row,
    RssSampler,
    ServedFake,
    emit,
    emit_result,
    mib,
    parser,
    run_child,
    settle_memory,
)

DOCUMENTS = 48
IMAGE = 8 * 2**20
CONCURRENCY = 12
TARGET = 32 * 2**20


async def _run(variant: str, config: dict[str, Any]) -> dict[str, Any]:
    from idme_passback import PassbackClient, RateLimiter

    folder = Path(tempfile.mkdtemp(prefix="idme-bench-"))
    tokens: list[str] = config["tokens"]
    try:
        async with PassbackClient(
            API_TOKEN, base_url=config["base_url"], limiter=RateLimiter(2, 60.0), max_retries=0
        ) as client:
            settle_memory()
            ok = 0
            with RssSampler(interval=0.01) as sampler:
                start = time.perf_counter()
                if variant == "ours":
                    job = client.download_many(tokens, folder, concurrency=CONCURRENCY)
                    async with job as results:
                        ok += sum([result.ok async for result in results])
                else:
                    slots = asyncio.Semaphore(CONCURRENCY)

                    async def one(index: int, token: str) -> None:
                        async with slots:
                            image = await client.get_document(token)
                            (folder / f"{index:06d}.jpg").write_bytes(image.content)

                    await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
                    ok = len(tokens)
                elapsed = time.perf_counter() - start
            written = sum(p.stat().st_size for p in folder.iterdir())
            max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "growth": sampler.growth,
        "maxrss_growth": max_rss - sampler.baseline,
        "samples": sampler.samples,
        "seconds": elapsed,
        "ok": ok,
        "written": written,
    }


def measure(quick: bool) -> list[Row]:
    with ServedFake(
        algorithm="sliding",
        limit=2,
        period=60.0,
        documents=DOCUMENTS,
        image_bytes=IMAGE,
    ) as fake:
        config = json.dumps({"base_url": fake.base_url, "tokens": fake.tokens})
        mine = run_child("bulk_memory", ["--variant", "ours"], stdin=config, timeout=300)
        theirs = run_child("bulk_memory", ["--variant", "peer"], stdin=config, timeout=300)
    total = DOCUMENTS * IMAGE
    return [
        Row(
            "6",
            "bulk memory: 48 x 8 MiB downloads, concurrency 12, over loopback",
            f"peak {mib(mine['growth'])} RSS ({mine['seconds']:.1f} s)",
            f"buffering `get_document` + write: peak {mib(theirs['growth'])} "
            f"({theirs['seconds']:.1f} s)",
            f"{mine['growth'] / theirs['growth']:.2f}x" if theirs["growth"] > 0 else "n/a",
            "≤ +32 MiB",
            "12 x 64 KiB chunks = 0.75 MiB in flight",
            mine["growth"] <= TARGET and mine["ok"] == DOCUMENTS,
            "Fake served by uvicorn in another process; each side in a fresh client process "
            f"sampling its RSS every 10 ms ({mine['samples']} samples); growth is peak minus "
            f"the RSS just before the job (cross-check, `getrusage` peak minus that: ours "
            f"{mib(mine['maxrss_growth'])}, peer {mib(theirs['maxrss_growth'])}). "
            f"Files written: ours {mine['ok']} "
            f"({mine['written'] / 2**20:.0f} MiB, of {total / 2**20:.0f}), peer {theirs['ok']}. "
            "Ours fsyncs every file (the library's atomic write); the peer does not.",
        )
    ]


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    if args.variant:
        config = json.loads(sys.stdin.readline())
        emit_result(asyncio.run(_run(args.variant, config)))
        return
    emit(measure(args.quick), args.json)


if __name__ == "__main__":
    main()
