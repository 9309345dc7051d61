"""The fake Passback server, exercised with raw httpx requests over ASGITransport."""

from __future__ import annotations

import io
import re
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from idme_passback.sizing import delivered_size
from idme_passback.testing import (
    DEFAULT_ACCESS_TOKEN,
    DEFAULT_API_TOKEN,
    FakeClock,
    FakePassbackServer,
    RequestRecord,
)

ATTRIBUTES = "/api/public/v3/attributes.json"
DOCUMENTS = "/api/public/v3/documents/"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
HEX32 = re.compile(r"[0-9a-f]{32}")


def connect(fake: FakePassbackServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=fake), base_url="http://fake")


async def fetch(
    http: httpx.AsyncClient,
    token: str,
    *,
    size: str | None = None,
    api_token: str | None = DEFAULT_API_TOKEN,
) -> httpx.Response:
    params: dict[str, str] = {}
    if api_token is not None:
        params["token"] = api_token
    if size is not None:
        params["size"] = size
    return await http.post(DOCUMENTS + token, params=params)


async def refresh(
    http: httpx.AsyncClient, token: str, *, api_token: str = DEFAULT_API_TOKEN
) -> httpx.Response:
    return await http.post(DOCUMENTS + "refresh/" + token, params={"token": api_token})


def dimensions(body: bytes, expected_format: str = "JPEG") -> tuple[int, int]:
    with Image.open(io.BytesIO(body)) as image:
        assert image.format == expected_format
        image.load()
        width, height = image.size
        return (width, height)


# ---------------------------------------------------------------------------- attributes


@pytest.mark.anyio
async def test_attributes_payload_has_the_v3_shape_and_fresh_tokens_per_call() -> None:
    fake = FakePassbackServer()
    async with connect(fake) as http:
        first = await http.get(ATTRIBUTES, params={"access_token": DEFAULT_ACCESS_TOKEN})
        second = await http.get(ATTRIBUTES, params={"access_token": DEFAULT_ACCESS_TOKEN})
    assert first.status_code == 200
    payload = first.json()
    assert payload["status"] == [{"group": "identity", "subgroups": ["IAL2"], "verified": True}]
    by_handle = {item["handle"]: item for item in payload["attributes"]}
    assert by_handle["fname"] == {"handle": "fname", "name": "First Name", "value": "Jane"}
    assert {"lname", "email"} <= by_handle.keys()
    tokens = by_handle["document_tokens"]
    assert tokens["name"] == "Document Passback Tokens"
    front, back = tokens["value"]["front"], tokens["value"]["back"]
    assert UUID.fullmatch(front)
    assert UUID.fullmatch(back)
    again = {i["handle"]: i for i in second.json()["attributes"]}["document_tokens"]["value"]
    assert len({front, back, again["front"], again["back"]}) == 4
    # Each side is its own document: four documents from two calls.
    ids = {fake.document_id(t) for t in (front, back, again["front"], again["back"])}
    assert len(ids) == 4


