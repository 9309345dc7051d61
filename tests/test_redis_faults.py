"""RedisStore when Redis misbehaves for real: killed, frozen, slow, restarted empty.

Each test starts its own redis-server (the faults would spoil a shared one)
and runs real acquires through :class:`RateLimiter` on real time, with
short store timeouts and periods so that each takes a few seconds. Through
every fault the limiter answers with typed errors only, grants nothing over
the limit in any window, and recovers by itself.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import anyio
import pytest
import redis.asyncio as aredis

from idme_passback import (
    Grant,
    LimiterTimeoutError,
    LimiterUnavailableError,
    RateLimiter,
    RedisStore,
)

from ._redis import DelayProxy, RedisNode, over_the_limit, paused

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client


@pytest.fixture
def node() -> Iterator[RedisNode]:
    with RedisNode() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(4)}:"


class Load:
    """Workers that acquire round-robin over documents, as a busy service would."""

    def __init__(self, limiters: list[RateLimiter], documents: int, *, timeout: float) -> None:
        self.limiters = limiters
        self.tokens = [f"doc-{i}" for i in range(documents)]
        self.timeout = timeout
        self.requests: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.errors: Counter[str] = Counter()
        self.granted_at: list[float] = []

    async def worker(self, limiter: RateLimiter, first: int, until: float) -> None:
        turn = first
        while time.monotonic() < until:
            token = self.tokens[turn % len(self.tokens)]
            turn += 1
            try:
                async with limiter.acquire(token, timeout=self.timeout) as permit:
                    sent = time.monotonic()
                    self.granted_at.append(sent)
                    await anyio.sleep(0.01)  # the request
                    await permit.complete()
                    self.requests[token].append((sent, time.monotonic()))
            except (LimiterUnavailableError, LimiterTimeoutError) as exc:
                self.errors[type(exc).__name__] += 1
                await anyio.sleep(0.05)  # the next request to the service, a moment later
            except Exception as exc:  # counted: the test fails on any
                self.errors[f"untyped {type(exc).__name__}"] += 1

    async def run(self, seconds: float, workers_each: int) -> None:
        until = time.monotonic() + seconds
        async with anyio.create_task_group() as group:
            for limiter in self.limiters:
                for first in range(workers_each):
                    group.start_soon(self.worker, limiter, first, until)

    def over_the_limit(self, limit: int, period: float) -> int:
        return sum(over_the_limit(r, limit, period) for r in self.requests.values())


async def test_a_killed_redis_gives_typed_errors_and_recovers_by_itself(
    node: RedisNode, prefix: str
) -> None:
    period = 0.5
    client = aredis.Redis.from_url(node.url)
    limiter = RateLimiter(
        2,
        period,
        store=RedisStore(client, prefix=prefix, assume_fresh=True),
        store_timeout=0.5,
    )
    load = Load([limiter], documents=10, timeout=2.0)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(load.run, 7.5, 10)
            await anyio.sleep(1.0)
            node.kill()
            killed = time.monotonic()
            await anyio.sleep(5.0)
            node.start()  # same port, empty: the store notices it forgot
            back = time.monotonic()
    finally:
        await client.aclose()
    assert not [kind for kind in load.errors if kind.startswith("untyped")], load.errors
    assert load.errors["LimiterUnavailableError"] > 0
    assert not [t for t in load.granted_at if killed < t < back]  # failed closed
    # Recovered by itself, after the one period the reset costs.
    assert [t for t in load.granted_at if t > back + period]
    assert load.over_the_limit(2, period) == 0


async def test_a_frozen_redis_cannot_hold_an_acquire_past_its_timeout(
    node: RedisNode, prefix: str
) -> None:
    client = aredis.Redis.from_url(node.url)
    limiter = RateLimiter(2, 60.0, store=RedisStore(client, prefix=prefix, assume_fresh=True))
    try:
        async with limiter.acquire("warm-up") as permit:  # connected, scripts loaded
            permit.not_sent()
        frozen = time.monotonic()
        with paused(node):  # SIGSTOP: connections hang, nothing is answered
            # Cancelling a caller interrupts the stalled call (only the short
            # clean-up is shielded).
            start = time.monotonic()
            with anyio.move_on_after(0.5):
                async with limiter.acquire("other-doc"):
                    pytest.fail("granted by a frozen store")
            assert time.monotonic() - start < 0.5 + 0.5 + 0.2
            # A timeout bounds every store call of the acquire, the retry of
            # that discard (still frozen) included.
            start = time.monotonic()
            with pytest.raises(LimiterTimeoutError):
                async with limiter.acquire("doc", timeout=1.0):
                    pytest.fail("granted by a frozen store")
            assert time.monotonic() - start < 1.4
            # A refresh's link is bounded by the store timeout too.
            hasty = RateLimiter(2, 60.0, store=limiter.store, store_timeout=0.5)
            start = time.monotonic()
            with pytest.raises(LimiterUnavailableError):
                await hasty.link("refreshed-doc", "doc")
            assert time.monotonic() - start < 1.0
            await anyio.sleep(max(0.0, frozen + 3.0 - time.monotonic()))
        # Thawed, Redis runs the reserves it was sent while frozen; their
        # callers are gone, and the discards kept for them win: both
        # documents have their whole budget within moments.
        start = time.monotonic()
        for token in ("doc", "doc", "other-doc", "other-doc"):
            async with limiter.acquire(token, timeout=3.0) as permit:
                permit.not_sent()
        assert time.monotonic() - start < 3.0
        for token in ("doc", "other-doc"):
            store = RedisStore(client, prefix=prefix)
            answers = [
                await store.reserve(token, reservation=secrets.token_hex(8), limit=2, period=60.0)
                for _ in range(2)
            ]
            assert all(isinstance(answer, Grant) for answer in answers), token
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "delay",
    [
        pytest.param(0.05, id="discarded at once"),
        pytest.param(0.5, id="too slow to wait for: discarded by the next acquire"),
    ],
)
async def test_a_caller_cancelled_mid_reserve_strands_nothing(
    node: RedisNode, prefix: str, delay: float
) -> None:
    async with DelayProxy(node.port) as proxy:
        slow = aredis.Redis(port=proxy.port)
        direct = aredis.Redis(port=node.port)
        store = RedisStore(slow, prefix=prefix, assume_fresh=True)
        limiter = RateLimiter(1, 60.0, store=store)
        other_process = RedisStore(direct, prefix=prefix)

        async def usable_elsewhere() -> bool:
            answer = await other_process.reserve(
                "doc", reservation=secrets.token_hex(8), limit=1, period=60.0
            )
            if isinstance(answer, Grant):
                await other_process.release(answer, sent=False, period=60.0)
            return isinstance(answer, Grant)

        try:
            async with limiter.acquire("warm-up") as permit:  # connected, scripts loaded
                permit.not_sent()
            await store.discard("warm-up", reservation=secrets.token_hex(8))
            proxy.delay = delay  # every reply from now on comes late

            async def fetch() -> None:
                async with limiter.acquire("doc"):
                    pytest.fail("the reply could not have come yet")

            start = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(fetch(), 0.05)  # fires mid-round-trip
            assert time.monotonic() - start < 0.05 + 0.5 + 0.2  # the clean-up is bounded
            # Redis made the reservation (requests are not delayed). A discard
            # that fits in the clean-up (a new connection and the call: four
            # round trips) frees it at once; a slower one is kept, and this
            # process's next acquire sends it first.
            assert await usable_elsewhere() is (4 * delay < 0.5)
            start = time.monotonic()
            async with limiter.acquire("doc", timeout=5.0) as permit:  # limit 1
                permit.not_sent()
            # A new connection (three round trips), the discard, the reserve, the release.
            assert time.monotonic() - start < 7 * delay + 0.5
            assert await usable_elsewhere()
        finally:
            await slow.aclose()
            await direct.aclose()


async def test_a_restart_without_persistence_keeps_every_window(
    node: RedisNode, prefix: str
) -> None:
    period = 1.0
    clients = [aredis.Redis.from_url(node.url) for _ in range(3)]
    # Three processes, each its own connection, store and limiter.
    limiters = [
        RateLimiter(
            2,
            period,
            store=RedisStore(client, prefix=prefix, assume_fresh=True),
            store_timeout=0.5,
        )
        for client in clients
    ]
    load = Load(limiters, documents=10, timeout=1.5)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(load.run, 3.5, 10)
            await anyio.sleep(1.2)
            node.restart()  # every budget forgotten, mid-window
            back = time.monotonic()
    finally:
        for client in clients:
            await client.aclose()
    assert not [kind for kind in load.errors if kind.startswith("untyped")], load.errors
    before = [t for t in load.granted_at if t < back]
    after = [t for t in load.granted_at if t > back]
    assert len(before) >= 20
    assert after
    assert min(after) >= back + period - 0.05  # one period's pause, from the moment it was seen
    assert load.over_the_limit(2, period) == 0


async def test_a_release_redis_missed_is_retried_not_stranded_for_the_lease(
    node: RedisNode, prefix: str
) -> None:
    period = 1.0
    client = aredis.Redis.from_url(node.url)
    limiter = RateLimiter(1, period, store=RedisStore(client, prefix=prefix, assume_fresh=True))
    try:
        async with limiter.acquire("doc") as permit:
            with paused(node):
                # The response is here, Redis is not: complete() neither raises
                # nor holds the caller past its short clean-up.
                start = time.monotonic()
                await permit.complete()
                assert time.monotonic() - start < 0.5 + 0.2
                await anyio.sleep(0.5)
        answered = time.monotonic()
        # The kept release goes first: the token cools one period from then,
        # instead of waiting out the lease (600 s) in flight.
        async with limiter.acquire("doc", timeout=3.0) as permit:
            permit.not_sent()
        assert answered + period - 0.1 <= time.monotonic() < answered + period + 1.0
    finally:
        await client.aclose()
