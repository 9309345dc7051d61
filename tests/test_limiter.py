"""The rate limiter's contract, on fake time, for the memory store and a real Redis.

Each behaviour runs on asyncio and trio with the in-memory store, and on
asyncio with :class:`RedisStore` against a real ``redis-server`` (redis-py's
asyncio client does not run on trio): one property suite for both stores.
"""

from __future__ import annotations

import math
import random
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import anyio
import pytest
import redis.asyncio as redis

from idme_passback import LimiterUnavailableError, MemoryStore, RateLimiter, RedisStore
from idme_passback import store as store_module
from idme_passback.store import Denied, Grant
from idme_passback.testing import FakeClock
from idme_passback.testing import wait_all_tasks_blocked as all_tasks_blocked

pytestmark = pytest.mark.anyio

PERIOD = 60.0


class ObservedStore:
    """Passes every call to a real store, counting calls in flight.

    The fake clock must not move while a Redis round trip is under way, or
    the script would read a time that has already passed.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.busy = 0

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.busy += 1
        try:
            return await getattr(self.inner, name)(*args, **kwargs)
        finally:
            self.busy -= 1

    async def reserve(self, token: str, **kwargs: Any) -> Grant | Denied:
        result: Grant | Denied = await self._call("reserve", token, **kwargs)
        return result

    async def release(self, grant: Grant, **kwargs: Any) -> None:
        await self._call("release", grant, **kwargs)

    async def discard(self, token: str, **kwargs: Any) -> None:
        await self._call("discard", token, **kwargs)

    async def link(self, alias: str, token: str, ttl: float) -> None:
        await self._call("link", alias, token, ttl)


@pytest.fixture(
    params=[
        pytest.param(("asyncio", "memory"), id="asyncio-memory"),
        pytest.param(("trio", "memory"), id="trio-memory"),
        pytest.param(("asyncio", "redis"), id="asyncio-redis"),
    ]
)
def flavour(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def anyio_backend(flavour: tuple[str, str]) -> str:
    return flavour[0]


@pytest.fixture
async def make_limiter(
    flavour: tuple[str, str], clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., RateLimiter]]:
    connections: list[Any] = []

    def make(limit: int = 2, period: float = PERIOD, **options: Any) -> RateLimiter:
        if flavour[1] == "memory":
            return RateLimiter(limit, period, clock=clock, **options)
        connection = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        connections.append(connection)
        store = RedisStore(connection, prefix=f"test-{secrets.token_hex(4)}:", clock=clock)
        return RateLimiter(limit, period, store=ObservedStore(store), clock=clock, **options)

    yield make
    for connection in connections:
        await connection.aclose()


async def settle(clock: FakeClock, limiter: RateLimiter) -> None:
    """Let every task run until all wait on the clock, and no store call is in flight."""
    while True:
        await all_tasks_blocked()
        if getattr(limiter.store, "busy", 0) == 0:
            await all_tasks_blocked()
            if getattr(limiter.store, "busy", 0) == 0:
                return
        await anyio.sleep(0.001)


async def run_clock(clock: FakeClock, limiter: RateLimiter, until: float = math.inf) -> None:
    """Advance fake time deadline by deadline until nothing waits (or ``until``)."""
    while True:
        await settle(clock, limiter)
        deadline = clock.next_deadline
        if deadline is None or deadline > until:
            if until != math.inf:
                await clock.advance(max(0.0, until - clock.now()))
                await settle(clock, limiter)
            return
        await clock.advance(max(0.0, deadline - clock.now()))


class Log:
    """What each request saw: when it was granted and when its response came."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.events: list[tuple[str, str, float, float]] = []  # (name, key, sent, done)

    def granted(self, name: str) -> float:
        return next(sent for n, _, sent, _ in self.events if n == name)


async def request(
    limiter: RateLimiter,
    clock: FakeClock,
    log: Log,
    name: str,
    key: str,
    latency: float = 0.0,
    *,
    sent: bool = True,
) -> None:
    async with limiter.acquire(key) as permit:
        start = clock.now()
        if latency:
            await clock.sleep(latency)
        if sent:
            await permit.complete()
        else:
            permit.not_sent()
        log.events.append((name, key, start, clock.now()))


