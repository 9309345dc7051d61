"""The examples, run in-process against the fake server on asyncio and trio: web backend, bulk."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from PIL import Image

from idme_passback import OAuthClient, PassbackClient
from idme_passback.testing import DEFAULT_API_TOKEN, FakeIdMe, FakePassbackServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


web_backend = load("web_backend")
bulk_download = load("bulk_download")


def factory(transport: httpx.AsyncBaseTransport) -> Callable[[], PassbackClient]:
    def make() -> PassbackClient:
        return PassbackClient(
            DEFAULT_API_TOKEN, base_url="http://fake/", transport=transport, max_retries=0
        )

    return make


APP = "https://backend.example"


def oauth_factory(fake: FakePassbackServer | None) -> Callable[[], OAuthClient | None]:
    def make() -> OAuthClient | None:
        if fake is None:
            return None
        return OAuthClient(
            fake.client_id,
            fake.client_secret,
            redirect_uri=APP + "/callback",
            base_url="http://fake/",
            transport=httpx.ASGITransport(app=fake),
        )

    return make


class Backend:
    """The example app with its lifespan running (ASGITransport alone does not run it)."""

    def __init__(
        self, transport: httpx.AsyncBaseTransport, login_at: FakePassbackServer | None = None
    ) -> None:
        self.app = web_backend.create_app(
            client_factory=factory(transport), oauth_factory=oauth_factory(login_at)
        )
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=APP)

    async def __aenter__(self) -> httpx.AsyncClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        return self.http

    async def __aexit__(self, *exc_info: object) -> None:
        await self.http.aclose()
        await self._lifespan.__aexit__(None, None, None)


def with_documents_answering(
    fake: FakePassbackServer, response: httpx.Response
) -> httpx.MockTransport:
    """The fake for attributes; ``response`` for every document request."""
    inner = httpx.ASGITransport(app=fake)

    async def handle(request: httpx.Request) -> httpx.Response:
        if "/documents/" in request.url.path:
            return response
        return await inner.handle_async_request(request)

    return httpx.MockTransport(handle)


@pytest.mark.anyio
async def test_callback_returns_both_sides_fitted_in_600x400() -> None:
    fake = FakePassbackServer()
    async with Backend(httpx.ASGITransport(app=fake)) as http:
        answer = await http.get("/idme/callback", params={"access_token": fake.access_token})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    for side in ("front", "back"):
        assert body[side]["media_type"] == "image/jpeg"
        content = base64.b64decode(body[side]["data"])
        assert len(content) == body[side]["bytes"]
        with Image.open(io.BytesIO(content)) as image:
            assert image.size == (600, 379)
    # Front and back: one document request each, and no document token in the answer.
    assert fake.count(endpoint="document") == 2
    assert {record.size for record in fake.requests if record.endpoint == "document"} == {"600x400"}


@pytest.mark.anyio
async def test_no_document_tokens_is_a_404() -> None:
    fake = FakePassbackServer(document_tokens_enabled=False)
    async with Backend(httpx.ASGITransport(app=fake)) as http:
        answer = await http.get("/idme/callback", params={"access_token": fake.access_token})
    assert answer.status_code == 404
    assert answer.json()["error"] == "no_document"


@pytest.mark.anyio
async def test_a_refused_access_token_is_a_401() -> None:
    fake = FakePassbackServer()
    async with Backend(httpx.ASGITransport(app=fake)) as http:
        answer = await http.get("/idme/callback", params={"access_token": "0" * 32})
        missing = await http.get("/idme/callback")
    assert answer.status_code == 401
    assert "0" * 32 not in answer.text
    assert missing.status_code == 400


@pytest.mark.anyio
async def test_a_rate_limit_is_a_429_with_retry_after() -> None:
    fake = FakePassbackServer()
    # Longer than the client's Retry-After cap, so it is reported rather than waited out.
    limited = httpx.Response(429, headers={"Retry-After": "3600"}, json={"error": "slow down"})
    async with Backend(with_documents_answering(fake, limited)) as http:
        answer = await http.get("/idme/callback", params={"access_token": fake.access_token})
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "3600"


@pytest.mark.anyio
async def test_an_upstream_failure_is_a_502() -> None:
    fake = FakePassbackServer()
    broken = httpx.Response(500, text="<html>oops</html>")
    async with Backend(with_documents_answering(fake, broken)) as http:
        answer = await http.get("/idme/callback", params={"access_token": fake.access_token})
    assert answer.status_code == 502
    assert answer.json()["error"] == "upstream_error"


@pytest.mark.anyio
async def test_the_app_closes_its_client_on_shutdown() -> None:
    made: list[PassbackClient] = []
    fake = FakePassbackServer()

    def make() -> PassbackClient:
        made.append(factory(httpx.ASGITransport(app=fake))())
        return made[-1]

    app = web_backend.create_app(client_factory=make)
    async with app.router.lifespan_context(app):
        assert len(made) == 1
    with pytest.raises(RuntimeError, match="closed"):
        await made[0].get_attributes(fake.access_token)


@pytest.mark.anyio
async def test_bulk_download_writes_images_and_a_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakePassbackServer()
    monkeypatch.setenv("IDME_API_TOKEN", fake.api_token)
    monkeypatch.delenv("IDME_PASSBACK_BASE_URL", raising=False)
    tokens = [fake.issue_document() for _ in range(3)]
    listing = tmp_path / "tokens.csv"
    listing.write_text(
        "token,size,filename\n"
        f"{tokens[0]},300x200,first.jpg\n"
        f"{tokens[1]}\n"
        f"{tokens[2]},5x5\n"
        "not/a/token\n"
    )
    stream = io.StringIO()
    out = tmp_path / "out"

    code = await bulk_download.main(
        listing, out, transport=httpx.ASGITransport(app=fake), stream=stream
    )

    assert code == 1
    assert (out / "first.jpg").read_bytes() == fake.served_bytes(tokens[0], "300x200")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ok"], summary["failed"]) == (2, 2)
    assert sorted(f["error"] for f in summary["failures"]) == [
        "InvalidSizeError",
        "InvalidTokenError",
    ]
    assert "4/4 done, 2 failed" in stream.getvalue()
    assert "2 downloaded, 2 failed" in capsys.readouterr().out
    text = (out / "summary.json").read_text()
    assert not any(token in text for token in tokens)


# -- the login: /login -> ID.me -> /callback, offline against the fake ------------------------


async def browse_login(fake: FakePassbackServer, http: httpx.AsyncClient) -> httpx.Response:
    """A browser's login: /login, ID.me's consent, and back to /callback (cookie and all)."""
    start = await http.get("/login")
    assert start.status_code == 302
    assert start.headers["location"].startswith("http://fake/oauth/authorize?")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake)) as idme:
        consent = await idme.get(start.headers["location"])
    back = httpx.URL(consent.headers["location"])
    assert str(back.copy_with(query=None)) == APP + "/callback"
    return await http.get(back.path, params=back.params)


@pytest.mark.anyio
async def test_login_exchanges_the_code_and_returns_both_images() -> None:
    fake = FakePassbackServer()
    async with Backend(httpx.ASGITransport(app=fake), login_at=fake) as http:
        answer = await browse_login(fake, http)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {body[side]["media_type"] for side in ("front", "back")} == {"image/jpeg"}
    assert [r.endpoint for r in fake.requests if r.endpoint != "document"] == [
        "authorize",
        "token",
        "attributes",
    ]
    assert fake.count(endpoint="document") == 2
    # The login cookie is spent, and no secret reached the browser.
    assert web_backend.LOGIN_COOKIE not in http.cookies
    assert fake.client_secret not in answer.text


@pytest.mark.anyio
async def test_a_front_only_document_comes_back_without_a_back() -> None:
    fake = FakePassbackServer(idme=FakeIdMe(document_back="null"))
    async with Backend(httpx.ASGITransport(app=fake), login_at=fake) as http:
        answer = await browse_login(fake, http)
    assert answer.status_code == 200, answer.text
    assert answer.json()["back"] is None
    assert fake.count(endpoint="document") == 1


@pytest.mark.anyio
async def test_a_declined_login_is_a_403_and_a_bad_scope_a_400() -> None:
    fake = FakePassbackServer(idme=FakeIdMe(authorize_error="access_denied"))
    async with Backend(httpx.ASGITransport(app=fake), login_at=fake) as http:
        declined = await browse_login(fake, http)
        fake.idme.authorize_error = "invalid_scope"
        scoped = await browse_login(fake, http)
    assert (declined.status_code, declined.json()["error"]) == (403, "access_denied")
    assert (scoped.status_code, scoped.json()["error"]) == (400, "invalid_scope")
    assert fake.count(endpoint="token") == 0


@pytest.mark.anyio
async def test_a_callback_not_of_this_browsers_login_is_refused() -> None:
    fake = FakePassbackServer()
    async with Backend(httpx.ASGITransport(app=fake), login_at=fake) as http:
        stranger = await http.get("/callback", params={"code": "abc", "state": "forged"})
        start = await http.get("/login")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake)) as idme:
            consent = await idme.get(start.headers["location"])
        back = httpx.URL(consent.headers["location"])
        forged = dict(back.params) | {"state": "forged"}
        mismatch = await http.get("/callback", params=forged)
        replay = await http.get("/callback", params=back.params)
    assert stranger.json()["error"] == "no_login"
    assert mismatch.status_code == 400
    assert "state" in mismatch.json()["detail"]
    assert replay.json()["error"] == "no_login"  # the login was used up by the mismatch
    assert fake.count(endpoint="token") == 0


@pytest.mark.anyio
async def test_without_oauth_settings_login_is_a_503_and_the_old_route_still_works() -> None:
    fake = FakePassbackServer()
    async with Backend(httpx.ASGITransport(app=fake)) as http:
        login = await http.get("/login")
        direct = await http.get("/idme/callback", params={"access_token": fake.access_token})
    assert login.status_code == 503
    assert direct.status_code == 200
