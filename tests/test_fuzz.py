"""Hypothesis over every parser of outside input: only the documented errors escape."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idme_passback import (
    DocumentTokensMissingError,
    InvalidSizeError,
    InvalidTokenError,
    MalformedResponseError,
    PassbackClient,
    parse_retry_after,
    parse_size,
)

API_TOKEN = "1234567-fd03-4ca4-a93e-aae6fce8e82b"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
attribute = st.fixed_dictionaries(
    {},
    optional={
        "handle": st.text() | json_values,
        "name": st.text() | json_values,
        "value": json_values,
    },
)
payloads = json_values | st.fixed_dictionaries(
    {},
    optional={
        "attributes": st.lists(attribute | json_values, max_size=4) | json_values,
        "status": st.lists(json_values, max_size=3) | json_values,
    },
)


class Recorder:
    """A transport that records what reached it and answers with a fixed response."""

    def __init__(self, response: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.response = response

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.response is None:
            return httpx.Response(200, content=b"\xff\xd8\xff" + bytes(16))
        return self.response


def run(coroutine: Any) -> Any:
    async def main() -> Any:
        return await coroutine

    return anyio.run(main)


@given(st.one_of(st.text(max_size=30), st.tuples(json_values, json_values), json_values))
def test_sizes_raise_only_invalid_size_error(value: Any) -> None:
    try:
        parsed = parse_size(value)
    except InvalidSizeError:
        return
    assert parsed is None or (100 <= parsed.width <= 1000 and 100 <= parsed.height <= 1000)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(token=st.text(max_size=300), size=st.one_of(st.none(), st.text(max_size=12)))
def test_invalid_input_sends_nothing(token: str, size: str | None) -> None:
    recorder = Recorder()

    async def attempt() -> None:
        async with PassbackClient(API_TOKEN, transport=httpx.MockTransport(recorder)) as client:
            await client.get_document(token, size=size)

    try:
        run(attempt())
    except (InvalidTokenError, InvalidSizeError):
        assert recorder.requests == []
        return
    # Accepted: exactly one request, to exactly the document endpoint, token intact.
    [request] = recorder.requests
    assert request.url.host == "api.idmelabs.com"
    assert request.url.path == f"/api/public/v3/documents/{token}"
    assert request.url.params["token"] == API_TOKEN
    assert set(request.url.params) <= {"token", "size"}


@given(st.text(max_size=5000))
def test_access_tokens_never_alter_the_request(token: str) -> None:
    recorder = Recorder(httpx.Response(200, json={"attributes": [], "status": []}))

    async def attempt() -> None:
        for mode in ("header", "query"):
            async with PassbackClient(
                API_TOKEN, transport=httpx.MockTransport(recorder), access_token_in=mode
            ) as client:
                await client.get_attributes(token)

    try:
        run(attempt())
    except InvalidTokenError:
        assert recorder.requests == []
        return
    [in_header, in_query] = recorder.requests
    for request in (in_header, in_query):
        assert request.url.path == "/api/public/v3/attributes.json"
    assert in_header.headers["authorization"] == f"Bearer {token}"
    assert not in_header.url.query
    assert dict(in_query.url.params) == {"access_token": token}


@given(st.one_of(st.none(), st.text(max_size=80)))
def test_retry_after_parses_or_gives_none(value: str | None) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or seconds >= 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", 30.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", None),
        ("soon", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after_examples(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_attributes_payloads_raise_only_documented_errors(payload: Any) -> None:
    body = json.dumps(payload).encode()
    recorder = Recorder(httpx.Response(200, content=body))

    async def attempt() -> Any:
        async with PassbackClient(API_TOKEN, transport=httpx.MockTransport(recorder)) as client:
            return await client.get_attributes("a1b2c3")

    try:
        attributes = run(attempt())
    except MalformedResponseError:
        return
    repr(attributes)
    try:
        tokens = attributes.document_tokens
    except (DocumentTokensMissingError, MalformedResponseError):
        return
    assert isinstance(tokens.front, str)
    assert isinstance(tokens.back, str)