# -- the contract ------------------------------------------------------------------


async def test_limit_requests_go_at_once_and_the_next_waits_a_period(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter()
    log = Log(clock)
    async with anyio.create_task_group() as group:
        for name in "abc":
            group.start_soon(request, limiter, clock, log, name, "doc")
            await settle(clock, limiter)
        await run_clock(clock, limiter)
    assert log.granted("a") == 0.0
    assert log.granted("b") == 0.0
    assert log.granted("c") == pytest.approx(PERIOD)


async def test_a_token_comes_back_a_period_after_the_response_not_the_send(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter()
    log = Log(clock)
    async with anyio.create_task_group() as group:
        group.start_soon(request, limiter, clock, log, "slow", "doc", 10.0)
        group.start_soon(request, limiter, clock, log, "fast", "doc", 1.0)
        await settle(clock, limiter)
        group.start_soon(request, limiter, clock, log, "third", "doc")
        await settle(clock, limiter)  # trio starts tasks in random order: fix arrivals
        group.start_soon(request, limiter, clock, log, "fourth", "doc")
        await run_clock(clock, limiter)
    # "fast" answered at 1 s, "slow" at 10 s: their tokens return at 61 s and 70 s.
    assert log.granted("third") == pytest.approx(61.0)
    assert log.granted("fourth") == pytest.approx(70.0)


async def test_a_request_that_never_left_returns_its_token_at_once(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter(limit=1)
    log = Log(clock)
    async with anyio.create_task_group() as group:
        group.start_soon(partial(request, sent=False), limiter, clock, log, "refused", "doc")
        await settle(clock, limiter)
        group.start_soon(request, limiter, clock, log, "next", "doc")
        await run_clock(clock, limiter)
    assert log.granted("next") == 0.0


async def test_an_unknown_fate_counts_as_sent(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter(limit=1)
    log = Log(clock)

    async def send_then_time_out() -> None:
        async with limiter.acquire("doc"):
            await clock.sleep(5.0)
            raise TimeoutError

    async def times_out() -> None:
        with pytest.raises(TimeoutError):
            await send_then_time_out()

    async with anyio.create_task_group() as group:
        group.start_soon(times_out)
        await settle(clock, limiter)
        group.start_soon(request, limiter, clock, log, "next", "doc")
        await run_clock(clock, limiter)
    assert log.granted("next") == pytest.approx(5.0 + PERIOD)


async def test_waiters_on_one_document_are_served_in_arrival_order(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter()
    log = Log(clock)
    names = [f"r{i}" for i in range(8)]
    async with anyio.create_task_group() as group:
        for name in names:
            group.start_soon(request, limiter, clock, log, name, "doc", 0.5)
            await settle(clock, limiter)
        await run_clock(clock, limiter)
    order = [name for name, _, _, _ in sorted(log.events, key=lambda e: (e[2], e[0]))]
    assert order == names
    assert [log.granted(n) for n in names[::2]] == pytest.approx([0.0, 60.5, 121.0, 181.5])


async def test_a_spent_document_never_delays_another(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter()
    log = Log(clock)
    async with anyio.create_task_group() as group:
        for i in range(5):
            group.start_soon(request, limiter, clock, log, f"a{i}", "spent")
        await settle(clock, limiter)
        group.start_soon(request, limiter, clock, log, "b", "fresh")
        await settle(clock, limiter)
        assert log.granted("b") == 0.0
        await run_clock(clock, limiter)


async def test_a_cancelled_waiter_consumes_nothing_and_delays_nobody(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter(limit=1)
    log = Log(clock)
    async with anyio.create_task_group() as group:
        group.start_soon(request, limiter, clock, log, "first", "doc")
        await settle(clock, limiter)
        with anyio.CancelScope() as doomed:
            pass
        doomed = anyio.CancelScope()

        async def cancelled_waiter() -> None:
            with doomed:
                await request(limiter, clock, log, "cancelled", "doc")

        group.start_soon(cancelled_waiter)
        await settle(clock, limiter)
        group.start_soon(request, limiter, clock, log, "behind", "doc")
        await settle(clock, limiter)
        await clock.advance(30.0)
        doomed.cancel()
        await run_clock(clock, limiter)
    assert [name for name, *_ in log.events] == ["first", "behind"]
    # "behind" got the token the cancelled waiter would have had, right on time.
    assert log.granted("behind") == pytest.approx(PERIOD)


async def test_a_429_holds_the_document_until_retry_after(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter(limit=5)
    log = Log(clock)
    async with limiter.acquire("doc") as permit:
        await permit.complete(hold=90.0)
    async with anyio.create_task_group() as group:
        group.start_soon(request, limiter, clock, log, "after", "doc")
        group.start_soon(request, limiter, clock, log, "other", "other-doc")
        await run_clock(clock, limiter)
    assert log.granted("after") == pytest.approx(90.0)
    assert log.granted("other") == 0.0


async def test_a_refreshed_token_shares_its_documents_budget(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter()
    log = Log(clock)
    await limiter.link("new-token", "old-token")
    async with anyio.create_task_group() as group:
        group.start_soon(request, limiter, clock, log, "old1", "old-token")
        group.start_soon(request, limiter, clock, log, "old2", "old-token")
        await settle(clock, limiter)
        group.start_soon(request, limiter, clock, log, "new", "new-token")
        await run_clock(clock, limiter)
    assert log.granted("new") == pytest.approx(PERIOD)


async def test_lineage_follows_a_chain_of_refreshes(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter(limit=1)
    log = Log(clock)
    await limiter.link("t1", "t0")
    await limiter.link("t2", "t1")
    async with anyio.create_task_group() as group:
        group.start_soon(request, limiter, clock, log, "a", "t0")
        await settle(clock, limiter)
        group.start_soon(request, limiter, clock, log, "b", "t2")
        await run_clock(clock, limiter)
    assert log.granted("b") == pytest.approx(PERIOD)


async def test_never_more_than_limit_in_any_server_window(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock, flavour: tuple[str, str]
) -> None:
    """Whatever moment between send and response the server counts, no window holds > limit."""
    limiter = make_limiter(limit=2, period=10.0)
    log = Log(clock)
    rng = random.Random(1234)
    requests = 40 if flavour[1] == "redis" else 120
    async with anyio.create_task_group() as group:
        for i in range(requests):
            key = f"doc{rng.randrange(4)}"
            latency = rng.choice([0.1, 0.5, 2.0, 7.0])
            group.start_soon(request, limiter, clock, log, f"r{i}", key, latency)
            if rng.random() < 0.3:
                await run_clock(clock, limiter, until=clock.now() + rng.uniform(0, 3))
        await run_clock(clock, limiter)
    assert len(log.events) == requests
    tolerance = 1e-3 if flavour[1] == "redis" else 1e-9  # Redis keeps milliseconds
    for key in {k for _, k, _, _ in log.events}:
        # A token is out from its send until a period after its response. Were three
        # out at once, some server window would count three requests.
        edges = sorted(
            edge
            for _, k, sent, done in log.events
            if k == key
            for edge in ((sent + tolerance, 1), (done + 10.0, -1))
        )
        out = 0
        for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
            out += step
            assert out <= 2


# -- memory ---------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_one_shot_keys_leave_no_state_once_a_period_has_passed(
    anyio_backend: str, clock: FakeClock
) -> None:
    store = MemoryStore(clock)
    limiter = RateLimiter(2, PERIOD, store=store)
    for i in range(20_000):
        async with limiter.acquire(f"key-{i}") as permit:
            await permit.complete()
    assert len(store) == 20_000
    await clock.advance(PERIOD)
    async with limiter.acquire("one-more") as permit:
        permit.not_sent()
    assert len(store) == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_cooling_document_keeps_its_budget_but_no_copy_of_its_token(
    anyio_backend: str, clock: FakeClock
) -> None:
    store = MemoryStore(clock)
    limiter = RateLimiter(2, PERIOD, store=store)
    token = secrets.token_hex(16)
    held = sys.getrefcount(token)
    for _ in range(2):
        async with limiter.acquire(token) as permit:
            await permit.complete()
    del permit
    # Both tokens cool for the period, yet nothing in the limiter refers to the string.
    assert len(store) == 1
    assert sys.getrefcount(token) == held
    # An equal string made anew finds the spent budget.
    assert await limiter.try_acquire("".join(list(token))) is None
    await clock.advance(PERIOD)
    assert await limiter.try_acquire(token) is not None


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_grants_repr_shows_its_token_only_shortened(
    anyio_backend: str, clock: FakeClock
) -> None:
    token = secrets.token_hex(16)
    grant = await MemoryStore(clock).reserve(token, reservation="r", limit=2, period=PERIOD)
    assert isinstance(grant, Grant)
    assert token not in repr(grant)
    assert repr(grant) == f"Grant(key='{token[:6]}\u2026')"
    # The store's own filing number is not part of what a grant is.
    assert grant == Grant(token, "r")


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_two_documents_whose_hashes_collide_share_one_budget(
    anyio_backend: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store files a bucket by its token's hash: a collision is stricter, never looser.
    monkeypatch.setattr(store_module, "_slot", lambda key: 7)
    limiter = RateLimiter(2, PERIOD, store=MemoryStore(clock))
    for token in ("doc-a", "doc-b"):
        async with limiter.acquire(token) as permit:
            await permit.complete()
    assert await limiter.try_acquire("doc-c") is None


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_link_whose_hash_collides_with_a_document_leaves_that_documents_budget(
    anyio_backend: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Links are kept by token: a refreshed token whose hash matches another document's
    # cannot send that document's requests to its own (fresh) bucket.
    real = store_module._slot
    monkeypatch.setattr(
        store_module, "_slot", lambda key: 7 if key in {"doc-x", "new"} else real(key)
    )
    store = MemoryStore(clock)
    for _ in range(2):
        grant = await store.reserve("doc-x", reservation="r", limit=2, period=PERIOD)
        assert isinstance(grant, Grant)
        await store.release(grant, sent=True, period=PERIOD)
    await store.link("new", "doc-y", ttl=PERIOD)
    answer = await store.reserve("doc-x", reservation="r", limit=2, period=PERIOD)
    assert isinstance(answer, Denied)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_key_with_a_token_out_is_never_evicted(
    anyio_backend: str, clock: FakeClock
) -> None:
    store = MemoryStore(clock)
    limiter = RateLimiter(1, PERIOD, store=store)
    log = Log(clock)
    async with anyio.create_task_group() as group:
        group.start_soon(request, limiter, clock, log, "long", "doc", 10 * PERIOD)
        await all_tasks_blocked()
        for i in range(100):  # other keys churn through many periods
            async with limiter.acquire(f"churn-{i}") as permit:
                await permit.complete()
            await clock.advance(PERIOD / 10)
        assert len(store) >= 1
        group.start_soon(request, limiter, clock, log, "next", "doc")
        await run_clock(clock, limiter)
    assert log.granted("next") == pytest.approx(11 * PERIOD)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_cancelled_waiter_leaves_no_queue_behind(
    anyio_backend: str, clock: FakeClock
) -> None:
    limiter = RateLimiter(1, PERIOD, clock=clock)
    async with limiter.acquire("doc") as permit:
        await permit.complete()
    with anyio.move_on_after(0.05):
        async with limiter.acquire("doc"):
            pytest.fail("granted inside the period")
    assert "waiting_keys=0" in repr(limiter)


def test_bad_limits_are_refused() -> None:
    for limit, period in ((0, 60.0), (2, 0.0), (2, math.inf), (True, 60.0), (2.5, 60.0)):
        with pytest.raises(ValueError):  # noqa: PT011 - several distinct messages
            RateLimiter(limit, period)  # type: ignore[arg-type]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_refreshed_token_joins_its_documents_queue(
    anyio_backend: str, clock: FakeClock
) -> None:
    limiter = RateLimiter(1, PERIOD, clock=clock)
    await limiter.link("new", "old")
    log = Log(clock)
    async with anyio.create_task_group() as group:
        group.start_soon(partial(request, sent=False), limiter, clock, log, "refused", "new", 1.0)
        await settle(clock, limiter)
        group.start_soon(request, limiter, clock, log, "waiter", "old")
        await settle(clock, limiter)
        await run_clock(clock, limiter)
    # The refused request on the new token gave the document's token back at 1 s,
    # and that woke the waiter queued on the old token.
    assert log.granted("waiter") == pytest.approx(1.0)


class _Answers:
    """A custom store that answers ``reserve`` with what a test gives it."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    async def reserve(self, token: str, **kwargs: Any) -> Any:
        return self.answer

    async def release(self, grant: Grant, **kwargs: Any) -> None:
        pass

    async def discard(self, token: str, **kwargs: Any) -> None:
        pass

    async def link(self, alias: str, token: str, ttl: float) -> None:
        pass


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("answer", [60, "yes", Denied(math.nan)])
async def test_a_store_answer_that_is_not_a_grant_fails_closed(
    anyio_backend: str, clock: FakeClock, answer: object
) -> None:
    limiter = RateLimiter(store=_Answers(answer), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(LimiterUnavailableError):
        async with limiter.acquire("doc"):
            pytest.fail("granted on a store's non-answer")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("timeout", [-1.0, math.nan])
async def test_a_negative_or_nan_timeout_is_refused(
    anyio_backend: str, clock: FakeClock, timeout: float
) -> None:
    limiter = RateLimiter(clock=clock)
    with pytest.raises(ValueError, match="timeout"):
        limiter.acquire("doc", timeout=timeout)


async def test_try_acquire_grants_at_once_or_answers_none_without_waiting(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter()
    first, second = await limiter.try_acquire("doc"), await limiter.try_acquire("doc")
    assert first is not None
    assert second is not None
    assert await limiter.try_acquire("doc") is None  # spent: no wait, no grant
    assert clock.now() == 0.0
    async with first:  # granted already: entering does not wait
        await first.complete()
    async with second:
        second.not_sent()  # its token comes back at once
    again = await limiter.try_acquire("doc")
    assert again is not None
    async with again:
        await again.complete()
    assert await limiter.try_acquire("doc") is None
    await clock.advance(PERIOD)
    assert await limiter.try_acquire("doc") is not None


async def test_try_acquire_leaves_a_document_to_those_waiting_for_it(
    make_limiter: Callable[..., RateLimiter], clock: FakeClock
) -> None:
    limiter = make_limiter(limit=1)
    log = Log(clock)
    async with anyio.create_task_group() as group:
        async with limiter.acquire("doc") as permit:
            group.start_soon(request, limiter, clock, log, "b", "doc")
            await settle(clock, limiter)
            permit.not_sent()
        # The token is back and b, queued for it, is woken: a try must not take it.
        assert await limiter.try_acquire("doc") is None
        await run_clock(clock, limiter)
    assert log.granted("b") == 0.0


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_try_acquire_fails_closed_on_a_store_non_answer(
    anyio_backend: str, clock: FakeClock
) -> None:
    limiter = RateLimiter(store=_Answers(60), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(LimiterUnavailableError):
        await limiter.try_acquire("doc")


class _Stalls(_Answers):
    """A custom store whose ``reserve`` never answers."""

    async def reserve(self, token: str, **kwargs: Any) -> Any:
        await anyio.sleep_forever()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_try_acquire_on_a_stalled_store_is_unavailable_not_a_deadline(
    anyio_backend: str,
) -> None:
    # On the real clock (the store timeout's own), which moves while the store stalls.
    limiter = RateLimiter(store=_Stalls(None), store_timeout=0.01)  # type: ignore[arg-type]
    with pytest.raises(LimiterUnavailableError, match="did not answer"):
        await limiter.try_acquire("doc")