@pytest.mark.anyio
async def test_attributes_accepts_a_bearer_header() -> None:
    fake = FakePassbackServer()
    async with connect(fake) as http:
        response = await http.get(
            ATTRIBUTES, headers={"Authorization": f"Bearer {DEFAULT_ACCESS_TOKEN}"}
        )
    assert response.status_code == 200
    assert fake.requests[-1].token_via == "header"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({}, {}),
        ({"access_token": "wrong"}, {}),
        ({}, {"Authorization": "Bearer wrong"}),
        ({}, {"Authorization": f"Basic {DEFAULT_ACCESS_TOKEN}"}),
    ],
)
async def test_attributes_without_a_valid_access_token_is_401(
    params: dict[str, str], headers: dict[str, str]
) -> None:
    fake = FakePassbackServer()
    async with connect(fake) as http:
        response = await http.get(ATTRIBUTES, params=params, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert DEFAULT_ACCESS_TOKEN not in response.text


@pytest.mark.anyio
async def test_single_use_access_tokens_refuse_a_second_call() -> None:
    fake = FakePassbackServer(single_use_access_tokens=True)
    fresh = fake.issue_access_token()
    async with connect(fake) as http:
        first = await http.get(ATTRIBUTES, params={"access_token": DEFAULT_ACCESS_TOKEN})
        reused = await http.get(ATTRIBUTES, params={"access_token": DEFAULT_ACCESS_TOKEN})
        other = await http.get(ATTRIBUTES, params={"access_token": fresh})
    assert [first.status_code, reused.status_code, other.status_code] == [200, 401, 200]


@pytest.mark.anyio
async def test_attributes_without_document_tokens_when_the_feature_is_off() -> None:
    fake = FakePassbackServer(document_tokens_enabled=False)
    async with connect(fake) as http:
        response = await http.get(ATTRIBUTES, params={"access_token": DEFAULT_ACCESS_TOKEN})
    handles = [item["handle"] for item in response.json()["attributes"]]
    assert "fname" in handles
    assert "document_tokens" not in handles


# ---------------------------------------------------------------------------- documents


@pytest.mark.anyio
@pytest.mark.parametrize("api_token", [None, "", "1234567-fd03-4ca4-a93e-000000000000"])
async def test_document_without_the_api_token_is_401_and_not_counted(
    api_token: str | None,
) -> None:
    fake = FakePassbackServer()
    token = fake.issue_document()
    async with connect(fake) as http:
        response = await fetch(http, token, api_token=api_token)
        assert response.status_code == 401
        assert (await fetch(http, token)).status_code == 200
        assert (await fetch(http, token)).status_code == 200
    assert fake.count(status=401, counted=False) == 1


@pytest.mark.anyio
async def test_unknown_document_token_is_404() -> None:
    fake = FakePassbackServer()
    async with connect(fake) as http:
        response = await fetch(http, "3696f8c1a8ee4ae9aab56fb38c3dbd03")
        refreshed = await refresh(http, "3696f8c1a8ee4ae9aab56fb38c3dbd03")
    assert response.status_code == 404
    assert refreshed.status_code == 404
    assert fake.requests[-1].document is None


@pytest.mark.anyio
@pytest.mark.parametrize("size", ["99x200", "abc", "300x1001", ""])
async def test_a_size_the_sizing_module_rejects_is_400_and_not_counted(size: str) -> None:
    fake = FakePassbackServer()
    token = fake.issue_document()
    async with connect(fake) as http:
        response = await fetch(http, token, size=size)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_size"
        statuses = [(await fetch(http, token)).status_code for _ in range(2)]
    assert statuses == [200, 200]
    assert fake.requests[0].size == size


@pytest.mark.anyio
async def test_document_is_a_jpeg_of_the_original_size_without_a_size() -> None:
    fake = FakePassbackServer()
    token = fake.issue_document()
    async with connect(fake) as http:
        response = await fetch(http, token)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert int(response.headers["content-length"]) == len(response.content)
    assert dimensions(response.content) == (856, 540)
    assert response.content == fake.served_bytes(token)


@pytest.mark.anyio
async def test_document_is_resized_to_fit_inside_the_requested_box() -> None:
    fake = FakePassbackServer()
    token = fake.issue_document("back")
    async with connect(fake) as http:
        response = await fetch(http, token, size="300x200")
    assert dimensions(response.content) == delivered_size((856, 540), "300x200") == (300, 189)
    assert response.content == fake.served_bytes(token, "300x200")
    assert fake.requests[-1].size == "300x200"


@pytest.mark.anyio
async def test_the_seed_example_500x400_asked_300x200_gives_250x200() -> None:
    fake = FakePassbackServer(original_size=(500, 400))
    token = fake.issue_document()
    async with connect(fake) as http:
        response = await fetch(http, token, size="300x200")
    assert dimensions(response.content) == (250, 200)


@pytest.mark.anyio
async def test_a_smaller_original_is_never_enlarged() -> None:
    fake = FakePassbackServer(original_size=(200, 150), image_format="PNG")
    token = fake.issue_document()
    async with connect(fake) as http:
        response = await fetch(http, token, size="1000x1000")
    assert response.headers["content-type"] == "image/png"
    assert dimensions(response.content, "PNG") == (200, 150)


def test_images_are_deterministic_per_document_side_and_size() -> None:
    fake = FakePassbackServer(seed=1)
    other = FakePassbackServer(seed=1)
    front, back = fake.issue_document("front"), fake.issue_document("back")
    assert other.issue_document("front") == front
    assert fake.served_bytes(front) == other.served_bytes(front)
    assert fake.served_bytes(front) != fake.served_bytes(back)
    assert fake.served_bytes(front, "300x200") != fake.served_bytes(front)


def test_served_bytes_rejects_unknown_tokens_and_bad_sizes() -> None:
    fake = FakePassbackServer()
    token = fake.issue_document()
    with pytest.raises(KeyError):
        fake.served_bytes("fb4ad373-45a6-4a64-bb3c-43e0c59d1ab5")
    with pytest.raises(ValueError, match="from 100 to 1000"):
        fake.served_bytes(token, "99x200")


@pytest.mark.anyio
async def test_image_bytes_are_served_verbatim_in_64_kib_chunks() -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB
    fake = FakePassbackServer(image_bytes=payload)
    token = fake.issue_document()
    sent: list[dict[str, Any]] = []
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "method": "POST",
        "path": DOCUMENTS + token,
        "query_string": f"token={DEFAULT_API_TOKEN}".encode(),
        "headers": [],
    }
    await fake(scope, receive, send)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert sent[0]["status"] == 200
    assert (b"content-length", str(len(payload)).encode()) in sent[0]["headers"]
    assert b"".join(m["body"] for m in bodies) == payload
    assert max(len(m["body"]) for m in bodies) == 64 * 1024
    assert [m["more_body"] for m in bodies] == [True] * (len(bodies) - 1) + [False]
    assert fake.served_bytes(token, "300x200") == payload


