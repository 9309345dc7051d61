"""The client against the fake server on fake time: rate limits, 429s, retries, deadlines."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import attrs
import httpx
import pytest

from idme_passback import (
    DeadlineExceededError,
    NotAnImageError,
    PassbackClient,
    PassbackTimeoutError,
    RateLimiter,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from idme_passback.testing import FakeClock, FakePassbackServer

JPEG_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(200)

pytestmark = pytest.mark.anyio
T = TypeVar("T")


@pytest.fixture
def fake(clock: FakeClock) -> FakePassbackServer:
    return FakePassbackServer(clock=clock, seed=7)


def make_client(fake: FakePassbackServer, clock: FakeClock, **options: Any) -> PassbackClient:
    limiter = options.pop("limiter", None) or RateLimiter(clock=clock)
    return PassbackClient(
        fake.api_token,
        base_url="http://fake/",
        transport=httpx.ASGITransport(app=fake),
        limiter=limiter,
        **options,
    )


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response],
    clock: FakeClock,
    *,
    limit: int = 2,
    api_token: str = "1234567-fd03-4ca4-a93e-aae6fce8e82b",
    **options: Any,
) -> PassbackClient:
    """A client on fake time whose requests ``handler`` answers in-process."""
    return PassbackClient(
        api_token,
        transport=httpx.MockTransport(handler),
        limiter=RateLimiter(limit=limit, clock=clock),
        **options,
    )


@pytest.fixture
async def client(fake: FakePassbackServer, clock: FakeClock) -> AsyncIterator[PassbackClient]:
    async with make_client(fake, clock) as passback:
        yield passback


async def drive(clock: FakeClock, *calls: Callable[[], Awaitable[T]]) -> list[T | BaseException]:
    """Run ``calls`` concurrently while fake time advances; return results or errors in order."""
    results: list[T | BaseException] = [RuntimeError("not run")] * len(calls)

    async def one(index: int, call: Callable[[], Awaitable[T]]) -> None:
        try:
            results[index] = await call()
        except Exception as exc:
            results[index] = exc

    async with anyio.create_task_group() as group:
        for index, call in enumerate(calls):
            group.start_soon(one, index, call)
        await clock.run_until_idle()
    return results


def document_times(fake: FakePassbackServer, status: int = 200) -> list[float]:
    return [r.time for r in fake.requests if r.endpoint == "document" and r.status == status]


async def test_five_requests_on_one_document_earn_no_429(
    client: PassbackClient, fake: FakePassbackServer, clock: FakeClock
) -> None:
    token = fake.issue_document()
    results = await drive(clock, *[lambda: client.get_document(token)] * 5)
    assert all(not isinstance(r, BaseException) for r in results)
    assert fake.count(status=429) == 0
    assert document_times(fake) == pytest.approx([0, 0, 60, 60, 120])


async def test_documents_do_not_wait_on_each_other(
    client: PassbackClient, fake: FakePassbackServer, clock: FakeClock
) -> None:
    tokens = [fake.issue_document() for _ in range(10)]
    results = await drive(clock, *[lambda t=t: client.get_document(t) for t in tokens * 2])
    assert all(not isinstance(r, BaseException) for r in results)
    assert document_times(fake) == [0.0] * 20


async def test_a_429_is_retried_after_its_retry_after(
    client: PassbackClient, fake: FakePassbackServer, clock: FakeClock
) -> None:
    token = fake.issue_document()
    fake.script(token, [429])
    fake.retry_after = 30
    [image] = await drive(clock, lambda: client.get_document(token))
    assert not isinstance(image, BaseException)
    assert [(r.status, r.time) for r in fake.requests] == [(429, 0.0), (200, 30.0)]


async def test_a_429_without_retry_after_waits_one_period(clock: FakeClock) -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(clock.now())
        if len(calls) == 1:
            return httpx.Response(429)  # no Retry-After header
        return httpx.Response(200, content=b"\xff\xd8\xff" + bytes(64))

    async with mock_client(handler, clock) as client:
        [image] = await drive(clock, lambda: client.get_document("doc-1"))
    assert not isinstance(image, BaseException)
    assert calls == [0.0, 60.0]


async def test_a_retry_after_beyond_the_cap_is_not_waited_out(
    fake: FakePassbackServer, clock: FakeClock
) -> None:
    token = fake.issue_document()
    fake.script(token, [429])
    fake.retry_after = 3600
    async with make_client(fake, clock, max_retries=5) as client:
        [error] = await drive(clock, lambda: client.get_document(token))
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 3600
    assert fake.count(endpoint="document") == 1


async def test_5xx_cut_and_non_image_answers_are_retried_with_backoff(clock: FakeClock) -> None:
    fake = FakePassbackServer(limit=10, clock=clock)  # faults are the subject, not budgets
    token = fake.issue_document()
    fake.script(token, [500, "cut", "non_image", "empty"])
    limiter = RateLimiter(limit=10, clock=clock)  # budget is not what this test is about
    async with make_client(fake, clock, max_retries=4, limiter=limiter) as client:
        [image] = await drive(clock, lambda: client.get_document(token))
    assert not isinstance(image, BaseException)
    assert image.content == fake.served_bytes(token)
    statuses = [r.fault or r.status for r in fake.requests]
    assert statuses == ["error", "cut", "non_image", "empty", 200]
    gaps = [b.time - a.time for a, b in zip(fake.requests, fake.requests[1:], strict=False)]
    ceilings = [0.5, 1.0, 2.0, 4.0]  # full jitter under a doubling ceiling
    assert all(0 <= gap <= ceiling for gap, ceiling in zip(gaps, ceilings, strict=True))


async def test_retries_are_bounded_and_the_last_error_is_typed(clock: FakeClock) -> None:
    fake = FakePassbackServer(limit=10, clock=clock)  # faults are the subject, not budgets
    token, other = fake.issue_document(), fake.issue_document()
    fake.script(token, [500, 500, 500])
    fake.script(other, ["non_image"] * 3)
    limiter = RateLimiter(limit=10, clock=clock)
    async with make_client(fake, clock, max_retries=2, limiter=limiter) as client:
        server_error, not_image = await drive(
            clock, lambda: client.get_document(token), lambda: client.get_document(other)
        )
        # A per-call override.
        fake.script(token, [500])
        [once] = await drive(clock, lambda: client.get_document(token, max_retries=0))
    assert isinstance(server_error, ServerError)
    assert isinstance(not_image, NotAnImageError)
    assert isinstance(once, ServerError)
    assert fake.count(endpoint="document", document=fake.document_id(token)) == 4


async def test_every_retry_goes_through_the_limiter(
    client: PassbackClient, fake: FakePassbackServer, clock: FakeClock
) -> None:
    token = fake.issue_document()
    fake.script(token, [500, 500])
    [image] = await drive(clock, lambda: client.get_document(token))
    assert not isinstance(image, BaseException)
    # Two 500s spent the budget: the third attempt waits for the period.
    assert [r.time for r in fake.requests][2] >= 60.0
    assert fake.count(status=429) == 0


async def test_a_refreshed_token_shares_the_documents_budget(
    client: PassbackClient, fake: FakePassbackServer, clock: FakeClock
) -> None:
    token = fake.issue_document()
    await drive(clock, lambda: client.get_document(token), lambda: client.get_document(token))
    new_token = await client.refresh_document_token(token)
    [image] = await drive(clock, lambda: client.get_document(new_token))
    assert not isinstance(image, BaseException)
    assert fake.count(status=429) == 0
    assert document_times(fake) == [0.0, 0.0, 60.0]


async def test_front_and_back_can_share_one_budget(
    fake: FakePassbackServer, clock: FakeClock
) -> None:
    async with make_client(fake, clock, pair_front_back=True) as client:
        front, back = (await client.get_attributes(fake.access_token)).document_tokens
        await drive(
            clock,
            lambda: client.get_document(front),
            lambda: client.get_document(front),
            lambda: client.get_document(back),
        )
    assert document_times(fake) == [0.0, 0.0, 60.0]


async def test_front_and_back_are_separate_budgets_by_default(
    client: PassbackClient, fake: FakePassbackServer, clock: FakeClock
) -> None:
    front, back = (await client.get_attributes(fake.access_token)).document_tokens
    await drive(
        clock,
        lambda: client.get_document(front),
        lambda: client.get_document(front),
        lambda: client.get_document(back),
    )
    assert document_times(fake) == [0.0, 0.0, 0.0]


async def test_clients_sharing_a_limiter_share_the_budget(
    fake: FakePassbackServer, clock: FakeClock
) -> None:
    shared = RateLimiter(clock=clock)
    token = fake.issue_document()
    async with (
        make_client(fake, clock, limiter=shared) as one,
        make_client(fake, clock, limiter=shared) as two,
    ):
        await drive(
            clock,
            lambda: one.get_document(token),
            lambda: two.get_document(token),
            lambda: one.get_document(token),
        )
    assert fake.count(status=429) == 0
    assert document_times(fake) == [0.0, 0.0, 60.0]


async def test_the_deadline_covers_waiting_and_retries(
    fake: FakePassbackServer, clock: FakeClock
) -> None:
    token = fake.issue_document()
    async with make_client(fake, clock, deadline=90.0) as client:
        results = await drive(clock, *[lambda: client.get_document(token)] * 5)
    assert sum(isinstance(r, PassbackTimeoutError) for r in results) == 1
    assert document_times(fake) == [0.0, 0.0, 60.0, 60.0]
    assert clock.now() <= 120.0


async def test_a_per_call_deadline_overrides_the_clients(
    client: PassbackClient, fake: FakePassbackServer, clock: FakeClock
) -> None:
    token = fake.issue_document()
    await drive(clock, lambda: client.get_document(token), lambda: client.get_document(token))
    [late] = await drive(clock, lambda: client.get_document(token, deadline=10.0))
    assert isinstance(late, PassbackTimeoutError)
    assert "deadline of 10 s" in str(late)


async def test_attributes_are_not_retried_once_sent(
    fake: FakePassbackServer, clock: FakeClock
) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(503)

    async with mock_client(handler, clock, api_token=fake.api_token, max_retries=3) as client:
        [error] = await drive(clock, lambda: client.get_attributes(fake.access_token))
    assert isinstance(error, ServerError)
    assert len(calls) == 1  # the access token is single-use: never replayed


async def test_attributes_are_retried_when_the_request_never_left(clock: FakeClock) -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, json={"attributes": [], "status": []})

    async with mock_client(handler, clock, retry_policy=RetryPolicy(max_retries=2)) as client:
        [attributes] = await drive(clock, lambda: client.get_attributes("abc123"))
    assert not isinstance(attributes, BaseException)
    assert len(calls) == 3


async def test_a_connection_refused_document_request_does_not_spend_budget(
    clock: FakeClock,
) -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(clock.now())
        if len(calls) <= 2:
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, content=b"\xff\xd8\xff" + bytes(64))

    async with mock_client(
        handler,
        clock,
        limit=1,
        retry_policy=RetryPolicy(max_retries=2, backoff_initial=0.001, backoff_max=0.001),
    ) as client:
        await drive(clock, lambda: client.get_document("doc-1"))
    # Refused twice, never sent: the one token was back at once each time.
    assert calls[-1] < 1.0


async def test_every_5xx_is_retried(clock: FakeClock) -> None:
    statuses = [501, 599, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        status = statuses.pop(0)
        return httpx.Response(status, content=b"\xff\xd8\xff" + bytes(64))

    async with mock_client(handler, clock, limit=10) as client:
        [image] = await drive(clock, lambda: client.get_document("doc-1"))
    assert not isinstance(image, BaseException)
    assert statuses == []


async def test_max_retries_wins_over_the_policys(clock: FakeClock) -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(clock.now())
        return httpx.Response(500)

    async with mock_client(
        handler,
        clock,
        limit=10,
        retry_policy=RetryPolicy(max_retries=5, backoff_initial=0.01),
        max_retries=1,
    ) as client:
        [error] = await drive(clock, lambda: client.get_document("doc-1"))
    assert isinstance(error, ServerError)
    assert len(calls) == 2


async def test_a_document_held_past_the_deadline_fails_at_once(
    fake: FakePassbackServer, clock: FakeClock
) -> None:
    token = fake.issue_document()
    fake.script(token, [429])
    fake.retry_after = 3600
    async with make_client(fake, clock, deadline=300.0) as client:
        [held] = await drive(clock, lambda: client.get_document(token))
        [again] = await drive(clock, lambda: client.get_document(token))
    assert isinstance(held, RateLimitError)
    assert isinstance(again, PassbackTimeoutError)
    assert again.sent is False
    assert clock.now() == 0.0  # nobody waited out a deadline that could not be met
    assert fake.count(endpoint="document") == 1


class _Highest(random.Random):
    """Draws the top of every range: a jittered backoff is then its ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


