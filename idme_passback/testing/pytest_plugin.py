"""Pytest plugin: the ``passback_fake`` fixture.

Installed as the ``idme_passback`` pytest11 entry point, so tests just ask
for the fixture::

    @pytest.mark.asyncio          # or @pytest.mark.anyio, as your suite runs async tests
    async def test_fetch(passback_fake):
        token = passback_fake.issue_document()
        transport = httpx.ASGITransport(app=passback_fake)
        async with PassbackClient(passback_fake.api_token, base_url="http://fake/",
                                  transport=transport) as client:
            image = await client.get_document(token)
        assert image.content == passback_fake.served_bytes(token)
"""

from __future__ import annotations

import pytest

from ._server import FakePassbackServer

__all__ = ["passback_fake"]


@pytest.fixture
def passback_fake() -> FakePassbackServer:
    """A fresh :class:`FakePassbackServer` with its default, known credentials.

    ``passback_fake.api_token`` and ``passback_fake.access_token`` are the
    tokens it accepts. It reads real time (2 requests per 60 s per document);
    build your own ``FakePassbackServer(clock=FakeClock())`` to test waiting.
    """
    return FakePassbackServer()
