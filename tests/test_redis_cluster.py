"""RedisStore on a real Redis Cluster: three masters on loopback, started here.

Each document's keys share one hash slot, a refreshed token on another
master still charges its root, a 429 hold reaches every process, and a
master that restarts empty pauses its own documents and no others.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import anyio
import pytest
from redis.asyncio.cluster import RedisCluster

from idme_passback import (
    Denied,
    Grant,
    LimiterTimeoutError,
    LimiterUnavailableError,
    RateLimiter,
    RedisStore,
)
from idme_passback.testing import FakeClock

from ._redis import RedisClusterNodes

pytestmark = pytest.mark.anyio

Connect = Callable[[], Awaitable[RedisCluster]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis-py's asyncio client


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterNodes]:
    with RedisClusterNodes() as nodes:
        yield nodes


@pytest.fixture
async def connect(cluster: RedisClusterNodes) -> AsyncIterator[Connect]:
    """Open cluster clients (one per simulated process); all closed afterwards."""
    opened: list[RedisCluster] = []

    async def client() -> RedisCluster:
        host, port = cluster.startup
        opened.append(RedisCluster(host=host, port=port))
        await opened[-1].initialize()  # the slot map, for the tests' own lookups
        return opened[-1]

    yield client
    for each in opened:
        await each.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(4)}:"


def ids() -> str:
    return secrets.token_hex(8)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# prefix{tag}:kind[:digest]: the tag is the first hex digits of the root's digest.
KEY = re.compile(r"\{(?P<tag>[0-9a-f]+)\}:(?P<kind>[a-z])(?::(?P<digest>[0-9a-f]{64}))?$")


def port_of(client: RedisCluster, token: str) -> int:
    """The port of the master that holds ``token``'s keys (as a root)."""
    return int(client.get_node_from_key("{" + digest(token)[:3] + "}").port)


def tokens_on_distinct_masters(client: RedisCluster, count: int) -> list[str]:
    found: dict[int, str] = {}
    for i in range(1000):
        token = f"doc-{secrets.token_hex(4)}-{i}"
        found.setdefault(port_of(client, token), token)
        if len(found) == count:
            return list(found.values())
    raise AssertionError("could not spread tokens over the masters")


async def test_documents_on_every_master_get_their_limit_and_no_more(
    connect: Connect, prefix: str
) -> None:
    client = await connect()
    store = RedisStore(client, prefix=prefix, assume_fresh=True)
    tokens = [f"doc-{i}" for i in range(30)]
    assert len({port_of(client, token) for token in tokens}) == 3
    for token in tokens:
        first = await store.reserve(token, reservation=ids(), limit=2, period=60.0)
        second = await store.reserve(token, reservation=ids(), limit=2, period=60.0)
        third = await store.reserve(token, reservation=ids(), limit=2, period=60.0)
        assert isinstance(first, Grant)
        assert isinstance(second, Grant)
        assert isinstance(third, Denied)
        assert 59.0 <= third.delay <= 60.0


async def test_every_key_of_a_document_lives_in_one_slot(connect: Connect, prefix: str) -> None:
    client = await connect()
    store = RedisStore(client, prefix=prefix, assume_fresh=True)
    limiter = RateLimiter(2, 60.0, store=store)
    root, refreshed = tokens_on_distinct_masters(client, 2)
    async with limiter.acquire(root) as permit:
        await permit.complete(hold=30.0)
    await limiter.link(refreshed, root)
    await store.discard(refreshed, reservation=ids())
    keys = [KEY.search(key.decode()) async for key in client.scan_iter(match=f"{prefix}*")]
    assert all(keys)
    mine = [m for m in keys if m and m["tag"] == digest(root)[:3]]
    assert sorted(m["kind"] for m in mine) == ["b", "e", "h", "x"]
    assert {m["digest"] for m in mine} == {digest(root), None}  # None: the group's epoch
    assert len({client.keyslot(m.string) for m in mine}) == 1
    # The refreshed token's link lives in its own slot, on another master, and
    # names the root by digest.
    (alias,) = [m for m in keys if m and m["digest"] == digest(refreshed)]
    assert alias["kind"] == "a"
    assert client.keyslot(alias.string) != client.keyslot(mine[0].string)
    assert (await client.get(alias.string)).decode() == digest(root)


