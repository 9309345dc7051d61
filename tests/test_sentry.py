"""Sentry at its defaults sends no secret: events, frame variables, breadcrumbs, transactions.

``sentry_sdk.init(dsn=...)`` as an application writes it, with the httpx
and logging integrations it enables by itself and tracing on; a capturing
transport keeps every envelope as it would go on the wire. Nothing is
configured for the library: it registers its own event processor.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from idme_passback import NotFoundError, PassbackClient, ServerError

from ._flow import API_TOKEN, whole_flow
from ._hostile import Request, hostile_server, response
from ._leaks import assert_no_leak, otel_capture, sentry_capture, sentry_items, spans_text

sentry_sdk = pytest.importorskip("sentry_sdk")

pytestmark = pytest.mark.anyio

app_logger = logging.getLogger("an_application")


def report(exc: BaseException) -> None:
    """What an application does with a failure: capture it, and log it."""
    sentry_sdk.capture_exception(exc)
    app_logger.error("the document could not be fetched", exc_info=exc)


@pytest.mark.parametrize("access_token_in", ["header", "query"])
async def test_the_whole_flow_sends_sentry_no_secret(tmp_path: Path, access_token_in: str) -> None:
    with (
        sentry_capture(traces_sample_rate=1.0) as sent,
        sentry_sdk.start_transaction(op="task", name="whole flow"),
    ):
        flow = await whole_flow(tmp_path, report, access_token_in=access_token_in)
    items = sentry_items(sent)
    errors = [i for i in items if i.get("type") != "transaction" and "exception" in i]
    transactions = [i for i in items if i.get("type") == "transaction"]
    # The capture is not vacuous: each failure twice (captured, logged), with local
    # variables, the library's requests as breadcrumbs and as spans.
    assert len(errors) >= len(flow.failures)
    frames = [
        f for e in errors for v in e["exception"]["values"] for f in v["stacktrace"]["frames"]
    ]
    assert any(f.get("vars") and f.get("function") == "whole_flow" for f in frames)
    crumbs = [c for e in errors for c in e.get("breadcrumbs", {}).get("values", [])]
    assert any("/api/public/v3/documents/" in c.get("data", {}).get("url", "") for c in crumbs)
    [transaction] = transactions
    descriptions = [s.get("description", "") for s in transaction["spans"]]
    assert any("/api/public/v3/documents/" in d for d in descriptions)
    assert any("attributes.json" in d for d in descriptions)
    assert_no_leak("\n".join(sent), flow.secrets, "Sentry's envelopes")


async def test_sentry_and_opentelemetry_together_send_no_secret(tmp_path: Path) -> None:
    # Both integrations at once, as a production stack runs them.
    with (
        sentry_capture(traces_sample_rate=1.0) as sent,
        otel_capture() as state,
        sentry_sdk.start_transaction(op="task", name="whole flow"),
    ):
        flow = await whole_flow(tmp_path, report, access_token_in="query")
    assert len(sentry_items(sent)) > len(flow.failures)
    assert "idme_passback.get_document" in spans_text(state)
    assert_no_leak("\n".join(sent) + spans_text(state), flow.secrets, "Sentry or the spans")


async def test_the_library_frames_send_no_locals_and_the_callers_keep_theirs() -> None:
    def answer(request: Request) -> bytes:
        return response(404, b"no such document")

    token = "d9ec9c13-f3e6-4b2e-a34f-e3f45b21206f"
    with sentry_capture() as sent, hostile_server(answer) as server:
        async with PassbackClient(API_TOKEN, base_url=server.base_url) as client:
            try:
                await client.get_document(token)
            except NotFoundError as exc:
                sentry_sdk.capture_exception(exc)
    [event] = [i for i in sentry_items(sent) if "exception" in i]
    frames = event["exception"]["values"][0]["stacktrace"]["frames"]
    ours = [f for f in frames if f["module"].startswith("idme_passback")]
    assert ours
    assert all("vars" not in f for f in ours)
    [mine] = [f for f in frames if f["function"].startswith("test_the_library_frames")]
    # The caller's own locals are sent, with the secret they hold scrubbed.
    assert mine["vars"]["token"] != repr(token)
    assert_no_leak("\n".join(sent), [API_TOKEN, token], "Sentry's event")


async def test_a_hostile_reason_phrase_is_filtered_from_breadcrumbs_and_spans() -> None:
    def answer(request: Request) -> bytes:
        echoed = " ".join(request.secrets).encode()
        return response(500, b"oops", reason=b"Internal " + echoed)

    token = "3696f8c1a8ee4ae9aab56fb38c3dbd03"
    with (
        sentry_capture(traces_sample_rate=1.0) as sent,
        hostile_server(answer) as server,
        sentry_sdk.start_transaction(name="t"),
    ):
        async with PassbackClient(API_TOKEN, base_url=server.base_url, max_retries=0) as c:
            try:
                await c.get_document(token)
            except ServerError as exc:
                sentry_sdk.capture_exception(exc)
    items = sentry_items(sent)
    crumb = next(
        c["data"]
        for i in items
        for c in i.get("breadcrumbs", {}).get("values", [])
        if c.get("category") == "httplib"
    )
    assert crumb["reason"] == "[Filtered]"
    assert "token=[REDACTED]" in crumb["http.query"]
    [transaction] = [i for i in items if i.get("type") == "transaction"]
    [span] = [s for s in transaction["spans"] if s.get("op") == "http.client"]
    assert span["data"]["reason"] == "[Filtered]"
    assert "/documents/3696f8\u2026" in span["description"]
    assert_no_leak("\n".join(sent), [API_TOKEN, token], "Sentry's envelopes")


async def test_an_applications_own_requests_keep_their_breadcrumbs() -> None:
    # Only the library's own requests are rewritten; an unrelated one is left as it was.
    def answer(request: Request) -> bytes:
        return response(200, b"{}", reason=b"Fine Thanks")

    # An address no client in this process is pointed at: on 127.0.0.1 the port may
    # be one an earlier test's client used, and that base URL is the library's own.
    with sentry_capture() as sent, hostile_server(answer, host="127.0.0.9") as server:
        PassbackClient(API_TOKEN, base_url="http://127.0.0.1:9/")  # the library is in use
        async with httpx.AsyncClient() as http:
            await http.get(server.base_url + "orders/42?page=2")
        sentry_sdk.capture_message("look")
    [event] = sentry_items(sent)
    [crumb] = [c for c in event["breadcrumbs"]["values"] if c.get("category") == "httplib"]
    assert crumb["data"]["reason"] == "Fine Thanks"
    assert crumb["data"]["url"].endswith("/orders/42")
    assert crumb["data"]["http.query"] == "page=2"


def test_an_event_that_cannot_be_scrubbed_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from idme_passback import _sentry  # noqa: PLC0415 - the processor's failure path

    def broken(event: object) -> object:
        raise RuntimeError("a scrubber bug")

    with sentry_capture() as sent:
        PassbackClient(API_TOKEN)
        monkeypatch.setattr(_sentry, "clean_event", broken)
        sentry_sdk.capture_message(f"holds {API_TOKEN}")
    assert not [i for i in sentry_items(sent) if "message" in json.dumps(i)]
