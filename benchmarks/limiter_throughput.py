"""Rows 3a, 3b: acquire-and-complete operations per second, against two peers.

One operation is ``async with limiter.acquire(key) as p: await p.complete()``
(ours), ``async with AsyncLimiter:`` on one aiolimiter limiter per key kept
in a dict, or ``await Limiter.try_acquire_async(key)`` on PyrateLimiter 4
with the per-name ``BucketFactory`` its documentation shows (one
``InMemoryBucket`` per key, created on first use). Nothing ever waits:

* 3a, unique keys: every operation names a new key (limit 2 per 60 s).
* 3b, a hot set of 100 keys, cycled, with a limit of 10**9 per 1 s.

Operations run one after another on one event loop; best of a few rounds,
each round on fresh limiters.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiolimiter import AsyncLimiter
from pyrate_limiter import (
    AbstractBucket,
    BucketFactory,
    Duration,
    InMemoryBucket,
    Limiter,
    MonotonicClock,
    Rate,
    RateItem,
)

from benchmarks._util import Row, emit, hex_tokens, parser
from idme_passback import RateLimiter

HOT_KEYS = 100
HOT_LIMIT = 10**9


class PerNameFactory(BucketFactory):
    """PyrateLimiter's documented per-name routing: one in-memory bucket per key."""

    def __init__(self, rate: Rate) -> None:
        self.clock = MonotonicClock()
        self.rate = rate
        self.buckets: dict[str, AbstractBucket] = {}

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        return RateItem(name, self.clock.now(), weight=weight)

    def get(self, item: RateItem) -> AbstractBucket:
        bucket = self.buckets.get(item.name)
        if bucket is None:
            bucket = self.buckets[item.name] = self.create(InMemoryBucket, [self.rate])
        return bucket


Runner = Callable[[list[str], int, float], Awaitable[float]]


async def ours(keys: list[str], limit: int, period: float) -> float:
    limiter = RateLimiter(limit, period)
    start = time.perf_counter()
    for key in keys:
        async with limiter.acquire(key) as permit:
            await permit.complete()
    return time.perf_counter() - start


async def aiolimiter_dict(keys: list[str], limit: int, period: float) -> float:
    limiters: dict[str, AsyncLimiter] = {}
    start = time.perf_counter()
    for key in keys:
        limiter = limiters.get(key)
        if limiter is None:
            limiter = limiters[key] = AsyncLimiter(limit, period)
        async with limiter:
            pass
    return time.perf_counter() - start


async def pyrate(keys: list[str], limit: int, period: float) -> float:
    rate = Rate(limit, Duration.SECOND * period)
    limiter = Limiter(PerNameFactory(rate))
    try:
        start = time.perf_counter()
        for key in keys:
            if not await limiter.try_acquire_async(key):
                raise RuntimeError("pyrate refused an acquire that should pass")
        return time.perf_counter() - start
    finally:
        limiter.close()


PEERS: dict[str, Runner] = {"aiolimiter": aiolimiter_dict, "pyrate-limiter": pyrate}


async def _best(runner: Runner, make_keys: Callable[[int], list[str]], **kw: Any) -> float:
    rounds: int = kw.pop("rounds")
    n: int = kw.pop("n")
    best = float("inf")
    for index in range(rounds):
        keys = make_keys(index)
        gc.collect()
        best = min(best, await runner(keys, kw["limit"], kw["period"]))
    return n / best


async def measure(quick: bool) -> list[Row]:
    n, rounds = (30_000, 3) if quick else (200_000, 5)
    cases = [
        (
            "3a",
            "limiter ops/s, unique keys (acquire + complete)",
            lambda i: hex_tokens(n, prefix=f"r{i}-"),
            {"limit": 2, "period": 60.0},
            "every operation a new key, limit 2 per 60 s",
        ),
        (
            "3b",
            "limiter ops/s, hot set of 100 keys, huge limit",
            lambda _i: [f"hot-{i % HOT_KEYS:03d}" for i in range(n)],
            {"limit": HOT_LIMIT, "period": 1.0},
            f"100 keys cycled, limit {HOT_LIMIT:.0e} per 1 s, so nothing waits; ours "
            "keeps every completed token cooling for 1 s (~ops/s / 100 per key)",
        ),
    ]
    rows = []
    for row_id, name, make_keys, config, what in cases:
        kw = {"rounds": rounds, "n": n, **config}
        mine = await _best(ours, make_keys, **kw)
        peers = {label: await _best(run, make_keys, **kw) for label, run in PEERS.items()}
        best_label = max(peers, key=lambda k: peers[k])
        rows.append(
            Row(
                row_id,
                name,
                f"{mine:,.0f} ops/s",
                ", ".join(f"{label} {value:,.0f}" for label, value in peers.items()),
                f"{mine / peers[best_label]:.2f}x best ({best_label})",
                "≥ 1.00x best peer",
                "none (CPU-bound, no waiting)",
                mine >= peers[best_label],
                f"{what}. Best of {rounds} rounds of {n:,} sequential operations, fresh "
                "limiters each round. Peers: one `aiolimiter.AsyncLimiter` per key in a dict "
                "(`async with limiter:`); PyrateLimiter "
                "`Limiter(PerNameFactory).try_acquire_async(key)` with an `InMemoryBucket` "
                "per key (its documented per-name factory).",
            )
        )
    return rows


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    emit(asyncio.run(measure(args.quick)), args.json)


if __name__ == "__main__":
    main()
