"""OpenTelemetry: no secret in any span or metric, and the library's own telemetry.

The generic httpx instrumentation is on, as ``opentelemetry-instrument``
turns it on (``HTTPXClientInstrumentor().instrument()``); spans go to an
in-memory exporter and metrics to an in-memory reader (opentelemetry-sdk).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from idme_passback import NotFoundError, OAuthClient, PassbackClient, PassbackError, RateLimiter
from idme_passback.testing import FakeClock, FakePassbackServer, wait_all_tasks_blocked

from ._flow import whole_flow
from ._hostile import Request, hostile_server
from ._leaks import (
    assert_no_leak,
    metric_points,
    metrics_text,
    otel,
    otel_capture,
    spans,
    spans_text,
)
from ._loopback import serve

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.instrumentation.httpx")

pytestmark = pytest.mark.anyio


def total(state: dict[str, Any], name: str, **wanted: object) -> float:
    """The sum of a metric's points whose attributes include ``wanted``."""
    found = 0.0
    for point in metric_points(state, name):
        attributes = dict(point.attributes)
        if all(
            attributes.get(f"idme_passback.{k}", attributes.get(k)) == v for k, v in wanted.items()
        ):
            found += getattr(point, "value", None) or getattr(point, "sum", 0)
    return found


def by_name(state: dict[str, Any]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for span in spans(state):
        found.setdefault(span.name, []).append(span)
    return found


def fake_client(fake: FakePassbackServer, clock: FakeClock, **options: Any) -> PassbackClient:
    return PassbackClient(
        fake.api_token,
        base_url="http://fake/",
        transport=httpx.ASGITransport(app=fake),
        limiter=options.pop("limiter", None) or RateLimiter(clock=clock),
        **options,
    )


@pytest.mark.parametrize("access_token_in", ["header", "query"])
async def test_the_whole_flow_sends_opentelemetry_no_secret(
    tmp_path: Path, access_token_in: str
) -> None:
    with otel_capture() as state:
        flow = await whole_flow(tmp_path, lambda exc: None, access_token_in=access_token_in)
    names = by_name(state)
    assert len(names["idme_passback.get_document"]) == 5  # an image, 404, 429, 500, timeout
    assert {"idme_passback.get_attributes", "idme_passback.refresh_document_token"} <= set(names)
    assert "idme_passback.download_document" in names
    # The library's requests are not traced twice, and never with their URLs.
    generic = [s for s in spans(state) if not s.name.startswith("idme_passback.")]
    assert not generic
    assert_no_leak(spans_text(state) + metrics_text(state), flow.secrets, "the telemetry")


async def test_the_generic_instrumentation_still_traces_the_applications_requests() -> None:
    fake = FakePassbackServer()
    with otel_capture() as state, serve(fake) as base_url:
        async with httpx.AsyncClient() as http:
            await http.get(base_url + "healthz")
        async with PassbackClient(fake.api_token, base_url=base_url) as client:
            token = fake.issue_document()
            await client.get_document(token)
    names = [s.name for s in spans(state)]
    assert names == ["GET", "idme_passback.get_document"]
    [generic] = [s for s in spans(state) if s.name == "GET"]
    assert str(generic.attributes.get("url.full", generic.attributes.get("http.url"))).endswith(
        "/healthz"
    )


async def test_each_public_call_is_one_span_with_safe_attributes(
    tmp_path: Path, clock: FakeClock
) -> None:
    fake = FakePassbackServer(clock=clock, seed=3)
    state = otel()
    state["exporter"].clear()
    async with fake_client(fake, clock) as client:
        attributes = await client.get_attributes(fake.access_token)
        front, back = attributes.document_tokens
        assert back is not None
        image = await client.get_document(front, size="300x200")
        await client.download_document(back, tmp_path / "back.jpg")
        new_token = await client.refresh_document_token(front)
    names = by_name(state)
    assert sorted(names) == [
        "idme_passback.download_document",
        "idme_passback.get_attributes",
        "idme_passback.get_document",
        "idme_passback.refresh_document_token",
    ]
    [get] = names["idme_passback.get_document"]
    assert dict(get.attributes) == {
        "idme_passback.endpoint": "document",
        "server.address": "fake",
        "idme_passback.document.digest": hashlib.sha256(front.encode()).hexdigest(),
        "idme_passback.attempts": 1,
        "idme_passback.limiter.wait": 0.0,
        "idme_passback.bytes": len(image.content),
        "http.response.status_code": 200,
    }
    assert get.kind.name == "CLIENT"
    [download] = names["idme_passback.download_document"]
    assert download.attributes["idme_passback.bytes"] == (tmp_path / "back.jpg").stat().st_size
    [attrs_span] = names["idme_passback.get_attributes"]
    assert attrs_span.attributes["idme_passback.endpoint"] == "attributes"
    assert "idme_passback.document.digest" not in attrs_span.attributes
    assert_no_leak(
        spans_text(state),
        [fake.api_token, fake.access_token, front, back, new_token],
        "the library's spans",
    )


async def test_a_429_is_one_span_of_two_attempts_with_its_wait_and_its_metrics(
    clock: FakeClock,
) -> None:
    fake = FakePassbackServer(clock=clock, seed=4)
    fake.retry_after = 30
    state = otel()
    state["exporter"].clear()
    before = {
        "limited": total(state, "idme_passback.rate_limited", endpoint="document"),
        "retries": total(state, "idme_passback.retries", endpoint="document"),
        "ok": total(state, "idme_passback.requests", endpoint="document", outcome="ok"),
        "429": total(state, "idme_passback.requests", outcome="rate_limited"),
        "waits": sum(p.count for p in metric_points(state, "idme_passback.limiter.wait")),
    }
    async with fake_client(fake, clock) as client:
        token = fake.issue_document()
        fake.script(token, [429])
        async with anyio.create_task_group() as group:
            group.start_soon(client.get_document, token)
            await clock.run_until_idle()
    [span] = by_name(state)["idme_passback.get_document"]
    assert span.attributes["idme_passback.attempts"] == 2
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["idme_passback.limiter.wait"] == pytest.approx(30.0)
    assert total(state, "idme_passback.rate_limited", endpoint="document") == before["limited"] + 1
    assert total(state, "idme_passback.retries", endpoint="document") == before["retries"] + 1
    assert total(state, "idme_passback.requests", endpoint="document", outcome="ok") == (
        before["ok"] + 1
    )
    assert total(state, "idme_passback.requests", outcome="rate_limited") == before["429"] + 1
    waits = sum(p.count for p in metric_points(state, "idme_passback.limiter.wait"))
    assert waits == before["waits"] + 2


async def test_the_queue_depth_counts_the_calls_waiting_for_a_permit(clock: FakeClock) -> None:
    fake = FakePassbackServer(clock=clock, seed=5)
    state = otel()
    depth = total(state, "idme_passback.limiter.queue_depth")
    async with fake_client(fake, clock, limiter=RateLimiter(limit=1, clock=clock)) as client:
        token = fake.issue_document()
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(client.get_document, token)
            await wait_all_tasks_blocked()
            assert total(state, "idme_passback.limiter.queue_depth") == depth + 2
            await clock.run_until_idle()
    assert total(state, "idme_passback.limiter.queue_depth") == depth


async def test_a_failed_call_records_its_error_type_and_no_token(clock: FakeClock) -> None:
    fake = FakePassbackServer(clock=clock, seed=6)
    state = otel()
    state["exporter"].clear()
    unknown = "0123456789abcdef0123456789abcdef"
    async with fake_client(fake, clock) as client:
        with pytest.raises(NotFoundError):
            await client.get_document(unknown)
    [span] = by_name(state)["idme_passback.get_document"]
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == "NotFoundError"
    assert span.attributes["http.response.status_code"] == 404
    [event] = span.events
    assert event.attributes["exception.type"] == "NotFoundError"
    assert "404" in event.attributes["exception.message"]
    assert_no_leak(spans_text(state), [fake.api_token, unknown], "the span")


async def test_a_malformed_token_endpoint_answer_leaves_no_secret_in_a_span() -> None:
    code = "c0d3-th4t-th3-us3r-br0ught-b4ck-1234"

    def answer(request: Request) -> bytes:
        return b"HTTP/1.1 20" + code.encode() + b"\r\n\r\n"

    with otel_capture() as state, hostile_server(answer) as server:
        async with OAuthClient(
            "client-id",
            client_secret="s3cr3t-0f-th3-c0nsum3r-4pp-5678",
            redirect_uri="https://app.example/callback",
            base_url=server.base_url,
        ) as oauth:
            request = oauth.authorization_request(scopes=["login"])
            with pytest.raises(PassbackError):
                await oauth.exchange_code(code, request)
    assert_no_leak(spans_text(state), [code], "the token endpoint's span")