@pytest.mark.anyio
async def test_wrong_methods_are_405() -> None:
    fake = FakePassbackServer()
    token = fake.issue_document()
    async with connect(fake) as http:
        on_document = await http.get(DOCUMENTS + token, params={"token": DEFAULT_API_TOKEN})
        on_refresh = await http.put(DOCUMENTS + "refresh/" + token)
        on_attributes = await http.post(ATTRIBUTES, params={"access_token": DEFAULT_ACCESS_TOKEN})
    assert [on_document.status_code, on_refresh.status_code, on_attributes.status_code] == [
        405,
        405,
        405,
    ]
    assert on_attributes.headers["allow"] == "GET"
    assert fake.count(counted=True) == 0


# ---------------------------------------------------------------------------- refresh


@pytest.mark.anyio
async def test_refresh_returns_a_new_token_that_shares_the_budget() -> None:
    clock = FakeClock()
    fake = FakePassbackServer(clock=clock)
    old = fake.issue_document()
    async with connect(fake) as http:
        response = await refresh(http, old)
        new = response.json()["document_token"]
        assert HEX32.fullmatch(new)
        assert new != old
        assert fake.document_id(new) == fake.document_id(old)
        statuses = [(await fetch(http, t)).status_code for t in (old, old, new)]
        assert statuses == [200, 200, 429]
        await clock.advance(60)
        # The old token stays valid after a refresh; both serve the same image.
        assert (await fetch(http, old)).content == (await fetch(http, new)).content


@pytest.mark.anyio
async def test_refresh_is_not_rate_limited_and_checks_the_api_token() -> None:
    fake = FakePassbackServer(clock=FakeClock())
    token = fake.issue_document()
    async with connect(fake) as http:
        statuses = [(await refresh(http, token)).status_code for _ in range(5)]
        unauthorized = await refresh(http, token, api_token="nope")
    assert statuses == [200] * 5
    assert unauthorized.status_code == 401
    assert fake.count(endpoint="refresh", counted=True) == 0


# ---------------------------------------------------------------------------- rate limits


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("algorithm", "retry_after"), [("sliding", 60), ("fixed", 60), ("bucket", 30)]
)
async def test_the_third_request_in_a_window_is_429_until_retry_after_passes(
    algorithm: Any, retry_after: int
) -> None:
    clock = FakeClock()
    fake = FakePassbackServer(clock=clock, algorithm=algorithm)
    token = fake.issue_document()
    async with connect(fake) as http:
        assert [(await fetch(http, token)).status_code for _ in range(2)] == [200, 200]
        limited = await fetch(http, token)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == str(retry_after)
        await clock.advance(retry_after - 1)
        assert (await fetch(http, token)).status_code == 429
        await clock.advance(1)
        assert (await fetch(http, token)).status_code == 200
    assert fake.count(status=429, counted=False) == 2


@pytest.mark.anyio
async def test_the_sliding_window_rolls_with_each_request() -> None:
    clock = FakeClock()
    fake = FakePassbackServer(clock=clock, algorithm="sliding")
    token = fake.issue_document()
    async with connect(fake) as http:
        await fetch(http, token)
        await clock.advance(30)
        await fetch(http, token)
        await clock.advance(30)
        assert (await fetch(http, token)).status_code == 200  # the t=0 request expired
        limited = await fetch(http, token)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "30"
    assert fake.max_in_window(token) == 2