@attrs.frozen
class _NoJitter(RetryPolicy):
    """A policy that always backs off its whole ceiling (the default draws below it)."""

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return super().backoff(attempt, _Highest())


async def test_a_backoff_past_the_deadline_ends_the_call(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    # Full jitter could draw a backoff under the deadline (about 1 in 4,000
    # with a 4 s ceiling), which is a different path: this one backs off 4 s.
    async with mock_client(
        handler,
        clock,
        limit=10,
        retry_policy=_NoJitter(max_retries=10, backoff_initial=4.0, backoff_max=4.0),
        deadline=0.001,
    ) as client:
        [error] = await drive(clock, lambda: client.get_document("doc-1"))
    assert isinstance(error, PassbackTimeoutError)
    assert isinstance(error.__cause__, ServerError)
    assert clock.now() == 0.0


class _SlowBody(httpx.AsyncByteStream):
    """A body that trickles in: one chunk every 10 s of fake time."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield b"\xff\xd8\xff" + bytes(100)
        for _ in range(5):
            await self._clock.sleep(10.0)
            yield bytes(100)


# asyncio only: abandoning a body midway leaves httpx's inner async generators
# (Response.aiter_raw) to the garbage collector, which trio reports as a warning.
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_deadline_stops_a_body_that_trickles_in(
    anyio_backend: str, clock: FakeClock, tmp_path: Path
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_SlowBody(clock))

    async with mock_client(handler, clock, limit=10, deadline=25.0, max_retries=0) as client:
        [error] = await drive(
            clock, lambda: client.download_document("doc-1", tmp_path / "doc.jpg")
        )
    assert isinstance(error, PassbackTimeoutError)
    assert clock.now() == 25.0  # at the deadline itself, not when the next chunk came
    assert list(tmp_path.iterdir()) == []


async def test_a_zero_default_retry_after_is_honoured(clock: FakeClock) -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(clock.now())
        if len(times) == 1:
            return httpx.Response(429)
        return httpx.Response(200, content=JPEG_BYTES, headers={"content-type": "image/jpeg"})

    policy = RetryPolicy(default_retry_after=0.0)
    async with mock_client(handler, clock, retry_policy=policy, deadline=None) as client:
        [image] = await drive(
            clock, lambda: client.get_document("3696f8c1a8ee4ae9aab56fb38c3dbd03")
        )
    assert not isinstance(image, BaseException)
    assert times == [0.0, 0.0]


async def test_a_deadline_after_only_unsent_attempts_says_nothing_was_sent(
    clock: FakeClock,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    policy = _NoJitter(max_retries=10, backoff_initial=4.0, backoff_max=4.0)
    async with mock_client(handler, clock, retry_policy=policy, deadline=1.0) as client:
        [error] = await drive(
            clock, lambda: client.get_attributes("a1b2c3d4e5f60718293a4b5c6d7e8f90")
        )
    # The single-use access token never left: the caller need not log in again.
    assert isinstance(error, DeadlineExceededError)
    assert error.sent is False
