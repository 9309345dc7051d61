"""Shared fixtures: tokens in the seed's formats, a respx-mocked sandbox, a real Redis."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from idme_passback import PassbackClient, RateLimiter
from idme_passback.testing import FakeClock, FakePassbackServer

from ._redis import RedisNode

# The seed's own examples.
API_TOKEN = "1234567-fd03-4ca4-a93e-aae6fce8e82b"
FRONT = "d9ec9c13-f3e6-4b2e-a34f-e3f45b21206f"
BACK = "fb4ad373-45a6-4a64-bb3c-43e0c59d1ab5"
HEX_TOKEN = "3696f8c1a8ee4ae9aab56fb38c3dbd03"
REFRESHED = "8003c78ead9641bcbd284e97acac3f85"
ACCESS_TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
SANDBOX = "https://api.idmelabs.com"

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(200)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(100)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every ``pytest.mark.anyio`` test runs on asyncio and on trio."""
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when a test says so."""
    return FakeClock()


@pytest_asyncio.fixture
async def client(clock: FakeClock) -> AsyncIterator[PassbackClient]:
    """A sandbox client on fake time, for respx-mocked tests."""
    async with PassbackClient(
        API_TOKEN, environment="sandbox", limiter=RateLimiter(clock=clock)
    ) as passback:
        yield passback


#: The type of the ``client_of`` fixture.
ClientOf = Callable[..., PassbackClient]


@pytest.fixture
def client_of(clock: FakeClock) -> ClientOf:
    """Build a client of a :class:`FakePassbackServer`, served in memory at ``http://fake/``.

    ``client_of(fake, **options)``: the client (not yet entered) with the fake's API
    token; its limiter is ``RateLimiter(clock=clock)`` on the test's fake clock unless
    ``limiter=`` is passed (``limiter=None``: the client's own default, on real time).
    """

    def make(fake: FakePassbackServer, **options: Any) -> PassbackClient:
        if "limiter" not in options:
            options["limiter"] = RateLimiter(clock=clock)
        return PassbackClient(
            fake.api_token,
            base_url="http://fake/",
            transport=httpx.ASGITransport(app=fake),
            **options,
        )

    return make


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server: the one .ci/run started (``IDME_PASSBACK_REDIS_URL``), or one here.

    In CI a missing server is a failure, never a skip.
    """
    url = os.environ.get("IDME_PASSBACK_REDIS_URL")
    if url:
        yield url
        return
    with RedisNode() as node:
        yield node.url
