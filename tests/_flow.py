"""The whole flow over loopback, every outcome a production stack records.

Attributes, both images (one in memory, one streamed to disk), a refresh,
a 404, a 429, a 500 and a timeout, against the fake on uvicorn (the timeout
against a raw server that never answers). Each failure goes to ``report``,
the way an application hands one to its error tracker.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import attrs

from idme_passback import (
    NotFoundError,
    PassbackClient,
    PassbackTimeoutError,
    RateLimiter,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from idme_passback.testing import FakePassbackServer

from ._hostile import Request, hostile_server
from ._loopback import serve

API_TOKEN = "7654321-aaaa-4bbb-8ccc-ddddeeeeffff"
ACCESS_TOKEN = "acc3ss70k3n0f7h3us3rwh0s1gn3d1n0"
UNKNOWN = "0123456789abcdef0123456789abcdef"


@attrs.define
class Flow:
    """The secrets the flow used (every one must stay out of everything captured)."""

    secrets: list[str] = attrs.Factory(lambda: [API_TOKEN, ACCESS_TOKEN, UNKNOWN])
    failures: list[BaseException] = attrs.Factory(list)


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[tuple[FakePassbackServer, str, str]]:
    """The fake on uvicorn, and a raw server that holds each request unanswered."""
    fake = FakePassbackServer(API_TOKEN, ACCESS_TOKEN, limit=100, latency=0.0)
    release = threading.Event()

    def stall(request: Request) -> bytes:
        release.wait(5)
        return b""

    with serve(fake) as base_url, hostile_server(stall) as stalled:
        try:
            yield fake, base_url, stalled.base_url
        finally:
            release.set()


async def whole_flow(
    tmp_path: Path,
    report: Callable[[BaseException], None],
    *,
    access_token_in: str = "header",
) -> Flow:
    """Run every step once; return the secrets used and the failures reported."""
    flow = Flow()
    options: dict[str, object] = {
        "access_token_in": access_token_in,
        "retry_policy": RetryPolicy(max_retries=1, backoff_initial=0.001),
        "limiter": RateLimiter(limit=100, period=1.0),
    }
    async with servers() as (fake, base_url, stalled_url):
        async with PassbackClient(API_TOKEN, base_url=base_url, **options) as client:  # type: ignore[arg-type]
            attributes = await client.get_attributes(ACCESS_TOKEN)
            front, back = attributes.document_tokens
            assert back is not None
            flow.secrets += [front, back]
            await client.get_document(front, size="300x200")
            await client.download_document(back, tmp_path / "back.jpg")
            new_token = await client.refresh_document_token(front)
            flow.secrets.append(new_token)

            try:
                await client.get_document(UNKNOWN)
            except NotFoundError as exc:
                report(exc)
                flow.failures.append(exc)

            # Each token is handed out just before its call, as an attributes answer would:
            # what the caller holds and the library never saw is the caller's to guard.
            limited = fake.issue_document()
            flow.secrets.append(limited)
            fake.script(limited, [429])
            try:
                await client.get_document(limited, max_retries=0)
            except RateLimitError as exc:
                report(exc)
                flow.failures.append(exc)
            spent = fake.issue_document()
            flow.secrets.append(spent)
            fake.script(spent, [500])
            try:
                await client.get_document(spent, max_retries=0)
            except ServerError as exc:
                report(exc)
                flow.failures.append(exc)

        slow = fake.issue_document()
        flow.secrets.append(slow)
        async with PassbackClient(
            API_TOKEN, base_url=stalled_url, timeout=0.05, max_retries=0
        ) as stalled:
            try:
                await stalled.get_document(slow)
            except PassbackTimeoutError as exc:
                report(exc)
                flow.failures.append(exc)
    assert [type(e).__name__ for e in flow.failures] == [
        "NotFoundError",
        "RateLimitError",
        "ServerError",
        "PassbackTimeoutError",
    ]
    return flow