@pytest.mark.anyio
async def test_the_fixed_window_allows_two_at_its_end_and_two_at_the_next_start() -> None:
    clock = FakeClock()
    fake = FakePassbackServer(clock=clock, algorithm="fixed")
    token = fake.issue_document()
    async with connect(fake) as http:
        await clock.advance(59)
        end = [(await fetch(http, token)).status_code for _ in range(3)]
        await clock.advance(1)
        start = [(await fetch(http, token)).status_code for _ in range(3)]
    assert end == [200, 200, 429]
    assert start == [200, 200, 429]
    assert fake.requests[2].time == 59
    # Four grants inside one second: what a client must survive under "fixed".
    assert fake.max_in_window(token) == 4
    assert fake.max_in_window(token, include_rejected=True) == 6


@pytest.mark.anyio
async def test_the_token_bucket_refills_one_request_in_thirty_seconds() -> None:
    clock = FakeClock()
    fake = FakePassbackServer(clock=clock, algorithm="bucket")
    token = fake.issue_document()
    async with connect(fake) as http:
        first = [(await fetch(http, token)).status_code for _ in range(2)]
        await clock.advance(30)
        later = [(await fetch(http, token)).status_code for _ in range(2)]
    assert first == [200, 200]
    assert later == [200, 429]
    # Three grants in one minute: the bucket is the lenient algorithm.
    assert fake.max_in_window(token) == 3


@pytest.mark.anyio
async def test_a_429_does_not_spend_budget() -> None:
    clock = FakeClock()
    fake = FakePassbackServer(clock=clock)
    token = fake.issue_document()
    async with connect(fake) as http:
        await fetch(http, token)
        await fetch(http, token)
        await clock.advance(10)
        assert (await fetch(http, token)).status_code == 429
        await clock.advance(50)
        # Had the t=10 request counted, this one would wait until t=70.
        assert [(await fetch(http, token)).status_code for _ in range(2)] == [200, 200]


@pytest.mark.anyio
async def test_budgets_are_per_document() -> None:
    fake = FakePassbackServer(clock=FakeClock())
    tokens = [fake.issue_document(), fake.issue_document("back")]
    async with connect(fake) as http:
        statuses = [(await fetch(http, t)).status_code for t in tokens for _ in range(3)]
    assert statuses == [200, 200, 429, 200, 200, 429]
    assert fake.max_in_window() == 2


@pytest.mark.anyio
@pytest.mark.parametrize("value", [7, "Wed, 21 Oct 2015 07:28:00 GMT"])
async def test_retry_after_can_be_fixed(value: int | str) -> None:
    fake = FakePassbackServer(clock=FakeClock(), limit=1, retry_after=value)
    token = fake.issue_document()
    async with connect(fake) as http:
        await fetch(http, token)
        limited = await fetch(http, token)
    assert limited.headers["retry-after"] == str(value)


# ---------------------------------------------------------------------------- faults


@pytest.mark.anyio
async def test_scripted_answers_come_in_order_then_the_limiter_resumes() -> None:
    fake = FakePassbackServer(clock=FakeClock())
    token = fake.issue_document()
    fake.script(token, [500, 429, "cut", "non_image", "empty", 200])
    async with connect(fake) as http:
        error, limited, cut, html, empty, ok = [await fetch(http, token) for _ in range(6)]
        after = await fetch(http, token)
    assert error.status_code == 500
    assert error.headers["content-type"].startswith("text/html")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert cut.status_code == 200
    assert int(cut.headers["content-length"]) == len(fake.served_bytes(token))
    assert len(cut.content) == len(fake.served_bytes(token)) // 2
    assert (html.status_code, html.headers["content-type"][:9]) == (200, "text/html")
    assert b"maintenance" in html.content
    assert (empty.status_code, empty.headers["content-type"], empty.content) == (
        200,
        "image/jpeg",
        b"",
    )
    assert ok.content == fake.served_bytes(token)
    # Five scripted answers were counted (all but the 429): the budget is spent.
    assert after.status_code == 429
    faults = [record.fault for record in fake.requests[:6]]
    assert faults == ["error", None, "cut", "non_image", "empty", None]
    assert [r.counted for r in fake.requests[:6]] == [True, False, True, True, True, True]
    assert all(r.scripted for r in fake.requests[:6])
    assert not fake.requests[6].scripted


@pytest.mark.anyio
async def test_a_refreshed_token_plays_the_same_script() -> None:
    fake = FakePassbackServer()
    token = fake.issue_document()
    async with connect(fake) as http:
        new = (await refresh(http, token)).json()["document_token"]
        fake.script(token, [503])
        fake.script(token, [410], endpoint="refresh")
        assert (await fetch(http, new)).status_code == 503
        assert (await refresh(http, new)).status_code == 410
        assert (await refresh(http, new)).status_code == 200


