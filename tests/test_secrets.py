"""The three secrets never appear in logs, exceptions, tracebacks or reprs."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from idme_passback import DocumentRequest, PassbackClient, PassbackError, RateLimiter, RetryPolicy
from idme_passback.testing import FakePassbackServer

from ._leaks import Lines, all_logs
from ._loopback import free_port, serve

pytestmark = pytest.mark.anyio

API_TOKEN = "7654321-aaaa-4bbb-8ccc-ddddeeeeffff"
ACCESS_TOKEN = "acc3ss70k3n0f7h3us3rwh0s1gn3d1n0"


@pytest.fixture
def captured() -> Iterator[Lines]:
    with all_logs("anyio", "asyncio") as lines:
        yield lines


def chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def exposed(error: BaseException) -> str:
    """Everything a user could print of an error: its chain's str, repr, and the traceback."""
    parts = [str(e) + repr(e) for e in chain(error)]
    parts.append("".join(traceback.format_exception(error)))
    return "\n".join(parts)


@pytest.mark.parametrize("access_token_in", ["query", "header"])
async def test_no_secret_escapes_in_any_outcome(
    captured: Lines, tmp_path: Path, access_token_in: str
) -> None:
    fake = FakePassbackServer(API_TOKEN, ACCESS_TOKEN, limit=100, latency=0.0)
    texts: list[str] = []
    secrets = [API_TOKEN, ACCESS_TOKEN]

    with serve(fake) as base_url:
        options: dict[str, object] = {
            "base_url": base_url,
            "access_token_in": access_token_in,
            "retry_policy": RetryPolicy(max_retries=1, backoff_initial=0.001),
            "limiter": RateLimiter(limit=100, period=1.0),
        }
        async with PassbackClient(API_TOKEN, **options) as client:  # type: ignore[arg-type]
            attributes = await client.get_attributes(ACCESS_TOKEN)
            front, back = attributes.document_tokens
            secrets += [front, back]
            image = await client.get_document(front, size="300x200")
            path = await client.download_document(back, tmp_path / "back.jpg")
            new = await client.refresh_document_token(front)
            secrets.append(new)
            texts += [
                repr(client),
                repr(attributes),
                repr(attributes.document_tokens),
                repr(image),
                repr(path),
                repr(client.limiter),
                repr(list(attributes.values())),
            ]

            scripted = {
                400: [400],
                403: [403],
                429: [429, 429],
                500: [500, 500],
                "cut": ["cut"] * 2,
            }
            for steps in scripted.values():
                token = fake.issue_document()
                secrets.append(token)
                fake.script(token, steps)  # type: ignore[arg-type]
                with pytest.raises(PassbackError) as caught:
                    await client.get_document(token)
                texts.append(exposed(caught.value))

            unknown = "0123456789abcdef0123456789abcdef"
            secrets.append(unknown)
            with pytest.raises(PassbackError) as caught:
                await client.get_document(unknown)  # 404
            texts.append(exposed(caught.value))

            results = await client.fetch_all(
                [front, DocumentRequest(unknown), "bad/token"], concurrency=2
            )
            texts += [repr(r) for r in results] + [exposed(r.error) for r in results if r.error]

            with pytest.raises(PassbackError) as caught:
                await client.get_attributes("wr0ngacc3ss70k3nvalu3")  # 401
            texts.append(exposed(caught.value))

        async with PassbackClient("w-r-o-n-g-api-token-value", **options) as wrong:  # type: ignore[arg-type]
            with pytest.raises(PassbackError) as caught:
                await wrong.get_document(front)  # 401
            texts.append(exposed(caught.value))
            secrets.append("w-r-o-n-g-api-token-value")

    refused = PassbackClient(API_TOKEN, base_url=f"http://127.0.0.1:{free_port()}/", max_retries=0)
    async with refused:
        with pytest.raises(PassbackError) as caught:
            await refused.get_document(front)
        texts.append(exposed(caught.value))
        with pytest.raises(PassbackError) as caught:
            await refused.get_attributes(ACCESS_TOKEN)
        texts.append(exposed(caught.value))

    slow = FakePassbackServer(API_TOKEN, ACCESS_TOKEN, latency=1.0)
    slow_token = slow.issue_document()
    secrets.append(slow_token)
    with serve(slow) as base_url:
        async with PassbackClient(API_TOKEN, base_url=base_url, timeout=0.2, max_retries=0) as c:
            with pytest.raises(PassbackError) as caught:
                await c.get_document(slow_token)  # timeout
            texts.append(exposed(caught.value))

    # httpx's own request line was there, and redacted.
    assert any("HTTP Request: POST" in line for line in captured.lines)
    assert any("[REDACTED]" in line for line in captured.lines)
    assert any("httpcore" in line for line in captured.lines)
    everything = "\n".join(captured.lines + texts)
    for secret in secrets:
        assert secret not in everything, f"a secret leaked: {secret[:4]}"


def test_the_httpx_request_line_is_redacted_for_any_transport(captured: Lines) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"\xff\xd8\xff" + bytes(32))

    async def main() -> None:
        async with PassbackClient(API_TOKEN, transport=httpx.MockTransport(handler)) as client:
            await client.get_document("d9ec9c13-f3e6-4b2e-a34f-e3f45b21206f")

    anyio.run(main)
    [line] = [line for line in captured.lines if "HTTP Request" in line]
    assert API_TOKEN not in line
    assert "d9ec9c13-f3e6-4b2e-a34f-e3f45b21206f" not in line
    assert "token=[REDACTED]" in line
    assert "/documents/d9ec9c\u2026" in line
