"""Fault injection over a real loopback socket: uvicorn serving the fake server."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest

from idme_passback import (
    PassbackClient,
    PassbackConnectionError,
    PassbackError,
    PassbackTimeoutError,
    RateLimiter,
    RetryPolicy,
)
from idme_passback._files import TEMP_PREFIX
from idme_passback.testing import FakePassbackServer

from ._loopback import free_port, serve

pytestmark = pytest.mark.anyio


def client_for(fake: FakePassbackServer, base_url: str, **options: object) -> PassbackClient:
    return PassbackClient(fake.api_token, base_url=base_url, **options)  # type: ignore[arg-type]


async def test_500_downloads_through_injected_faults_arrive_whole(tmp_path: Path) -> None:
    rng = random.Random(2026)

    def latency() -> float:
        return 3.0 if rng.random() < 0.01 else 0.0  # slower than the client's read timeout

    fake = FakePassbackServer(
        limit=2,
        period=1.0,
        seed=11,
        error_rate=0.10,
        cut_body_rate=0.05,
        non_image_rate=0.03,
        throttle_rate=0.05,
        latency=latency,
    )
    tokens = [fake.issue_document() for _ in range(500)]
    with serve(fake) as base_url:
        async with (
            client_for(
                fake,
                base_url,
                limiter=RateLimiter(2, 1.0),
                timeout=httpx.Timeout(1.0, connect=5.0),
                retry_policy=RetryPolicy(max_retries=5, backoff_initial=0.05, backoff_max=0.5),
            ) as client,
            client.download_many(tokens, tmp_path, concurrency=32) as job,
        ):
            results = [r async for r in job]

    assert sorted(r.index for r in results) == list(range(500))
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    for result in ok:
        assert result.path is not None
        assert result.path.parent == tmp_path
        assert result.path.read_bytes() == fake.served_bytes(tokens[result.index])
    for result in failed:
        assert isinstance(result.error, PassbackError)
    on_disk = sorted(p.name for p in tmp_path.iterdir())
    assert on_disk == sorted(r.path.name for r in ok if r.path is not None)
    assert not any(name.startswith(TEMP_PREFIX) for name in on_disk)
    assert len(ok) >= 495  # at least 99%
    faults = Counter(r.fault for r in fake.requests if r.endpoint == "document")
    # Every kind of fault was actually injected, on the wire.
    assert {"error", "cut", "non_image", "throttle"} <= set(faults)
    print(  # the figures for the issue's note; shown with pytest -s
        f"\nfault injection: {len(ok)}/500 ok, {len(failed)} failed, "
        f"{len(fake.requests)} requests, faults {dict(faults)}, "
        f"429 from limits {fake.count(status=429) - faults['throttle']}"
    )


async def test_a_connection_refused_is_a_typed_unsent_error() -> None:
    port = free_port()  # nothing listens there
    fake = FakePassbackServer()
    async with client_for(fake, f"http://127.0.0.1:{port}/", max_retries=0) as client:
        with pytest.raises(PassbackConnectionError) as caught:
            await client.get_document(fake.issue_document())
    assert caught.value.sent is False


async def test_a_response_slower_than_the_timeout_is_a_typed_error() -> None:
    fake = FakePassbackServer(latency=1.0)
    with serve(fake) as base_url:
        async with client_for(fake, base_url, max_retries=0, timeout=0.2) as client:
            with pytest.raises(PassbackTimeoutError) as caught:
                await client.get_document(fake.issue_document())
    assert caught.value.sent is True  # it may have been counted: its token is spent


async def test_a_connection_dropped_mid_body_is_retried(tmp_path: Path) -> None:
    fake = FakePassbackServer(limit=10)
    token = fake.issue_document()
    fake.script(token, ["cut", "cut"])
    with serve(fake) as base_url:
        async with client_for(
            fake,
            base_url,
            limiter=RateLimiter(limit=10),
            retry_policy=RetryPolicy(max_retries=2, backoff_initial=0.01),
        ) as client:
            path = await client.download_document(token, tmp_path / "doc.jpg")
    assert path.read_bytes() == fake.served_bytes(token)
    assert [p.name for p in tmp_path.iterdir()] == ["doc.jpg"]


async def test_cancelling_a_download_midway_leaves_no_file(tmp_path: Path) -> None:
    fake = FakePassbackServer(image_bytes=b"\xff\xd8\xff" + bytes(8 * 1024 * 1024), limit=1)
    token = fake.issue_document()
    limiter = RateLimiter(1, 60.0)
    with serve(fake) as base_url:
        async with client_for(fake, base_url, limiter=limiter) as client:
            written: list[Path] = []

            async def download() -> None:
                written.append(await client.download_document(token, tmp_path / "doc.jpg"))

            async with anyio.create_task_group() as group:
                group.start_soon(download)
                # Wait until the temporary file exists, then cancel mid-body.
                with anyio.fail_after(10):
                    while not any(tmp_path.iterdir()):
                        await anyio.sleep(0.001)
                group.cancel_scope.cancel()
            assert written == []
            assert list(tmp_path.iterdir()) == []
            # The request had left: its token counts as spent, as the limiter promises.
            with anyio.move_on_after(0.2) as waited:
                async with limiter.acquire(token):
                    pass
            assert waited.cancelled_caught