def test_script_rejects_unknown_steps_and_tokens() -> None:
    fake = FakePassbackServer()
    token = fake.issue_document()
    with pytest.raises(ValueError, match="script word"):
        fake.script(token, ["bogus"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="200 to 599"):
        fake.script(token, [700])
    with pytest.raises(KeyError):
        fake.script("8003c78ead9641bcbd284e97acac3f85", [500])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("knob", "status", "content_type", "fault"),
    [
        ("error_rate", 500, "text/html; charset=utf-8", "error"),
        ("non_image_rate", 200, "text/html; charset=utf-8", "non_image"),
        ("cut_body_rate", 200, "image/jpeg", "cut"),
    ],
)
async def test_fault_rates_of_one_fault_every_request(
    knob: str, status: int, content_type: str, fault: str
) -> None:
    options: dict[str, Any] = {knob: 1.0}
    fake = FakePassbackServer(**options)
    token = fake.issue_document()
    async with connect(fake) as http:
        response = await fetch(http, token)
    assert (response.status_code, response.headers["content-type"]) == (status, content_type)
    assert fake.requests[-1] == RequestRecord(
        method="POST",
        path=DOCUMENTS + token,
        endpoint="document",
        status=status,
        time=fake.requests[-1].time,
        document=fake.document_id(token),
        counted=True,
        fault=fault,
    )


@pytest.mark.anyio
async def test_a_seed_replays_the_same_faults() -> None:
    async def statuses(fake: FakePassbackServer) -> list[int]:
        token = fake.issue_document()
        async with connect(fake) as http:
            return [(await fetch(http, token)).status_code for _ in range(30)]

    first = await statuses(FakePassbackServer(limit=100, error_rate=0.5, seed=42))
    second = await statuses(FakePassbackServer(limit=100, error_rate=0.5, seed=42))
    assert first == second
    assert {200, 500} == set(first)


@pytest.mark.anyio
async def test_latency_is_slept_on_the_clock_after_counting() -> None:
    clock = FakeClock()
    fake = FakePassbackServer(clock=clock, latency=lambda: 5.0)
    token = fake.issue_document()
    responses: list[httpx.Response] = []

    async def one() -> None:
        responses.append(await fetch(http, token))

    async with connect(fake) as http, anyio.create_task_group() as group:
        group.start_soon(one)
        await clock.advance(4.9)
        assert responses == []
        assert fake.requests[-1].time == 0  # counted on arrival
        await clock.advance(0.1)
    assert [r.status_code for r in responses] == [200]


# ---------------------------------------------------------------------------- the rest


@pytest.mark.anyio
async def test_lifespan_startup_and_shutdown_complete() -> None:
    fake = FakePassbackServer()
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await fake({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.anyio
async def test_repr_holds_no_secret() -> None:
    fake = FakePassbackServer(api_token="1234567-aaaa-4ca4-a93e-aae6fce8e82b")
    token = fake.issue_document()
    async with connect(fake) as http:
        response = await refresh(http, token, api_token=fake.api_token)
        new = response.json()["document_token"]
    text = repr(fake)
    for secret in (fake.api_token, fake.access_token, token, new):
        assert secret not in text
    assert "documents=1" in text


@pytest.mark.anyio
async def test_the_passback_fake_fixture_serves_its_known_credentials(
    passback_fake: FakePassbackServer,
) -> None:
    assert passback_fake.requests == []
    async with connect(passback_fake) as http:
        attributes = await http.get(ATTRIBUTES, params={"access_token": passback_fake.access_token})
        tokens = {i["handle"]: i for i in attributes.json()["attributes"]}["document_tokens"]
        image = await fetch(http, tokens["value"]["front"], api_token=passback_fake.api_token)
    assert image.content == passback_fake.served_bytes(tokens["value"]["front"])


@pytest.mark.asyncio  # most users' suites run on pytest-asyncio: the fixture must work there
async def test_the_passback_fake_fixture_works_under_pytest_asyncio(
    passback_fake: FakePassbackServer,
) -> None:
    token = passback_fake.issue_document()
    async with connect(passback_fake) as http:
        image = await fetch(http, token, api_token=passback_fake.api_token)
    assert image.status_code == 200
    assert image.content == passback_fake.served_bytes(token)
