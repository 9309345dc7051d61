"""Row 3c: memory left behind by one-shot keys once their period has passed.

Ours: a ``RateLimiter(2, 60.0)`` on a ``FakeClock``; each key is acquired
and completed once; then the clock moves past the period and one more
acquire sweeps. The peer keeps one ``aiolimiter.AsyncLimiter(2, 60.0)`` per
key in a dict (entered once each), which nothing ever shrinks. Each side
runs in its own fresh process; RSS is read after ``gc.collect()`` and
glibc's ``malloc_trim(0)``, so freed heap does not count.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from benchmarks._util import (
    Row,
    RssSampler,
    emit,
    emit_result,
    mib,
    parser,
    rss,
    run_child,
    settle_memory,
)

PERIOD = 60.0
TARGET = 5 * 2**20


def _key(i: int) -> str:
    return f"{i:032x}"


async def ours(n: int) -> dict[str, Any]:
    from idme_passback import RateLimiter
    from idme_passback.testing import FakeClock

    clock = FakeClock()
    limiter = RateLimiter(2, PERIOD, clock=clock)
    store: Any = limiter.store
    settle_memory()
    with RssSampler(interval=0.05) as sampler:
        start = time.perf_counter()
        for i in range(n):
            async with limiter.acquire(_key(i)) as permit:
                await permit.complete()
        elapsed = time.perf_counter() - start
        held = len(store)
        await clock.advance(PERIOD + 1.0)
        async with limiter.acquire("one-more-key") as permit:
            await permit.complete()
    settle_memory()
    after = rss()
    return {
        "growth": after - sampler.baseline,
        "peak": sampler.growth,
        "held_before_sweep": held,
        "held_after": len(store),
        # private, for the note only: the index tables of the store's dicts
        "dict_bytes": sys.getsizeof(store._buckets) + sys.getsizeof(store._aliases),
        "seconds": elapsed,
    }


async def peer(n: int) -> dict[str, Any]:
    from aiolimiter import AsyncLimiter

    limiters: dict[str, AsyncLimiter] = {}
    settle_memory()
    with RssSampler(interval=0.05) as sampler:
        start = time.perf_counter()
        for i in range(n):
            limiter = limiters[_key(i)] = AsyncLimiter(2, PERIOD)
            async with limiter:
                pass
        elapsed = time.perf_counter() - start
    settle_memory()
    after = rss()
    return {
        "growth": after - sampler.baseline,
        "peak": sampler.growth,
        "held_after": len(limiters),
        "seconds": elapsed,
    }


def measure(quick: bool) -> list[Row]:
    n = 1_000_000
    mine = run_child("limiter_memory", ["--variant", "ours", "--keys", str(n)], timeout=600)
    theirs = run_child("limiter_memory", ["--variant", "peer", "--keys", str(n)], timeout=600)
    return [
        Row(
            "3c",
            f"limiter memory after {n:,} one-shot keys, period passed",
            f"{mib(mine['growth'])} RSS ({mine['held_after']} key left; peak {mib(mine['peak'])})",
            f"aiolimiter dict: {mib(theirs['growth'])} ({theirs['held_after']:,} limiters kept)",
            f"{mine['growth'] / theirs['growth']:.2f}x" if theirs["growth"] else "n/a",
            "≤ +5 MiB after the sweep",
            "0 keys held once every period has passed",
            mine["growth"] <= TARGET,
            f"Ours on a `FakeClock`: {n:,} acquire+complete on distinct keys "
            f"({mine['seconds']:.1f} s), {mine['held_before_sweep']:,} keys held before the "
            f"sweep, then `advance({PERIOD + 1:g})` and one more acquire, which sweeps. RSS after "
            "`gc.collect()` + `malloc_trim(0)`, each side in a fresh process. What stays: "
            f"the store's dict index tables, {mine['dict_bytes'] / 2**20:.1f} MiB "
            "(`sys.getsizeof`; a dict never shrinks on deletion). Peer: one "
            f"`AsyncLimiter(2, {PERIOD:g})` per key, entered once ({theirs['seconds']:.1f} s).",
        )
    ]


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--keys", type=int, default=1_000_000)
    args = p.parse_args()
    if args.variant:
        run = {"ours": ours, "peer": peer}[args.variant]
        emit_result(asyncio.run(run(args.keys)))
        return
    emit(measure(args.quick), args.json)


if __name__ == "__main__":
    main()
