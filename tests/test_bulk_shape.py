"""Bulk jobs under structured concurrency: every way out of the loop is safe, fair, bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from idme_passback import PassbackClient, Progress, RateLimiter
from idme_passback.testing import FakeClock, FakePassbackServer, wait_all_tasks_blocked

from .conftest import ClientOf

pytestmark = pytest.mark.anyio


class Boom(Exception):
    """The caller's own exception."""


@pytest.fixture
def fake(clock: FakeClock) -> FakePassbackServer:
    return FakePassbackServer(clock=clock, seed=5, limit=1000)


@pytest.fixture
async def client(fake: FakePassbackServer, client_of: ClientOf) -> AsyncIterator[PassbackClient]:
    async with client_of(fake) as passback:
        yield passback


def documents(fake: FakePassbackServer) -> int:
    return fake.count(endpoint="document")


@pytest.mark.parametrize("body", ["break", "raise", "return"])
@pytest.mark.parametrize("method", ["fetch_many", "download_many"])
async def test_a_bare_async_for_fails_at_once_whatever_the_body_does(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path, method: str, body: str
) -> None:
    tokens = [fake.issue_document() for _ in range(5)]

    async def loop() -> None:
        job = (
            client.fetch_many(tokens)
            if method == "fetch_many"
            else client.download_many(tokens, tmp_path)
        )
        async for _ in job:  # type: ignore[attr-defined]
            await anyio.sleep(0)
            if body == "break":
                break
            if body == "raise":
                raise Boom
            return

    with pytest.raises(TypeError, match="async with"):
        await loop()
    await anyio.sleep(0)  # the caller's next await is not cancelled
    assert documents(fake) == 0


@pytest.mark.parametrize("method", ["fetch_many", "download_many"])
async def test_break_with_awaits_in_the_body_leaves_cleanly_and_stops_sending(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path, method: str
) -> None:
    tokens = [fake.issue_document() for _ in range(200)]
    job = (
        client.fetch_many(tokens, concurrency=4)
        if method == "fetch_many"
        else client.download_many(tokens, tmp_path, concurrency=4)
    )
    seen = 0
    async with job as results:
        async for _ in results:
            await anyio.sleep(0)
            seen += 1
            if seen == 3:
                break
    sent = documents(fake)
    await anyio.sleep(0)
    await anyio.sleep(0)
    assert documents(fake) == sent  # nothing more after leaving
    assert sent <= 3 + 4 + 1  # what was delivered, the slots in flight, one being read
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial file


async def test_an_exception_in_the_body_reaches_the_caller_unwrapped(
    client: PassbackClient, fake: FakePassbackServer
) -> None:
    tokens = [fake.issue_document() for _ in range(50)]

    async def loop() -> None:
        seen = 0
        async with client.fetch_many(tokens, concurrency=4) as results:
            async for _ in results:
                await anyio.sleep(0)
                seen += 1
                if seen == 3:
                    raise Boom

    with pytest.raises(Boom) as caught:
        await loop()
    assert type(caught.value) is Boom
    sent = documents(fake)
    await anyio.sleep(0)
    assert documents(fake) == sent
    assert sent < 50


async def test_return_from_inside_the_loop_is_safe(
    client: PassbackClient, fake: FakePassbackServer
) -> None:
    tokens = [fake.issue_document() for _ in range(50)]

    async def third_ok() -> int:
        seen = 0
        async with client.fetch_many(tokens, concurrency=4) as results:
            async for result in results:
                await anyio.sleep(0)
                seen += result.ok
                if seen == 3:
                    return result.index
        return -1

    assert await third_ok() >= 0
    sent = documents(fake)
    await anyio.sleep(0)
    assert documents(fake) == sent < 50


async def test_an_exception_in_on_progress_reaches_the_caller_unwrapped(
    client: PassbackClient, fake: FakePassbackServer
) -> None:
    tokens = [fake.issue_document() for _ in range(20)]

    def progress(report: Progress) -> None:
        if report.done == 2:
            raise Boom

    async def loop() -> None:
        async with client.fetch_many(tokens, on_progress=progress) as results:
            async for _ in results:
                pass

    with pytest.raises(Boom) as caught:
        await loop()
    assert type(caught.value) is Boom


async def test_a_long_run_of_one_document_never_delays_anothers_first_request(
    clock: FakeClock, client_of: ClientOf
) -> None:
    fake = FakePassbackServer(clock=clock, seed=6)  # the real budget: 2 per 60 s
    busy, other = fake.issue_document(), fake.issue_document()
    async with client_of(fake) as client:

        async def consume() -> None:
            async with client.fetch_many([busy] * 1100 + [other], concurrency=4) as results:
                async for result in results:
                    if result.token == other:
                        break

        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await clock.advance(1.0)
    arrivals = [(r.document, r.time) for r in fake.requests if r.endpoint == "document"]
    # `other` went out at once, not after the 1,100 items of `busy` (38 minutes of budget).
    assert (fake.document_id(other), 0.0) in arrivals
    assert arrivals.count((fake.document_id(busy), 0.0)) == 2
    assert fake.count(status=429) == 0


