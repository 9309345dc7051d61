"""The client's requests and answers, through the public API against respx."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest
import respx

from idme_passback import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    DocumentTokensMissingError,
    GoneError,
    IncompleteBodyError,
    InvalidSizeError,
    InvalidTokenError,
    MalformedResponseError,
    NotAnImageError,
    NotFoundError,
    PassbackClient,
    PassbackError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    Size,
    UnprocessableEntityError,
    __version__,
    errors,
)

from .conftest import ACCESS_TOKEN, API_TOKEN, BACK, FRONT, HEX_TOKEN, JPEG, PNG, REFRESHED, SANDBOX

ATTRIBUTES_URL = f"{SANDBOX}/api/public/v3/attributes.json"
PAYLOAD = {
    "attributes": [
        {"handle": "fname", "name": "First Name", "value": "Jane"},
        {"handle": "age", "name": "Age", "value": 41},
        {
            "handle": "document_tokens",
            "name": "Document Passback Tokens",
            "value": {"front": FRONT, "back": BACK},
        },
    ],
    "status": [{"group": "identity", "subgroups": ["IAL2"], "verified": True}],
}


def document_url(token: str) -> str:
    return f"{SANDBOX}/api/public/v3/documents/{token}"


# -- the requests, exactly as the seed shows them ------------------------------


@pytest.mark.anyio
async def test_attributes_is_a_get_with_the_access_token_as_a_bearer_header(
    respx_mock: respx.MockRouter, client: PassbackClient
) -> None:
    route = respx_mock.get(ATTRIBUTES_URL).respond(json=PAYLOAD)
    attributes = await client.get_attributes(ACCESS_TOKEN)
    request = route.calls.last.request
    assert request.method == "GET"
    assert request.url.path == "/api/public/v3/attributes.json"
    assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert not request.url.query
    assert attributes.document_tokens.front == FRONT
    assert attributes.document_tokens.back == BACK


@pytest.mark.anyio
async def test_attributes_can_send_the_access_token_in_the_query_as_documented(
    respx_mock: respx.MockRouter,
) -> None:
    route = respx_mock.get(ATTRIBUTES_URL).respond(json=PAYLOAD)
    async with PassbackClient(API_TOKEN, access_token_in="query") as client:
        await client.get_attributes(ACCESS_TOKEN)
    request = route.calls.last.request
    assert dict(request.url.params) == {"access_token": ACCESS_TOKEN}
    assert "authorization" not in request.headers


@pytest.mark.anyio
async def test_document_is_a_post_with_the_api_token_and_no_size_by_default(
    respx_mock: respx.MockRouter, client: PassbackClient
) -> None:
    route = respx_mock.post(document_url(HEX_TOKEN)).respond(
        content=JPEG, headers={"Content-Type": "image/jpeg"}
    )
    image = await client.get_document(HEX_TOKEN)
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.url.raw_path == (
        b"/api/public/v3/documents/3696f8c1a8ee4ae9aab56fb38c3dbd03"
        b"?token=1234567-fd03-4ca4-a93e-aae6fce8e82b"
    )
    assert "size" not in request.url.params
    assert image.content == JPEG
    assert image.content_type == "image/jpeg"
    assert image.token == HEX_TOKEN
    assert image.size is None


@pytest.mark.anyio
@pytest.mark.parametrize("size", ["300x200", (300, 200), Size(300, 200), "300X200"])
async def test_document_sends_size_as_wxh(
    respx_mock: respx.MockRouter, client: PassbackClient, size: object
) -> None:
    route = respx_mock.post(document_url(FRONT)).respond(content=JPEG)
    image = await client.get_document(FRONT, size=size)  # type: ignore[arg-type]
    assert route.calls.last.request.url.params["size"] == "300x200"
    assert image.size == Size(300, 200)


@pytest.mark.anyio
async def test_refresh_is_a_post_and_returns_the_new_token(
    respx_mock: respx.MockRouter, client: PassbackClient
) -> None:
    route = respx_mock.post(f"{SANDBOX}/api/public/v3/documents/refresh/{FRONT}").respond(
        json={"document_token": REFRESHED}
    )
    assert await client.refresh_document_token(FRONT) == REFRESHED
    request = route.calls.last.request
    assert request.method == "POST"
    assert dict(request.url.params) == {"token": API_TOKEN}


@pytest.mark.anyio
async def test_production_environment_uses_api_id_me(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"https://api.id.me/api/public/v3/documents/{FRONT}").respond(
        content=JPEG
    )
    async with PassbackClient(API_TOKEN, environment="production") as client:
        await client.get_document(FRONT)
    assert route.called


@pytest.mark.anyio
async def test_a_custom_base_url_keeps_its_path_prefix(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(f"https://proxy.example/idme/api/public/v3/documents/{FRONT}")
    route.respond(content=JPEG)
    async with PassbackClient(API_TOKEN, base_url="https://proxy.example/idme") as client:
        await client.get_document(FRONT)
    assert route.called


# -- answers ----------------------------------------------------------------


@pytest.mark.anyio
async def test_attributes_keeps_every_attribute_and_the_status(
    respx_mock: respx.MockRouter, client: PassbackClient
) -> None:
    respx_mock.get(ATTRIBUTES_URL).respond(json=PAYLOAD)
    attributes = await client.get_attributes(ACCESS_TOKEN)
    assert list(attributes) == ["fname", "age", "document_tokens"]
    assert attributes["fname"].value == "Jane"
    assert attributes["age"].value == 41
    assert attributes["fname"].name == "First Name"
    assert attributes.status[0].group == "identity"
    assert attributes.status[0].subgroups == ("IAL2",)
    assert attributes.status[0].verified is True
    assert attributes.raw == PAYLOAD
    assert "missing" not in attributes
    front, back = attributes.document_tokens
    assert (front, back) == (FRONT, BACK)


@pytest.mark.anyio
async def test_attributes_without_document_tokens_raise_a_specific_error(
    respx_mock: respx.MockRouter, client: PassbackClient
) -> None:
    respx_mock.get(ATTRIBUTES_URL).respond(json={"attributes": PAYLOAD["attributes"][:2]})
    attributes = await client.get_attributes(ACCESS_TOKEN)
    assert attributes.has_document_tokens is False
    assert attributes.status == ()
    with pytest.raises(DocumentTokensMissingError, match="not enabled"):
        _ = attributes.document_tokens


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body", [b"<html>oops</html>", b'{"attributes": {}}', b'{"status": [1]}', b"[]"]
)
async def test_attributes_that_are_not_the_documented_shape_raise(
    respx_mock: respx.MockRouter, client: PassbackClient, body: bytes
) -> None:
    respx_mock.get(ATTRIBUTES_URL).respond(content=body)
    with pytest.raises(MalformedResponseError):
        await client.get_attributes(ACCESS_TOKEN)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "media_type", "extension"),
    [(JPEG, "image/jpeg", ".jpg"), (PNG, "image/png", ".png")],
)
async def test_the_extension_comes_from_the_bytes_not_the_header(
    respx_mock: respx.MockRouter,
    client: PassbackClient,
    body: bytes,
    media_type: str,
    extension: str,
) -> None:
    # The header claims one thing; the bytes say another.
    respx_mock.post(document_url(FRONT)).respond(
        content=body, headers={"Content-Type": "image/gif"}
    )
    image = await client.get_document(FRONT)
    assert image.media_type == media_type
    assert image.extension == extension
    assert image.content_type == "image/gif"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (410, GoneError),
        (422, UnprocessableEntityError),
        (418, APIStatusError),
    ],
)
async def test_each_status_maps_to_its_error(
    respx_mock: respx.MockRouter,
    client: PassbackClient,
    status: int,
    error: type[APIStatusError],
) -> None:
    route = respx_mock.post(document_url(FRONT)).respond(
        status, json={"error": "nope", "echo": API_TOKEN}
    )
    with pytest.raises(error) as caught:
        await client.get_document(FRONT)
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert "nope" in caught.value.body_excerpt
    assert API_TOKEN not in caught.value.body_excerpt
    assert route.call_count == 1  # not retried


@pytest.mark.anyio
async def test_5xx_and_429_are_typed_after_retries_run_out(
    respx_mock: respx.MockRouter, clock: object
) -> None:
    respx_mock.post(document_url(FRONT)).respond(503, text="maintenance")
    respx_mock.post(document_url(BACK)).respond(429, headers={"Retry-After": "5"})
    async with PassbackClient(API_TOKEN, max_retries=0) as client:
        with pytest.raises(ServerError) as server:
            await client.get_document(FRONT)
        with pytest.raises(RateLimitError) as limited:
            await client.get_document(BACK)
    assert server.value.status_code == 503
    assert limited.value.retry_after == 5.0


@pytest.mark.anyio
@pytest.mark.parametrize("body", [b"<html>down for maintenance</html>", b'{"error": "x"}', b""])
async def test_a_200_that_is_not_an_image_is_an_error(
    respx_mock: respx.MockRouter, body: bytes
) -> None:
    respx_mock.post(document_url(FRONT)).respond(200, content=body)
    async with PassbackClient(API_TOKEN, max_retries=0) as client:
        with pytest.raises(NotAnImageError):
            await client.get_document(FRONT)


@pytest.mark.anyio
async def test_a_secret_cut_at_the_excerpts_edge_is_still_scrubbed(
    respx_mock: respx.MockRouter, client: PassbackClient
) -> None:
    body = " " * 1010 + "token=" + API_TOKEN + " " * 2000
    respx_mock.post(document_url(FRONT)).respond(400, text=body)
    with pytest.raises(BadRequestError) as caught:
        await client.get_document(FRONT)
    assert API_TOKEN[:8] not in caught.value.body_excerpt


# -- bad input: a clear error and nothing sent ---------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("size", ["99x200", "1001x200", "300x99", "300x1001", "big", (0, 0)])
async def test_bad_sizes_send_nothing(
    respx_mock: respx.MockRouter, client: PassbackClient, size: object, tmp_path: Path
) -> None:
    route = respx_mock.post(url__startswith=f"{SANDBOX}/api/public/v3/documents/")
    with pytest.raises(InvalidSizeError):
        await client.get_document(FRONT, size=size)  # type: ignore[arg-type]
    with pytest.raises(InvalidSizeError):
        await client.download_document(FRONT, tmp_path / "x.jpg", size=size)  # type: ignore[arg-type]
    assert not route.called
    assert list(tmp_path.iterdir()) == []


HOSTILE = [
    "",
    "../attributes.json",
    "a/b",
    "abc?token=x",
    "abc#frag",
    "abc%2F..",
    "..",
    ".",
    "a b",
    "abc\n",
    "abc\x00",
    "abc\t",
    "x" * 257,
    "ab..cd",
    "\u00e9abc",
    "abc&size=1x1",
]


@pytest.mark.anyio
@pytest.mark.parametrize("token", HOSTILE)
async def test_hostile_document_tokens_send_nothing(
    respx_mock: respx.MockRouter, client: PassbackClient, token: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidTokenError):
        await client.get_document(token)
    with pytest.raises(InvalidTokenError):
        await client.refresh_document_token(token)
    with pytest.raises(InvalidTokenError):
        await client.download_document(token, tmp_path / "x.jpg")
    assert respx_mock.calls.call_count == 0


@pytest.mark.parametrize("token", HOSTILE)
def test_hostile_api_tokens_are_refused_at_construction(token: str) -> None:
    with pytest.raises((InvalidTokenError, ConfigurationError)):
        PassbackClient(token)


@pytest.mark.anyio
@pytest.mark.parametrize("token", ["", "a b", "abc\r\nX-Evil: 1", "x" * 5000, "\u00e9"])
async def test_hostile_access_tokens_send_nothing(
    respx_mock: respx.MockRouter, client: PassbackClient, token: str
) -> None:
    with pytest.raises(InvalidTokenError):
        await client.get_attributes(token)
    assert respx_mock.calls.call_count == 0


@pytest.mark.parametrize("token", [FRONT, BACK, HEX_TOKEN, REFRESHED, API_TOKEN])
def test_the_seeds_token_formats_are_accepted(token: str) -> None:
    # Every format the seed shows works as an API token and as a document token.
    assert PassbackClient(token).base_url == "https://api.idmelabs.com/"


def test_invalid_token_error_never_echoes_the_token() -> None:
    with pytest.raises(InvalidTokenError) as caught:
        PassbackClient("secret-value with space")
    assert "secret-value" not in str(caught.value)


# -- configuration ----------------------------------------------------------------


def test_the_api_token_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDME_API_TOKEN", API_TOKEN)
    client = PassbackClient()
    assert API_TOKEN not in repr(client)


def test_no_api_token_at_all_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDME_API_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="IDME_API_TOKEN"):
        PassbackClient()


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com/",
        "ftp://api.id.me/",
        "api.id.me",
        "https://x/?a=1",
        # An empty query or fragment: the token's query would land after them.
        "https://x/?",
        "https://x/#",
        "https://x/#a",
    ],
)
def test_unsafe_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        PassbackClient(API_TOKEN, base_url=url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/", "http://localhost:1/", "http://[::1]:9/"]
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    assert PassbackClient(API_TOKEN, base_url=url).base_url == url


def test_plain_http_elsewhere_needs_an_explicit_opt_in() -> None:
    client = PassbackClient(API_TOKEN, base_url="http://proxy.internal/", allow_insecure_http=True)
    assert client.base_url == "http://proxy.internal/"


def test_an_unknown_environment_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="environment"):
        PassbackClient(API_TOKEN, environment="staging")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_callers_http_client_is_used_and_left_open(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(document_url(FRONT)).respond(content=JPEG)
    async with httpx.AsyncClient() as http:
        async with PassbackClient(API_TOKEN, http_client=http) as client:
            await client.get_document(FRONT)
        assert not http.is_closed
    assert route.called


@pytest.mark.anyio
@pytest.mark.parametrize("own", [{}, {"extra": "1"}, {"token": "not-ours", "size": "9x9"}])
async def test_the_api_token_and_size_reach_the_server_whatever_params_a_callers_client_has(
    own: dict[str, str],
) -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        if "/refresh/" in request.url.path:
            return httpx.Response(200, json={"document_token": REFRESHED})
        return httpx.Response(200, content=JPEG)

    transport = httpx.MockTransport(handler)
    async with (
        httpx.AsyncClient(transport=transport, params=own) as http,
        PassbackClient(API_TOKEN, http_client=http) as client,
    ):
        await client.get_document(FRONT, size="300x200")
        await client.refresh_document_token(BACK)
    document, refresh = seen
    assert document.path == f"/api/public/v3/documents/{FRONT}"
    assert refresh.path == f"/api/public/v3/documents/refresh/{BACK}"
    assert document.params.get_list("token") == [API_TOKEN]
    assert document.params.get_list("size") == ["300x200"]
    assert refresh.params.get_list("token") == [API_TOKEN]
    if "extra" in own:  # the caller's own params travel too, as they always did
        assert document.params["extra"] == refresh.params["extra"] == "1"


@pytest.mark.anyio
async def test_a_callers_client_keeps_its_headers_and_the_clients_own_win() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "/refresh/" in request.url.path:
            return httpx.Response(200, json={"document_token": REFRESHED})
        return httpx.Response(200, content=JPEG)

    own = {"X-Trace": "abc", "User-Agent": "theirs/1", "Accept-Encoding": "br, zstd"}
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler), headers=own) as http,
        PassbackClient(API_TOKEN, http_client=http) as client,
    ):
        await client.get_document(FRONT)
        await client.refresh_document_token(BACK)
    document, refresh = seen
    for request in seen:
        assert request.headers["x-trace"] == "abc"
        assert request.headers.get_list("user-agent") == [f"idme-passback/{__version__}"]
    # Only what the client decodes itself is asked for; an image asks for none.
    assert document.headers.get_list("accept-encoding") == ["identity"]
    assert refresh.headers.get_list("accept-encoding") == ["gzip, deflate"]


@pytest.mark.anyio
async def test_a_custom_transport_carries_the_requests() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=JPEG)

    async with PassbackClient(API_TOKEN, transport=httpx.MockTransport(handler)) as client:
        await client.get_document(FRONT)
    assert [r.url.path for r in seen] == [f"/api/public/v3/documents/{FRONT}"]


def test_every_error_derives_from_one_root() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), PassbackError)


# -- downloads ------------------------------------------------------------------


@pytest.mark.anyio
async def test_download_writes_the_bytes_atomically_with_mode_0600(
    respx_mock: respx.MockRouter, client: PassbackClient, tmp_path: Path
) -> None:
    body = JPEG * 2000  # several chunks
    respx_mock.post(document_url(BACK)).respond(content=body)
    path = await client.download_document(BACK, tmp_path / "back.jpg")
    assert path == tmp_path / "back.jpg"
    assert path.read_bytes() == body
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.jpg"]


@pytest.mark.anyio
async def test_download_refuses_to_overwrite_unless_asked(
    respx_mock: respx.MockRouter, client: PassbackClient, tmp_path: Path
) -> None:
    route = respx_mock.post(document_url(BACK)).respond(content=JPEG)
    target = tmp_path / "back.jpg"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        await client.download_document(BACK, target)
    assert not route.called  # refused before spending the document's budget
    assert target.read_bytes() == b"old"
    await client.download_document(BACK, target, overwrite=True)
    assert target.read_bytes() == JPEG


@pytest.mark.anyio
async def test_download_into_a_missing_folder_sends_nothing(
    respx_mock: respx.MockRouter, client: PassbackClient, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        await client.download_document(BACK, tmp_path / "nope" / "back.jpg")
    assert respx_mock.calls.call_count == 0


class _CutStream(httpx.AsyncByteStream):
    """Yields part of a body, then fails as a dropped connection does."""

    def __init__(self, head: bytes) -> None:
        self._head = head

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield self._head
        raise httpx.RemoteProtocolError("peer closed connection mid-body")


@pytest.mark.anyio
async def test_a_body_cut_mid_stream_leaves_no_file(
    respx_mock: respx.MockRouter, tmp_path: Path
) -> None:
    respx_mock.post(document_url(BACK)).mock(
        return_value=httpx.Response(
            200, headers={"Content-Length": "100000"}, stream=_CutStream(JPEG * 100)
        )
    )
    async with PassbackClient(API_TOKEN, max_retries=0) as client:
        with pytest.raises(PassbackError):
            await client.download_document(BACK, tmp_path / "back.jpg")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_a_body_shorter_than_its_content_length_leaves_no_file(
    respx_mock: respx.MockRouter, tmp_path: Path
) -> None:
    respx_mock.post(document_url(BACK)).respond(
        200, content=JPEG, headers={"Content-Length": str(len(JPEG) * 3)}
    )
    async with PassbackClient(API_TOKEN, max_retries=0) as client:
        with pytest.raises(IncompleteBodyError) as caught:
            await client.download_document(BACK, tmp_path / "back.jpg")
        with pytest.raises(IncompleteBodyError):
            await client.get_document(BACK)
    assert caught.value.received == len(JPEG)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_a_non_image_download_leaves_no_file(
    respx_mock: respx.MockRouter, tmp_path: Path
) -> None:
    respx_mock.post(document_url(BACK)).respond(200, html="<html>maintenance</html>")
    async with PassbackClient(API_TOKEN, max_retries=0) as client:
        with pytest.raises(NotAnImageError):
            await client.download_document(BACK, tmp_path / "back.jpg")
    assert list(tmp_path.iterdir()) == []


# -- reprs ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_reprs_hide_secrets_and_personal_data(
    respx_mock: respx.MockRouter, client: PassbackClient
) -> None:
    respx_mock.get(ATTRIBUTES_URL).respond(json=PAYLOAD)
    respx_mock.post(document_url(FRONT)).respond(content=JPEG)
    attributes = await client.get_attributes(ACCESS_TOKEN)
    image = await client.get_document(FRONT)
    shown = " ".join(
        repr(x)
        for x in (
            client,
            attributes,
            attributes["fname"],
            attributes.document_tokens,
            image,
            client.limiter,
        )
    )
    for secret in (API_TOKEN, FRONT, BACK, ACCESS_TOKEN, "Jane"):
        assert secret not in shown
    assert "d9ec9c" in shown  # shortened, for correlation
