"""Row 1: what ``client.get_document`` adds to a raw httpx POST, over loopback and in memory.

Row 1 (the target): both sides POST to one uvicorn process serving the fake
on 127.0.0.1 (a 2 KB JPEG), calls interleaved one by one, wall time per call:
where a user's cost actually is. Row 1m (no target): both sides hit one
``httpx.MockTransport`` answering a 2 KB JPEG; each call uses a fresh
document token from a precomputed list, so the client's
default limiter (2 per 60 s per document) never waits, and the raw side
gets the same URLs. Calls run one after another (latency, not throughput),
in rounds that alternate which side goes first; each side's best round counts.
Time is the process's CPU time (``time.process_time``): both sides are
CPU-bound on an in-memory transport, and CPU time leaves out the moments a
shared machine spends on other work.

``python -m benchmarks.overhead --profile`` prints where the client's time goes.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import sys
import time
from collections.abc import Callable, Iterator

import httpx

from benchmarks._util import (
    API_TOKEN,
    DOCUMENT_PATH,
    FAKE_BASE,
    Row,
    ServedFake,
    emit,
    jpeg_body,
    parser,
)
from idme_passback import PassbackClient, RateLimiter

BODY = jpeg_body(2048)


def _handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=BODY, headers={"content-type": "image/jpeg"})


async def _ours(client: PassbackClient, tokens: Iterator[str], n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        await client.get_document(next(tokens))
    return (time.process_time() - start) / n


#: ``call(index)`` -> the token ours asks for, the URL the raw side posts.
Call = Callable[[int], tuple[str, str]]
Clock = Callable[[], float]


def _fresh(tokens: Iterator[str]) -> Call:
    """A fresh token for each side of each call (in memory: the default limiter never waits)."""

    def call(index: int) -> tuple[str, str]:
        token = next(tokens)
        # The fastest raw form: the whole URL as one string, as the client builds it.
        return token, f"{FAKE_BASE}{DOCUMENT_PATH}{next(tokens)}?token={API_TOKEN}"

    return call


def _cycled(base: str, tokens: list[str]) -> Call:
    """The server's tokens in turn, the same one for both sides of a call (over loopback)."""

    def call(index: int) -> tuple[str, str]:
        token = tokens[index % len(tokens)]
        return token, f"{base}{DOCUMENT_PATH}{token}?token={API_TOKEN}"

    return call


async def _paired(
    client: PassbackClient, http: httpx.AsyncClient, n: int, *, clock: Clock, call: Call
) -> tuple[float, float]:
    """Time ``n`` calls of each side interleaved call by call on ``clock``; seconds per call.

    Interleaving puts both sides under the same conditions at every moment, so
    a noisy neighbour slows both alike instead of whichever round it hit. The
    side that goes first alternates.
    """
    ours = raw = 0.0
    for index in range(n):
        token, url = call(index)
        if index % 2:
            start = clock()
            await client.get_document(token)
            middle = clock()
            response = await http.post(url)
            await response.aread()
            end = clock()
            ours += middle - start
            raw += end - middle
        else:
            start = clock()
            response = await http.post(url)
            await response.aread()
            middle = clock()
            await client.get_document(token)
            end = clock()
            raw += middle - start
            ours += end - middle
    return ours / n, raw / n


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


async def _rounds(
    client: PassbackClient,
    http: httpx.AsyncClient,
    rounds: int,
    n: int,
    *,
    clock: Clock,
    call: Call,
) -> tuple[list[float], float, float]:
    """200 calls a side to warm up, then ``rounds`` rounds of ``n`` :func:`_paired` calls.

    Returns each round's ratio (ours / raw) and each side's median µs per call.
    """
    await _paired(client, http, 200, clock=clock, call=call)
    ratios: list[float] = []
    ours: list[float] = []
    raw: list[float] = []
    for _ in range(rounds):
        gc.collect()
        mine, theirs = await _paired(client, http, n, clock=clock, call=call)
        ours.append(mine)
        raw.append(theirs)
        ratios.append(mine / theirs)
    return ratios, _median(ours) * 1e6, _median(raw) * 1e6