async def test_fetch_many_holds_at_most_concurrency_images_for_a_slow_consumer(
    client: PassbackClient, fake: FakePassbackServer, clock: FakeClock
) -> None:
    tokens = [fake.issue_document() for _ in range(60)]
    held: list[int] = []

    async def consume() -> None:
        consumed = 0
        async with client.fetch_many(tokens, concurrency=4) as results:
            async for _ in results:
                consumed += 1
                held.append(fake.count(endpoint="document", status=200) - consumed)
                await clock.sleep(1.0)  # a slow consumer

    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        await clock.run_until_idle()
    assert len(held) == 60
    assert max(held) <= 4  # answered but not yet taken: one per slot at most


async def test_fetch_all_returns_every_result_in_input_order(
    client: PassbackClient, fake: FakePassbackServer
) -> None:
    tokens = [fake.issue_document() for _ in range(10)]
    results = await client.fetch_all([*tokens, "not a token"], concurrency=3)
    assert [r.index for r in results] == list(range(11))
    assert all(r.ok for r in results[:10])
    assert not results[10].ok
    assert [r.token for r in results[:10]] == tokens


@pytest.mark.parametrize("leave", ["break", "cancel"])
async def test_an_item_the_input_yields_as_the_caller_leaves_is_never_sent(
    client: PassbackClient, fake: FakePassbackServer, leave: str
) -> None:
    # A worker waits on a slow input (a queue, a cursor); its next item arrives just
    # as the caller leaves. The worker wakes into a cancelled job: it must not send it.
    tokens = [fake.issue_document() for _ in range(10)]
    ready = anyio.Event()
    sent_on_leaving: list[int] = []

    async def source() -> AsyncIterator[str]:
        yield tokens[0]
        yield tokens[1]
        await ready.wait()
        for token in tokens[2:]:
            yield token

    def release_the_input() -> None:
        ready.set()
        sent_on_leaving.append(documents(fake))

    with anyio.CancelScope() as caller:

        async def cancel_the_caller() -> None:
            await wait_all_tasks_blocked()
            release_the_input()
            caller.cancel()

        async with anyio.create_task_group() as group:
            if leave == "cancel":
                group.start_soon(cancel_the_caller)
            async with client.fetch_many(source(), concurrency=4) as results:
                async for _ in results:
                    if leave == "break":
                        release_the_input()
                        break
    assert caller.cancelled_caught == (leave == "cancel")
    assert sent_on_leaving
    assert documents(fake) == sent_on_leaving[0]  # nothing sent after leaving


async def test_leaving_early_gives_back_the_tokens_of_items_waiting_for_a_slot(
    clock: FakeClock, client_of: ClientOf
) -> None:
    fake = FakePassbackServer(clock=clock, seed=7, limit=1)
    tokens = [fake.issue_document() for _ in range(6)]
    later: dict[str, float] = {}
    async with client_of(fake, limiter=RateLimiter(limit=1, clock=clock)) as client:

        async def job() -> None:
            async with client.fetch_many(tokens, concurrency=1) as results:
                async for _ in results:
                    break  # the others hold their document's one token, waiting for the slot
            asked = {r.document for r in fake.requests}
            for token in tokens:
                if fake.document_id(token) not in asked:
                    await client.get_document(token)  # its token was never used: free now
                    later[token] = clock.now()

        async with anyio.create_task_group() as group:
            group.start_soon(job)
            await clock.run_until_idle()
    assert later
    assert set(later.values()) == {0.0}


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_input_that_raises_delivers_what_was_read_then_the_error_unwrapped(
    client: PassbackClient, fake: FakePassbackServer, kind: str
) -> None:
    tokens = [fake.issue_document() for _ in range(3)]

    def plain() -> Iterator[str]:
        yield from tokens
        raise Boom

    async def lazy() -> AsyncIterator[str]:
        for token in tokens:
            yield token
        raise Boom

    seen: list[int] = []

    async def loop() -> None:
        async with client.fetch_many(plain() if kind == "sync" else lazy()) as results:
            async for result in results:
                assert result.ok
                seen.append(result.index)

    with pytest.raises(Boom) as caught:
        await loop()
    assert type(caught.value) is Boom
    assert sorted(seen) == [0, 1, 2]  # nothing read was lost


async def test_the_declared_anyio_lets_a_lock_go_on_after_a_waiter_cancelled_at_release() -> None:
    """Why ``anyio>=4.14``: cancelling a bulk job must not deadlock httpcore's connections.

    httpcore guards each connection's state with an anyio ``Lock``. When a job
    with requests in flight is cancelled, one task may be waiting on that lock
    as it is released; before anyio 4.14 that cancelled waiter stayed queued,
    and the next ``acquire`` (httpcore closing the response, shielded) waited
    behind it for ever: about one interrupted ``download-many`` in four hung.
    """
    lock = anyio.Lock()
    await lock.acquire()
    waiting = anyio.CancelScope()

    async def waiter() -> None:
        with waiting:
            await lock.acquire()
        assert waiting.cancelled_caught

    async with anyio.create_task_group() as group:
        group.start_soon(waiter)
        await wait_all_tasks_blocked()
        waiting.cancel()
        lock.release()
        with anyio.fail_after(10):  # a guard against a hang, not a timing
            await lock.acquire()
        lock.release()
