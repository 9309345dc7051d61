"""What only the Redis store has to prove, on one real redis-server.

Many processes, the server's clock, expiry, reservations named by the
limiter (discarded at once, even before they arrive), clamped holds, typed
errors, and the epochs that notice when Redis forgot. The property suite in
``test_limiter.py`` runs the limiter's contract on this store too; the
cluster and the faults (kills, stalls, restarts) have their own files.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import socket
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from idme_passback import (
    ConfigurationError,
    Denied,
    Grant,
    LimiterTimeoutError,
    LimiterUnavailableError,
    RateLimiter,
    RedisStore,
)
from idme_passback.testing import FakeClock

pytestmark = pytest.mark.anyio

TOKEN = "d9ec9c13-f3e6-4b2e-a34f-e3f45b21206f"
REFRESHED = "8003c78ead9641bcbd284e97acac3f85"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client


@pytest.fixture
async def connection(redis_url: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(4)}:"


def ids() -> str:
    return secrets.token_hex(8)


async def keys_of(connection: aredis.Redis, prefix: str) -> list[bytes]:
    return [key async for key in connection.scan_iter(match=f"{prefix}*")]


async def forget(connection: aredis.Redis, prefix: str) -> None:
    """What a restart without persistence does to this store: every key is gone."""
    for key in await keys_of(connection, prefix):
        await connection.delete(key)


async def test_two_processes_share_one_budget(redis_url: str, prefix: str) -> None:
    # Two connections and two stores stand for two processes.
    one, two = aredis.Redis.from_url(redis_url), aredis.Redis.from_url(redis_url)
    try:
        first = RedisStore(one, prefix=prefix, assume_fresh=True)
        second = RedisStore(two, prefix=prefix)
        granted = [
            await first.reserve("doc", reservation=ids(), limit=2, period=60.0),
            await second.reserve("doc", reservation=ids(), limit=2, period=60.0),
        ]
        assert all(isinstance(g, Grant) for g in granted)
        denied = await second.reserve("doc", reservation=ids(), limit=2, period=60.0)
        assert isinstance(denied, Denied)
        assert 59.0 <= denied.delay <= 60.0  # measured on the server's TIME
        assert isinstance(
            await first.reserve("other-doc", reservation=ids(), limit=2, period=60.0), Grant
        )
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_client_that_decodes_responses_shares_the_same_budget(
    redis_url: str, prefix: str
) -> None:
    raw, decoding = (
        aredis.Redis.from_url(redis_url),
        aredis.Redis.from_url(redis_url, decode_responses=True),
    )
    try:
        first = RateLimiter(2, 60.0, store=RedisStore(raw, prefix=prefix, assume_fresh=True))
        second = RateLimiter(2, 60.0, store=RedisStore(decoding, prefix=prefix))
        async with first.acquire(TOKEN) as permit:
            await permit.complete()
        await first.link(REFRESHED, TOKEN)
        async with second.acquire(REFRESHED, timeout=1.0) as permit:
            await permit.complete()
        with pytest.raises(LimiterTimeoutError):
            async with second.acquire(REFRESHED, timeout=0.2):
                pytest.fail("a third request in the period")
    finally:
        await raw.aclose()
        await decoding.aclose()


async def test_a_dead_processes_reservation_expires(connection: aredis.Redis, prefix: str) -> None:
    clock = FakeClock()
    store = RedisStore(connection, prefix=prefix, lease=300.0, clock=clock, assume_fresh=True)
    assert isinstance(await store.reserve("doc", reservation=ids(), limit=1, period=60.0), Grant)
    # The process holding that grant dies: nobody ever releases it.
    await clock.advance(300.0 + 59.0)
    assert isinstance(await store.reserve("doc", reservation=ids(), limit=1, period=60.0), Denied)
    await clock.advance(1.0)
    assert isinstance(await store.reserve("doc", reservation=ids(), limit=1, period=60.0), Grant)


async def test_every_key_but_the_group_epochs_carries_an_expiry(
    connection: aredis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    store = RedisStore(connection, prefix=prefix, clock=clock, assume_fresh=True)
    limiter = RateLimiter(2, 60.0, store=store, clock=clock)
    async with limiter.acquire("doc") as permit:
        await permit.complete(hold=30.0)
    await limiter.link("new-doc", "doc")
    await store.discard("doc", reservation=ids())
    stored = await keys_of(connection, prefix)
    epochs = [key for key in stored if key.endswith(b":e")]
    assert len(epochs) == 1  # one per group of documents: at most 4096 in all
    rest = [key for key in stored if key not in epochs]
    assert len(rest) == 4  # the bucket, the hold, the alias and the discarded ids
    for key in rest:
        assert 0 < await connection.pttl(key) <= 86_400_000 + 1000
    digest = hashlib.sha256(b"doc").hexdigest()
    bucket = f"{prefix}{{{digest[:3]}}}:b:{digest}".encode()
    assert 59_000 < await connection.pttl(bucket) <= 61_000


async def test_an_unsent_request_leaves_only_its_groups_epoch(
    connection: aredis.Redis, prefix: str
) -> None:
    limiter = RateLimiter(2, 60.0, store=RedisStore(connection, prefix=prefix, assume_fresh=True))
    async with limiter.acquire("doc") as permit:
        permit.not_sent()
    assert [key[-2:] for key in await keys_of(connection, prefix)] == [b":e"]


async def test_a_response_after_the_lease_ran_out_still_cools(
    connection: aredis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    store = RedisStore(connection, prefix=prefix, lease=10.0, clock=clock, assume_fresh=True)
    late = await store.reserve("doc", reservation=ids(), limit=2, period=60.0)
    assert isinstance(late, Grant)
    await clock.advance(71.0)  # past lease + period: the reservation is presumed dead
    assert isinstance(await store.reserve("doc", reservation=ids(), limit=2, period=60.0), Grant)
    # ...but its response arrives after all: the server counted it.
    await store.release(late, sent=True, period=60.0)
    assert isinstance(await store.reserve("doc", reservation=ids(), limit=2, period=60.0), Denied)


async def test_redis_never_sees_a_document_token(connection: aredis.Redis, prefix: str) -> None:
    limiter = RateLimiter(2, 60.0, store=RedisStore(connection, prefix=prefix, assume_fresh=True))
    await limiter.link(REFRESHED, TOKEN)
    async with limiter.acquire(TOKEN) as permit:
        await permit.complete(hold=5.0)
    stored = await keys_of(connection, prefix)
    assert len(stored) == 4  # the bucket, the hold, the alias, the epoch
    everything = b" ".join(stored)
    for key in stored:
        kind = await connection.type(key)
        if kind == b"string":
            everything += await connection.get(key) or b""
        elif kind == b"hash":
            everything += b" ".join((await connection.hgetall(key)).values())
        else:
            everything += b" ".join(await connection.zrange(key, 0, -1))
    assert TOKEN.encode()[:8] not in everything
    assert REFRESHED.encode()[:8] not in everything


async def test_a_refreshed_token_shares_its_documents_budget_across_processes(
    redis_url: str, prefix: str
) -> None:
    one, two = aredis.Redis.from_url(redis_url), aredis.Redis.from_url(redis_url)
    try:
        refresher = RedisStore(one, prefix=prefix, assume_fresh=True)
        other = RedisStore(two, prefix=prefix)  # knows nothing of the refresh itself
        first = await refresher.reserve(TOKEN, reservation=ids(), limit=2, period=60.0)
        await refresher.link(REFRESHED, TOKEN, 600.0)
        second = await other.reserve(REFRESHED, reservation=ids(), limit=2, period=60.0)
        assert isinstance(first, Grant)
        assert isinstance(second, Grant)
        assert second.key == first.key  # the root's bucket
        assert isinstance(
            await other.reserve(REFRESHED, reservation=ids(), limit=2, period=60.0), Denied
        )
        # A discard named by the refreshed token reaches the root's bucket too.
        await other.discard(REFRESHED, reservation=second.reservation)
        assert isinstance(
            await refresher.reserve(TOKEN, reservation=ids(), limit=2, period=60.0), Grant
        )
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_discarded_reservation_is_free_at_once(
    connection: aredis.Redis, prefix: str
) -> None:
    store = RedisStore(connection, prefix=prefix, assume_fresh=True)
    lost = ids()
    assert isinstance(await store.reserve("doc", reservation=lost, limit=1, period=60.0), Grant)
    # The caller never heard the answer: it names the reservation it chose.
    await store.discard("doc", reservation=lost)
    assert isinstance(await store.reserve("doc", reservation=ids(), limit=1, period=60.0), Grant)


async def test_a_discard_that_overtakes_its_reservation_forbids_it(
    connection: aredis.Redis, prefix: str
) -> None:
    store = RedisStore(connection, prefix=prefix, assume_fresh=True)
    lost = ids()
    await store.discard("doc", reservation=lost)
    # The reserve arrives late (another connection): it must not take a token.
    assert isinstance(await store.reserve("doc", reservation=lost, limit=1, period=60.0), Denied)
    assert isinstance(await store.reserve("doc", reservation=ids(), limit=1, period=60.0), Grant)


@pytest.mark.parametrize("hold", [99_999_999_999_999.0, math.inf, 1e308])
async def test_a_huge_hold_is_clamped_to_a_day(
    connection: aredis.Redis, prefix: str, hold: float
) -> None:
    store = RedisStore(connection, prefix=prefix, assume_fresh=True)
    grant = await store.reserve("doc", reservation=ids(), limit=2, period=60.0)
    assert isinstance(grant, Grant)
    await store.release(grant, sent=True, period=60.0, hold=hold)
    denied = await store.reserve("doc", reservation=ids(), limit=2, period=60.0)
    assert isinstance(denied, Denied)
    assert 86_399.0 <= denied.delay <= 86_400.0


@pytest.mark.parametrize("hold", [math.nan, -5.0, 0.0])
async def test_a_meaningless_hold_holds_nothing(
    connection: aredis.Redis, prefix: str, hold: float
) -> None:
    store = RedisStore(connection, prefix=prefix, assume_fresh=True)
    grant = await store.reserve("doc", reservation=ids(), limit=2, period=60.0)
    assert isinstance(grant, Grant)
    await store.release(grant, sent=True, period=60.0, hold=hold)
    assert isinstance(await store.reserve("doc", reservation=ids(), limit=2, period=60.0), Grant)


async def test_a_huge_retry_after_through_the_limiter_reaches_redis_clamped(
    connection: aredis.Redis, prefix: str
) -> None:
    limiter = RateLimiter(2, 60.0, store=RedisStore(connection, prefix=prefix, assume_fresh=True))
    async with limiter.acquire("doc") as permit:
        await permit.complete(hold=99_999_999_999_999.0)
    holds = [key for key in await keys_of(connection, prefix) if b":h:" in key]
    assert len(holds) == 1
    assert 86_000_000 < await connection.pttl(holds[0]) <= 86_401_000


@pytest.mark.parametrize(
    "client",
    [
        pytest.param(redis.Redis, id="synchronous redis-py client"),
        pytest.param(lambda: aredis.Redis().pipeline(), id="asyncio pipeline"),
        pytest.param(object, id="anything else"),
    ],
)
def test_an_unsupported_client_is_refused_at_construction(client: object) -> None:
    with pytest.raises(ConfigurationError, match=r"RedisStore needs"):
        RedisStore(client())  # type: ignore[operator]


@pytest.mark.parametrize(
    "options", [{"prefix": "app:{mine}:"}, {"lease": 0.0}, {"lease": math.nan}]
)
def test_a_bad_option_is_refused_at_construction(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RedisStore(aredis.Redis(), **options)  # type: ignore[arg-type]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_every_redis_failure_is_a_limiter_unavailable_error() -> None:
    # No retries: each refusal is answered at once (the limiter's own bound is tested elsewhere).
    client = aredis.Redis(port=closed_port(), retry=Retry(NoBackoff(), 0))
    store = RedisStore(client)
    grant = Grant("0" * 64, ids())
    calls = [
        store.reserve(TOKEN, reservation=ids(), limit=2, period=60.0),
        store.release(grant, sent=True, period=60.0, hold=5.0),
        store.discard(TOKEN, reservation=ids()),
        store.link(REFRESHED, TOKEN, 60.0),
    ]
    try:
        for call in calls:
            with pytest.raises(LimiterUnavailableError) as caught:
                await call
            assert isinstance(caught.value.__cause__, redis.RedisError)
            assert TOKEN[:8] not in str(caught.value)
            assert REFRESHED[:8] not in str(caught.value)
        # Through the limiter: a typed error to acquire, nothing at all from a release.
        limiter = RateLimiter(2, 60.0, store=store, store_timeout=1.0)
        with pytest.raises(LimiterUnavailableError):
            async with limiter.acquire(TOKEN):
                pytest.fail("granted without a store")
        with pytest.raises(LimiterUnavailableError):
            await limiter.link(REFRESHED, TOKEN)
    finally:
        await client.aclose()


async def test_a_store_that_forgot_pauses_its_documents_for_one_period(
    connection: aredis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    store = RedisStore(connection, prefix=prefix, clock=clock, assume_fresh=True)
    limiter = RateLimiter(2, 60.0, store=store, clock=clock)
    async with limiter.acquire("doc") as permit:
        await permit.complete()
    await clock.advance(10.0)
    await forget(connection, prefix)  # Redis restarted without persistence
    # Its one request might be 10 s old: the whole period is paused, from now.
    denied = await store.reserve("doc", reservation=ids(), limit=2, period=60.0)
    assert denied == Denied(60.0)
    await clock.advance(60.0)
    assert isinstance(await store.reserve("doc", reservation=ids(), limit=2, period=60.0), Grant)


async def test_a_store_never_seen_pauses_its_first_use_unless_assumed_fresh(
    connection: aredis.Redis, prefix: str
) -> None:
    # An empty store looks exactly like one that forgot: by default, the first
    # use of each group of documents pauses it for one period.
    careful = RedisStore(connection, prefix=prefix)
    denied = await careful.reserve("doc", reservation=ids(), limit=2, period=60.0)
    assert isinstance(denied, Denied)
    assert 59.0 <= denied.delay <= 60.0
    trusting = RedisStore(connection, prefix=prefix + "new:", assume_fresh=True)
    assert isinstance(await trusting.reserve("doc", reservation=ids(), limit=2, period=60.0), Grant)
    # A test clock means a test, which starts on an empty prefix.
    on_test_time = RedisStore(connection, prefix=prefix + "test:", clock=FakeClock())
    assert isinstance(
        await on_test_time.reserve("doc", reservation=ids(), limit=2, period=60.0), Grant
    )


async def test_an_epoch_replaced_by_a_trusting_newcomer_still_pauses_the_others(
    connection: aredis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    old = RedisStore(connection, prefix=prefix, clock=clock, assume_fresh=True)
    assert isinstance(await old.reserve("doc", reservation=ids(), limit=2, period=60.0), Grant)
    await forget(connection, prefix)
    await clock.advance(5.0)
    newcomer = RedisStore(connection, prefix=prefix, clock=clock, assume_fresh=True)
    assert isinstance(await newcomer.reserve("doc", reservation=ids(), limit=2, period=60.0), Grant)
    await clock.advance(5.0)
    # The old process saw another epoch: the store was reset when the new one was made.
    assert await old.reserve("doc", reservation=ids(), limit=2, period=60.0) == Denied(55.0)
    assert await newcomer.reserve("doc", reservation=ids(), limit=2, period=60.0) == Denied(55.0)


async def test_a_store_rolled_back_to_an_older_state_pauses_its_documents(
    connection: aredis.Redis, prefix: str
) -> None:
    clock = FakeClock()
    store = RedisStore(connection, prefix=prefix, clock=clock, assume_fresh=True)
    limiter = RateLimiter(2, 60.0, store=store, clock=clock)
    async with limiter.acquire("doc") as permit:
        await permit.complete()
    snapshot = {key: await connection.dump(key) for key in await keys_of(connection, prefix)}
    async with limiter.acquire("doc") as permit:
        await permit.complete()
    # A failover to a replica that missed the last write, or an older snapshot.
    await forget(connection, prefix)
    for key, dumped in snapshot.items():
        await connection.restore(key, 0, dumped, replace=True)
    assert await store.reserve("doc", reservation=ids(), limit=2, period=60.0) == Denied(60.0)


async def test_valkey_pys_client_is_accepted_and_shares_the_budget(
    redis_url: str, prefix: str
) -> None:
    valkey = pytest.importorskip("valkey.asyncio")  # an alternative client, not a dependency
    ours, theirs = aredis.Redis.from_url(redis_url), valkey.Valkey.from_url(redis_url)
    try:
        first = RateLimiter(2, 60.0, store=RedisStore(ours, prefix=prefix, assume_fresh=True))
        second = RateLimiter(2, 60.0, store=RedisStore(theirs, prefix=prefix))
        for limiter in (first, second):
            async with limiter.acquire(TOKEN, timeout=1.0) as permit:
                await permit.complete()
        with pytest.raises(LimiterTimeoutError):
            async with second.acquire(TOKEN, timeout=0.2):
                pytest.fail("a third request in the period")
        with pytest.raises(ConfigurationError, match="pipeline"):
            RedisStore(theirs.pipeline())
    finally:
        await ours.aclose()
        await theirs.aclose()