async def measure_loopback(quick: bool) -> Row:
    n, rounds = (1000, 5) if quick else (3000, 9)
    with ServedFake(limit=10**9, documents=50) as served:
        base = served.base_url
        # The limiter runs its whole path; its limit is raised so the tokens can repeat.
        limiter = RateLimiter(limit=10**9, period=60.0)
        async with (
            PassbackClient(API_TOKEN, base_url=base, limiter=limiter) as client,
            httpx.AsyncClient() as http,
        ):
            ratios, median_ours, median_raw = await _rounds(
                client, http, rounds, n, clock=time.perf_counter, call=_cycled(base, served.tokens)
            )
    overhead = _median(ratios)
    return Row(
        "1",
        "client overhead: `get_document` vs raw httpx POST (uvicorn on loopback)",
        f"{median_ours:.0f} µs/req (+{median_ours - median_raw:.0f} µs)",
        f"{median_raw:.0f} µs/req",
        f"{overhead:.2f}x",
        "≤ 1.05x",
        "1.00x (raw httpx to the same server)",
        overhead <= 1.05,
        f"One uvicorn process serving the fake on 127.0.0.1 (2 KB JPEG); calls interleaved "
        f"one by one, wall time per call; the median of {rounds} rounds of {n} calls per "
        f"side (round ratios {min(ratios):.2f}x to {max(ratios):.2f}x). Ours runs its "
        "whole path: token and size checks, the limiter (its limit raised so 50 tokens "
        "can repeat), the deadline, classification and the image checks; the raw side "
        "is `httpx.AsyncClient.post(url)` + `aread()`.",
    )


async def measure(quick: bool) -> list[Row]:
    loopback = await measure_loopback(quick)
    n, rounds = (2000, 5) if quick else (5000, 9)
    transport = httpx.MockTransport(_handler)
    tokens = iter(f"{i:032x}" for i in range(10**9))
    async with (
        PassbackClient(
            API_TOKEN, base_url=FAKE_BASE, transport=transport, limiter=RateLimiter()
        ) as client,
        httpx.AsyncClient(transport=transport) as http,
    ):
        ratios, median_ours, median_raw = await _rounds(
            client, http, rounds, n, clock=time.process_time, call=_fresh(tokens)
        )
    overhead = _median(ratios)
    return [
        loopback,
        Row(
            "1m",
            "client overhead: `get_document` vs raw httpx POST (in-memory transport)",
            f"{median_ours:.0f} µs/req (+{median_ours - median_raw:.0f} µs)",
            f"{median_raw:.0f} µs/req",
            f"{overhead:.2f}x",
            "none (reported)",
            "1.00x (raw httpx on the same transport)",
            None,
            f"Calls interleaved one by one (alternating which side goes first), CPU time "
            f"per call; the median of {rounds} rounds of {n} calls per side (round ratios "
            f"{min(ratios):.2f}x to {max(ratios):.2f}x). Limiter: the client's default "
            "`RateLimiter()` (2 per 60 s per document) with a fresh token per call, so it "
            "never waits; the raw side is `httpx.AsyncClient.post(url_with_query)` + "
            "`aread()` on the same `MockTransport` (2 KB JPEG body).",
        ),
    ]


async def profile(n: int = 5000) -> None:
    """Print the client's hottest functions (cProfile) over ``n`` calls."""
    transport = httpx.MockTransport(_handler)
    tokens = iter(f"{i:032x}" for i in range(10**9))
    async with PassbackClient(API_TOKEN, base_url=FAKE_BASE, transport=transport) as client:
        await _ours(client, tokens, 200)
        profiler = cProfile.Profile()
        profiler.enable()
        await _ours(client, tokens, n)
        profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(r"idme_passback|httpx/_urls|anyio", 30)
    stats.sort_stats("tottime").print_stats(25)


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--profile", action="store_true", help="profile the client instead")
    args = p.parse_args()
    if args.profile:
        asyncio.run(profile())
        return
    emit(asyncio.run(measure(args.quick)), args.json)


if __name__ == "__main__":
    main()