async def test_a_refreshed_token_on_another_master_shares_its_roots_budget(
    connect: Connect, prefix: str
) -> None:
    one, two = await connect(), await connect()
    refresher = RateLimiter(2, 60.0, store=RedisStore(one, prefix=prefix, assume_fresh=True))
    other = RateLimiter(2, 60.0, store=RedisStore(two, prefix=prefix))
    root, refreshed = tokens_on_distinct_masters(one, 2)
    for _ in range(2):
        async with refresher.acquire(root) as permit:
            await permit.complete()
    await refresher.link(refreshed, root)
    # Neither the process that refreshed nor one that only has the new token
    # may spend the document's budget again.
    for limiter in (refresher, other):
        with pytest.raises(LimiterTimeoutError):
            async with limiter.acquire(refreshed, timeout=0.2):
                pytest.fail("the refreshed token got a budget of its own")


async def test_a_429_hold_pauses_its_document_for_every_process(
    connect: Connect, prefix: str
) -> None:
    one, two = await connect(), await connect()
    first = RateLimiter(2, 60.0, store=RedisStore(one, prefix=prefix, assume_fresh=True))
    second = RedisStore(two, prefix=prefix)
    async with first.acquire("doc") as permit:
        await permit.complete(hold=30.0)
    denied = await second.reserve("doc", reservation=ids(), limit=2, period=60.0)
    assert isinstance(denied, Denied)
    assert 29.0 <= denied.delay <= 30.0
    # A hostile Retry-After is clamped before it can overflow Redis.
    async with first.acquire("other-doc") as permit:
        await permit.complete(hold=99_999_999_999_999.0)
    denied = await second.reserve("other-doc", reservation=ids(), limit=2, period=60.0)
    assert isinstance(denied, Denied)
    assert 86_399.0 <= denied.delay <= 86_400.0


async def test_a_lost_reservation_of_a_refreshed_token_is_discarded_in_its_roots_slot(
    connect: Connect, prefix: str
) -> None:
    client = await connect()
    store = RedisStore(client, prefix=prefix, assume_fresh=True)
    root, refreshed = tokens_on_distinct_masters(client, 2)
    await store.link(refreshed, root, 600.0)
    lost = ids()
    assert isinstance(await store.reserve(refreshed, reservation=lost, limit=1, period=60.0), Grant)
    assert isinstance(await store.reserve(root, reservation=ids(), limit=1, period=60.0), Denied)
    await store.discard(refreshed, reservation=lost)
    assert isinstance(await store.reserve(root, reservation=ids(), limit=1, period=60.0), Grant)


async def test_valkey_pys_cluster_client_is_accepted(
    cluster: RedisClusterNodes, prefix: str
) -> None:
    cluster_module = pytest.importorskip("valkey.asyncio.cluster")  # not a dependency
    host, port = cluster.startup
    client = cluster_module.ValkeyCluster(host=host, port=port)
    try:
        limiter = RateLimiter(2, 60.0, store=RedisStore(client, prefix=prefix, assume_fresh=True))
        for token in ("doc", "doc", "other-doc"):
            async with limiter.acquire(token, timeout=1.0) as permit:
                await permit.complete()
        await limiter.link("refreshed-doc", "doc")
        with pytest.raises(LimiterTimeoutError):
            async with limiter.acquire("refreshed-doc", timeout=0.2):
                pytest.fail("a third request in the period")
    finally:
        await client.aclose()


async def test_a_master_restarted_empty_pauses_its_own_documents_only(
    cluster: RedisClusterNodes, connect: Connect, prefix: str
) -> None:
    # Last in this module: it restarts a master of the shared cluster.
    client = await connect()
    clock = FakeClock()
    store = RedisStore(client, prefix=prefix, clock=clock, assume_fresh=True)
    tokens = tokens_on_distinct_masters(client, 3)
    for token in tokens:
        grant = await store.reserve(token, reservation=ids(), limit=2, period=60.0)
        assert isinstance(grant, Grant)
        await store.release(grant, sent=True, period=60.0)
    await clock.advance(10.0)
    lost, *kept = tokens
    (node,) = [n for n in cluster.nodes if n.port == port_of(client, lost)]
    node.restart()  # same port, same slots (nodes.conf), no data
    cluster.wait_ok()

    async def reserve(token: str) -> Grant | Denied:
        # The client reconnects by itself; a call that meets the dead
        # connection fails typed, and the next one goes through.
        for _ in range(50):
            try:
                return await store.reserve(token, reservation=ids(), limit=2, period=60.0)
            except LimiterUnavailableError:
                await anyio.sleep(0.1)
        raise AssertionError("the cluster did not come back")

    assert await reserve(lost) == Denied(60.0)
    for token in kept:
        assert isinstance(await reserve(token), Grant)
