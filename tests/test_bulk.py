"""fetch_many and download_many: an outcome for every item, lazily, with no head-of-line wait."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
import redis.asyncio as redis

from idme_passback import (
    DocumentRequest,
    InvalidSizeError,
    InvalidTokenError,
    LimiterUnavailableError,
    NotFoundError,
    PassbackClient,
    Progress,
    RateLimiter,
    RedisStore,
    Size,
)
from idme_passback._files import TEMP_PREFIX
from idme_passback.bulk import BulkResults, FetchResult
from idme_passback.testing import FakeClock, FakePassbackServer

from .conftest import ClientOf

pytestmark = pytest.mark.anyio


async def collect(job: BulkResults) -> list[FetchResult]:
    """Run a bulk job to the end; return its results in completion order."""
    async with job as results:
        return [result async for result in results]


@pytest.fixture
def fake(clock: FakeClock) -> FakePassbackServer:
    return FakePassbackServer(clock=clock, seed=3)


@pytest.fixture
async def client(fake: FakePassbackServer, client_of: ClientOf) -> AsyncIterator[PassbackClient]:
    async with client_of(fake) as passback:
        yield passback


async def test_every_item_gets_an_outcome_and_failures_stay_local(
    client: PassbackClient, fake: FakePassbackServer
) -> None:
    good = [fake.issue_document() for _ in range(5)]
    items = [
        good[0],
        (good[1], "300x200"),
        DocumentRequest(good[2], size=(200, 200)),
        "not/a/token",
        (good[3], "99x99"),
        "0123456789abcdef0123456789abcdef",  # unknown: 404
        good[4],
    ]
    results = await collect(client.fetch_many(items, concurrency=3))
    by_index = {r.index: r for r in results}
    assert sorted(by_index) == list(range(len(items)))
    assert isinstance(by_index[3].error, InvalidTokenError)
    assert isinstance(by_index[4].error, InvalidSizeError)
    assert isinstance(by_index[5].error, NotFoundError)
    for index in (0, 1, 2, 6):
        result = by_index[index]
        assert result.ok
        assert result.image is not None
        assert result.bytes == len(result.image.content)
    assert by_index[1].image is not None
    assert by_index[1].image.size == Size(300, 200)
    assert by_index[1].token == good[1]
    assert by_index[1].image.content == fake.served_bytes(good[1], "300x200")
    # Invalid items never reached the server.
    assert fake.count(endpoint="document") == 5


async def test_a_default_size_applies_to_items_without_one(
    client: PassbackClient, fake: FakePassbackServer
) -> None:
    tokens = [fake.issue_document() for _ in range(2)]
    results = await collect(client.fetch_many([tokens[0], (tokens[1], "100x100")], size="300x200"))
    sizes = {r.index: r.image.size for r in results if r.image}
    assert sizes == {0: Size(300, 200), 1: Size(100, 100)}


async def test_a_spent_document_never_idles_a_slot(
    client: PassbackClient, fake: FakePassbackServer, clock: FakeClock
) -> None:
    spent, others = fake.issue_document(), [fake.issue_document() for _ in range(4)]
    items = [spent, spent, spent, *others]
    finished: list[tuple[int, float]] = []

    async def consume() -> None:
        async with client.fetch_many(items, concurrency=1) as results:
            async for result in results:
                assert result.ok
                finished.append((result.index, clock.now()))

    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        await clock.run_until_idle()
    # With one slot, the third request on `spent` waits 60 s without holding it.
    assert sorted(finished) == [(0, 0.0), (1, 0.0), (2, 60.0)] + [(i, 0.0) for i in range(3, 7)]
    assert fake.count(status=429) == 0


async def test_input_is_consumed_lazily(client: PassbackClient, fake: FakePassbackServer) -> None:
    token = fake.issue_document()
    pulled = 0

    def endless() -> Iterator[str]:
        nonlocal pulled
        while True:
            pulled += 1
            yield f"{pulled:032x}"  # unknown documents: a quick 404 each

    seen = 0
    async with client.fetch_many(endless(), concurrency=4) as results:
        async for _ in results:
            seen += 1
            if seen == 3000:
                break
    assert seen == 3000
    # Only a bounded window ahead of the consumer was ever read.
    assert pulled <= 3000 + 1024 + 8
    assert token  # the fake is untouched otherwise


async def test_an_async_iterable_input_works(
    client: PassbackClient, fake: FakePassbackServer
) -> None:
    tokens = [fake.issue_document() for _ in range(3)]

    async def source() -> AsyncIterator[str]:
        for token in tokens:
            yield token

    results = await collect(client.fetch_many(source()))
    assert sorted(r.token for r in results) == sorted(tokens)
    assert all(r.ok for r in results)


async def test_progress_reports_done_failed_total_and_bytes(
    client: PassbackClient, fake: FakePassbackServer
) -> None:
    tokens = [fake.issue_document() for _ in range(3)] + ["bad/token"]
    reports: list[Progress] = []
    results = await collect(client.fetch_many(tokens, on_progress=reports.append))
    assert [p.done for p in reports] == [1, 2, 3, 4]
    assert reports[-1].failed == 1
    assert reports[-1].succeeded == 3
    assert reports[-1].total == 4
    assert reports[-1].bytes == sum(r.bytes for r in results) > 0


async def test_download_many_writes_every_file_safely(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    tokens = [fake.issue_document() for _ in range(3)]
    items = [tokens[0], DocumentRequest(tokens[1], filename="back.jpg"), (tokens[2], "300x200")]
    results = sorted(await collect(client.download_many(items, tmp_path)), key=lambda r: r.index)
    names = [r.path.name for r in results if r.path]
    assert names[1] == "back.jpg"
    assert names[0] == f"000000-{tokens[0][:6]}.jpg"
    assert names[2] == f"000002-{tokens[2][:6]}.jpg"
    for result, token, size in zip(results, tokens, [None, None, "300x200"], strict=True):
        assert result.path is not None
        assert result.path.parent == tmp_path
        assert result.path.read_bytes() == fake.served_bytes(token, size)
        assert stat.S_IMODE(os.stat(result.path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


@pytest.mark.parametrize("name", ["../escape.jpg", "sub/x.jpg", ".hidden", "", "a\\b.jpg"])
async def test_download_many_refuses_file_names_that_leave_the_folder(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path, name: str
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    token = fake.issue_document()
    [result] = await collect(client.download_many([DocumentRequest(token, filename=name)], folder))
    assert isinstance(result.error, ValueError)
    assert list(tmp_path.rglob("*")) == [folder]
    assert fake.count(endpoint="document") == 0


async def test_download_many_does_not_overwrite_unless_asked(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    token = fake.issue_document()
    (tmp_path / "doc.jpg").write_bytes(b"mine")
    item = DocumentRequest(token, filename="doc.jpg")
    [refused] = await collect(client.download_many([item], tmp_path))
    assert isinstance(refused.error, FileExistsError)
    assert (tmp_path / "doc.jpg").read_bytes() == b"mine"
    [replaced] = await collect(client.download_many([item], tmp_path, overwrite=True))
    assert replaced.ok
    assert (tmp_path / "doc.jpg").read_bytes() == fake.served_bytes(token)


async def test_a_missing_folder_fails_before_anything_is_sent(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        client.download_many([fake.issue_document()], tmp_path / "missing")
    assert fake.requests == []


@pytest.mark.parametrize("concurrency", [0, -1, True])
async def test_a_bad_concurrency_is_refused(client: PassbackClient, concurrency: int) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        client.fetch_many(["abc"], concurrency=concurrency)


async def test_cancelling_the_job_stops_promptly_and_leaves_no_temporary_file(
    tmp_path: Path, clock: FakeClock, client_of: ClientOf
) -> None:
    fake = FakePassbackServer(clock=clock, latency=5.0)
    tokens = [fake.issue_document() for _ in range(50)]
    async with client_of(fake) as client:
        seen = 0

        async def consume() -> None:
            nonlocal seen
            async with client.download_many(tokens, tmp_path, concurrency=8) as results:
                async for _ in results:
                    seen += 1
                    if seen == 8:
                        break

        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await clock.run_until_idle(limit=5.0)
    assert seen == 8
    assert not any(p.name.startswith(TEMP_PREFIX) for p in tmp_path.iterdir())
    assert len(list(tmp_path.iterdir())) >= 8
    assert len(fake.requests) < 50  # the rest were never sent


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_two_processes_split_one_job_through_redis(
    anyio_backend: str, redis_url: str, client_of: ClientOf
) -> None:
    fake = FakePassbackServer(period=0.5)
    tokens = [fake.issue_document() for _ in range(4)]
    prefix = f"bulk-{secrets.token_hex(4)}:"
    connections = [redis.Redis.from_url(redis_url) for _ in range(2)]
    clients = [
        client_of(fake, limiter=RateLimiter(2, 0.5, store=RedisStore(connection, prefix=prefix)))
        for connection in connections
    ]
    outcomes: list[bool] = []

    async def worker(client: PassbackClient) -> None:
        async with client.fetch_many(tokens * 2, concurrency=4) as results:
            outcomes.extend([result.ok async for result in results])

    try:
        async with anyio.create_task_group() as group:
            for client in clients:
                group.start_soon(worker, client)
    finally:
        for client in clients:
            await client.aclose()
        for connection in connections:
            await connection.aclose()
    assert outcomes == [True] * 16
    assert fake.count(status=429) == 0
    assert fake.max_in_window() <= 2


async def test_queueing_for_a_slot_does_not_count_against_the_deadline(
    clock: FakeClock, client_of: ClientOf
) -> None:
    fake = FakePassbackServer(clock=clock, latency=5.0)
    tokens = [fake.issue_document() for _ in range(3)]
    async with client_of(
        fake,
        # Shorter than the queue ahead of the last item (10 s), longer than an
        # attempt (5 s): each attempt is bounded from its grant, not from its queueing.
        deadline=8.0,
    ) as client:
        outcomes: list[bool] = []

        async def consume() -> None:
            async with client.fetch_many(tokens, concurrency=1) as results:
                outcomes.extend([result.ok async for result in results])

        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await clock.run_until_idle()
    assert outcomes == [True, True, True]
    assert clock.now() == pytest.approx(15.0)


async def test_an_item_already_on_disk_is_refused_before_any_request(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    token = fake.issue_document()
    (tmp_path / f"000000-{token[:6]}.jpg").write_bytes(b"from an earlier run")
    [result] = await collect(client.download_many([token], tmp_path))
    assert isinstance(result.error, FileExistsError)
    assert fake.requests == []


async def test_an_item_refused_before_its_request_keeps_its_documents_budget(
    client: PassbackClient, fake: FakePassbackServer, tmp_path: Path
) -> None:
    token = fake.issue_document()
    (tmp_path / "taken.jpg").write_bytes(b"from an earlier run")
    job = client.download_many([DocumentRequest(token, filename="taken.jpg")], tmp_path)
    [result] = await collect(job)
    assert isinstance(result.error, FileExistsError)
    assert fake.requests == []
    # Nothing was sent, so both of the document's tokens are still there.
    budget = [await client.limiter.try_acquire(token) for _ in range(3)]
    assert [permit is not None for permit in budget] == [True, True, False]


@pytest.mark.parametrize("steps", [[429], [503, 503]], ids=["429", "503-503"])
async def test_a_retrying_item_never_delays_another_documents_first_request(
    client: PassbackClient, fake: FakePassbackServer, clock: FakeClock, steps: list[int]
) -> None:
    retrying, fresh = fake.issue_document(), fake.issue_document()
    fake.script(retrying, steps)
    finished: dict[int, float] = {}

    async def consume() -> None:
        async with client.fetch_many([retrying, fresh], concurrency=1) as results:
            async for result in results:
                assert result.ok
                finished[result.index] = clock.now()

    async with anyio.create_task_group() as group:
        group.start_soon(consume)
        await clock.run_until_idle()
    # The retry waits (a backoff, a Retry-After, a cooling token) without holding
    # up the other document, even with a single worker.
    assert finished[1] == 0.0
    assert finished[0] > 0.0
    assert fake.count(document=fresh) == 1


class _StoreDown:
    """A limiter store that fails every call, as a Redis that went away."""

    async def reserve(self, token: str, **kwargs: object) -> object:
        raise ConnectionError("connection refused")

    async def release(self, grant: object, **kwargs: object) -> None:
        raise ConnectionError("connection refused")

    async def discard(self, token: str, **kwargs: object) -> None:
        raise ConnectionError("connection refused")

    async def link(self, alias: str, token: str, ttl: float) -> None:
        raise ConnectionError("connection refused")


async def test_a_failing_store_fails_each_item_alone(
    fake: FakePassbackServer, client_of: ClientOf, clock: FakeClock
) -> None:
    limiter = RateLimiter(store=_StoreDown(), clock=clock)  # type: ignore[arg-type]
    tokens = [fake.issue_document() for _ in range(5)]
    async with client_of(fake, limiter=limiter) as client:
        results = await collect(client.fetch_many(tokens, concurrency=2))
    assert sorted(result.index for result in results) == list(range(5))
    assert all(isinstance(result.error, LimiterUnavailableError) for result in results)
    assert fake.requests == []  # the limiter fails closed: nothing was sent


async def test_the_last_progress_report_knows_a_generators_total(
    client: PassbackClient, fake: FakePassbackServer
) -> None:
    tokens = [fake.issue_document() for _ in range(3)]
    reports: list[Progress] = []

    async def read_slowly() -> AsyncIterator[str]:
        for token in tokens:
            yield token
        await anyio.sleep(0)  # finding the end takes a moment, as reading a file does
        await anyio.sleep(0)

    job = client.fetch_many(read_slowly(), concurrency=1, on_progress=reports.append)
    await collect(job)
    # An async generator has no len(): the total is known once its end has been
    # read, which happens by the time its last item is handed out.
    assert reports[-1].done == reports[-1].total == 3
