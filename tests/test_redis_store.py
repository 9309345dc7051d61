"""What only the Redis store has to prove: many processes, the server's clock, expiry."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from idme_passback import Grant, RateLimiter, RedisStore
from idme_passback.testing import FakeClock

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client


@pytest.fixture
async def connection(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(4)}:"


async def test_two_processes_share_one_budget(redis_url: str, prefix: str) -> None:
    # Two connections and two limiters stand for two processes.
    one, two = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    try:
        first = RedisStore(one, prefix=prefix)
        second = RedisStore(two, prefix=prefix)
        granted = [await first.reserve("doc", 2, 60.0), await second.reserve("doc", 2, 60.0)]
        assert all(isinstance(g, Grant) for g in granted)
        delay = await second.reserve("doc", 2, 60.0)
        assert isinstance(delay, float)
        assert 59.0 <= delay <= 60.0  # measured on the server's TIME
        assert isinstance(await first.reserve("other-doc", 2, 60.0), Grant)
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_dead_processes_reservation_expires(connection: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    store = RedisStore(connection, prefix=prefix, lease=300.0, clock=clock)
    assert isinstance(await store.reserve("doc", 1, 60.0), Grant)
    # The process holding that grant dies: nobody ever releases it.
    await clock.advance(300.0 + 59.0)
    assert isinstance(await store.reserve("doc", 1, 60.0), float)
    await clock.advance(1.0)
    assert isinstance(await store.reserve("doc", 1, 60.0), Grant)


async def test_every_key_carries_an_expiry(connection: redis.Redis, prefix: str) -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 60.0, store=RedisStore(connection, prefix=prefix, clock=clock))
    async with limiter.acquire("doc") as permit:
        await permit.complete(hold=30.0)
    await limiter.link("new-doc", "doc")
    keys = [key async for key in connection.scan_iter(match=f"{prefix}*")]
    assert len(keys) == 3  # the bucket, the hold and the alias
    for key in keys:
        ttl = await connection.pttl(key)
        assert 0 < ttl <= 86_400_000 + 1000
    bucket = f"{prefix}b:{hashlib.sha256(b'doc').hexdigest()}".encode()
    assert 59_000 < await connection.pttl(bucket) <= 61_000


async def test_an_unsent_request_leaves_nothing_in_redis(
    connection: redis.Redis, prefix: str
) -> None:
    limiter = RateLimiter(2, 60.0, store=RedisStore(connection, prefix=prefix))
    async with limiter.acquire("doc") as permit:
        permit.not_sent()
    assert [key async for key in connection.scan_iter(match=f"{prefix}*")] == []


async def test_a_response_after_the_lease_ran_out_still_cools(
    connection: redis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    store = RedisStore(connection, prefix=prefix, lease=10.0, clock=clock)
    late = await store.reserve("doc", 2, 60.0)
    assert isinstance(late, Grant)
    await clock.advance(71.0)  # past lease + period: the reservation is presumed dead
    assert isinstance(await store.reserve("doc", 2, 60.0), Grant)
    # ...but its response arrives after all: the server counted it.
    await store.release(late, sent=True, period=60.0)
    assert isinstance(await store.reserve("doc", 2, 60.0), float)


async def test_redis_never_sees_a_document_token(connection: redis.Redis, prefix: str) -> None:
    token = "d9ec9c13-f3e6-4b2e-a34f-e3f45b21206f"
    limiter = RateLimiter(2, 60.0, store=RedisStore(connection, prefix=prefix))
    await limiter.link("8003c78ead9641bcbd284e97acac3f85", token)
    async with limiter.acquire(token) as permit:
        await permit.complete(hold=5.0)
    stored = [key async for key in connection.scan_iter(match=f"{prefix}*")]
    stored += [await connection.get(key) or b"" for key in stored if b":a:" in key]
    assert len(stored) == 4
    everything = b" ".join(stored)
    assert token.encode()[:8] not in everything
    assert b"8003c78e" not in everything
