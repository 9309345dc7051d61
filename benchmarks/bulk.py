"""Row 5: head-of-line blocking in bulk work.

40 documents x 3 requests each (in document order: d0, d0, d0, d1, ...),
concurrency 8, 50 ms server latency, limit 2 per 1 s, a strict
sliding-window fake in-process. Ours: ``client.fetch_many(items,
concurrency=8)``, which waits on the limiter *before* taking a slot. Peer:
the design that holds a slot while it waits: ``asyncio.gather`` of tasks
doing ``async with semaphore(8): await client.get_document(token)``.

Ideal makespan: the 80 first-and-second requests fill 8 slots for 10
rounds of 50 ms (0.5 s); the last of them answer at 0.5 s, so those
documents' third requests go at 1.5 s and answer at 1.55 s.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from benchmarks._util import API_TOKEN, FAKE_BASE, Row, emit, jpeg_body, parser
from idme_passback import PassbackClient, RateLimiter, RateLimitError
from idme_passback.testing import FakePassbackServer

DOCUMENTS = 40
PER_DOCUMENT = 3
CONCURRENCY = 8
LATENCY = 0.050
LIMIT = 2
PERIOD = 1.0
IDEAL = (DOCUMENTS * LIMIT / CONCURRENCY) * LATENCY + PERIOD + LATENCY
BODY = jpeg_body(2048)


def _setup() -> tuple[FakePassbackServer, list[str], PassbackClient]:
    fake = FakePassbackServer(
        API_TOKEN,
        limit=LIMIT,
        period=PERIOD,
        algorithm="sliding",
        latency=LATENCY,
        image_bytes=BODY,
        seed=5,
    )
    tokens = [fake.issue_document() for _ in range(DOCUMENTS)]
    items = [token for token in tokens for _ in range(PER_DOCUMENT)]
    client = PassbackClient(
        API_TOKEN,
        base_url=FAKE_BASE,
        transport=httpx.ASGITransport(app=fake),
        limiter=RateLimiter(LIMIT, PERIOD),
        max_retries=0,
    )
    return fake, items, client


async def ours() -> dict[str, float]:
    fake, items, client = _setup()
    ok = e429 = errors = 0
    async with client:
        start = time.perf_counter()
        async with client.fetch_many(items, concurrency=CONCURRENCY) as results:
            async for result in results:
                ok += result.ok
                e429 += isinstance(result.error, RateLimitError)
                errors += result.error is not None and not isinstance(result.error, RateLimitError)
        makespan = time.perf_counter() - start
    return {
        "makespan": makespan,
        "ok": ok,
        "e429": e429,
        "errors": errors,
        "server_429": fake.count(endpoint="document", status=429),
    }


async def peer() -> dict[str, float]:
    fake, items, client = _setup()
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(token: str) -> object:
        async with slots:
            return await client.get_document(token)

    async with client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(t) for t in items), return_exceptions=True)
        makespan = time.perf_counter() - start
    e429 = sum(isinstance(r, RateLimitError) for r in results)
    failed = sum(isinstance(r, BaseException) for r in results)
    return {
        "makespan": makespan,
        "ok": len(results) - failed,
        "e429": e429,
        "errors": failed - e429,
        "server_429": fake.count(endpoint="document", status=429),
    }


async def measure(quick: bool) -> list[Row]:
    mine = await ours()
    theirs = await peer()
    over = mine["makespan"] / IDEAL
    return [
        Row(
            "5",
            "bulk head-of-line: 40 docs x 3, concurrency 8, 50 ms, limit 2 / 1 s",
            f"429s: {mine['e429']:.0f}; makespan {mine['makespan']:.2f} s = {over:.3f}x ideal",
            f"semaphore-first gather: 429s: {theirs['e429']:.0f}; makespan "
            f"{theirs['makespan']:.2f} s",
            f"{mine['makespan'] / theirs['makespan']:.2f}x makespan",
            f"0 429s, ≤ 1.10x ideal ({1.1 * IDEAL:.2f} s)",
            f"8 slots / 50 ms = 160 req/s; 2 / 1 s / doc → {IDEAL:.2f} s",
            mine["e429"] == 0 and mine["errors"] == 0 and over <= 1.10,
            "Items in document order (d0, d0, d0, d1, ...); in-process sliding-window fake "
            "(`httpx.ASGITransport`), `max_retries=0`. Ideal: 80 first/second requests take "
            f"10 rounds of 50 ms, then the last third requests wait out the 1 s period: "
            f"{IDEAL:.2f} s. Peer: tasks take a `Semaphore(8)` first and then wait on the same "
            f"kind of limiter inside `get_document`, idling slots. Server-side 429s: ours "
            f"{mine['server_429']:.0f}, peer {theirs['server_429']:.0f}; images: ours "
            f"{mine['ok']:.0f}, peer {theirs['ok']:.0f}.",
        )
    ]


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    emit(asyncio.run(measure(args.quick)), args.json)


if __name__ == "__main__":
    main()
