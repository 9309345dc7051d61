"""ID.me login through OAuthClient against the fake ID.me: the flow, every error, the id_token."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import pickle
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import attrs
import httpx
import pytest
import pytest_asyncio

from idme_passback import (
    AccessDeniedError,
    APIStatusError,
    AuthenticationError,
    AuthorizationError,
    AuthorizationRequest,
    ConfigurationError,
    InvalidGrantError,
    InvalidTokenError,
    MalformedResponseError,
    OAuthClient,
    OAuthError,
    PassbackClient,
    PassbackConnectionError,
    PassbackError,
    PassbackTimeoutError,
    RateLimitError,
    ServerError,
    StateMismatchError,
    TokenSet,
    TokenVerificationError,
)
from idme_passback.testing import FakeClock, FakeIdMe, FakePassbackServer

from ._loopback import serve

pytestmark = pytest.mark.anyio

BASE = "http://fake/"
CALLBACK = "https://app.example/idme/callback"
IAL2 = "http://idmanagement.gov/ns/assurance/ial/2/aal/2"

Handler = Callable[[httpx.Request, httpx.Response], Awaitable[httpx.Response]]


def through(fake: FakePassbackServer, change: Handler) -> httpx.MockTransport:
    """The fake, with ``change`` free to rewrite each answer."""
    inner = httpx.ASGITransport(app=fake)

    async def handle(request: httpx.Request) -> httpx.Response:
        response = await inner.handle_async_request(request)
        await response.aread()
        return await change(request, response)

    return httpx.MockTransport(handle)


def oauth_for(
    fake: FakePassbackServer, transport: httpx.AsyncBaseTransport | None = None, **options: object
) -> OAuthClient:
    settings: dict[str, object] = {"redirect_uri": CALLBACK, "base_url": BASE, "clock": fake.clock}
    if "http_client" not in options:
        settings["transport"] = transport or httpx.ASGITransport(app=fake)
    settings.update(options)
    return OAuthClient(
        str(settings.pop("client_id", fake.client_id)),
        settings.pop("client_secret", fake.client_secret),  # type: ignore[arg-type]
        **settings,  # type: ignore[arg-type]
    )


async def consent(fake: FakePassbackServer, request: AuthorizationRequest) -> str:
    """The browser's trip: follow the authorize URL to the redirect, return the callback URL."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake)) as browser:
        answer = await browser.get(request.url)
    assert answer.status_code == 302, answer.text
    location = answer.headers["location"]
    assert location.startswith(CALLBACK + "?")
    return location


@pytest.fixture
def fake(clock: FakeClock) -> FakePassbackServer:
    return FakePassbackServer(clock=clock)


@pytest_asyncio.fixture
async def oauth(fake: FakePassbackServer) -> AsyncIterator[OAuthClient]:
    async with oauth_for(fake) as client:
        yield client


async def log_in(
    fake: FakePassbackServer, oauth: OAuthClient, scopes: list[str] | None = None
) -> TokenSet:
    request = oauth.authorization_request(scopes=scopes or ["openid", IAL2])
    code = oauth.parse_callback(await consent(fake, request), request)
    return await oauth.exchange_code(code, request)


# -- the authorization request ------------------------------------------------------------


def test_the_authorize_url_carries_pkce_s256_state_and_nonce(oauth: OAuthClient) -> None:
    request = oauth.authorization_request(scopes=["openid", IAL2], op="signup")
    url = httpx.URL(request.url)
    assert str(url.copy_with(query=None)) == BASE + "oauth/authorize"
    params = dict(url.params)
    digest = hashlib.sha256(request.code_verifier.encode()).digest()
    assert params == {
        "client_id": oauth.client_id,
        "redirect_uri": CALLBACK,
        "response_type": "code",
        "scope": f"openid {IAL2}",
        "state": request.state,
        "code_challenge": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        "nonce": request.nonce,
        "op": "signup",
    }
    assert 43 <= len(request.code_verifier) <= 128  # RFC 7636, section 4.1
    again = oauth.authorization_request(scopes=["openid"])
    assert len({request.state, again.state}) == 2
    assert len({request.nonce, again.nonce}) == 2


def test_without_openid_there_is_no_nonce_unless_given(oauth: OAuthClient) -> None:
    assert oauth.authorization_request(scopes=[IAL2]).nonce is None
    assert oauth.authorization_request(scopes=[IAL2], nonce="n-1").nonce == "n-1"


@pytest.mark.parametrize("scopes", ["openid", [], ["two words"], [""]])
def test_bad_scopes_are_refused_before_anything_happens(oauth: OAuthClient, scopes: object) -> None:
    with pytest.raises(ConfigurationError, match="scope"):
        oauth.authorization_request(scopes=scopes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"redirect_uri": "http://app.example/cb"}, "redirect_uri"),
        ({"redirect_uri": "https://app.example/cb#frag"}, "redirect_uri"),
        ({"redirect_uri": "not a url"}, "redirect_uri"),
        ({"base_url": "http://idme.example/"}, "clear text"),
        ({"environment": "staging"}, "environment"),
        ({"client_id": " "}, "client_id"),
        ({"client_auth": "private_key_jwt"}, "client_auth"),
    ],
)
def test_unsafe_or_broken_settings_are_configuration_errors(
    options: dict[str, object], match: str
) -> None:
    settings: dict[str, object] = {"redirect_uri": CALLBACK}
    settings.update(options)
    client_id = str(settings.pop("client_id", "client"))
    with pytest.raises(ConfigurationError, match=match):
        OAuthClient(client_id, "secret", **settings)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not both"):
        OAuthClient(
            "client",
            redirect_uri=CALLBACK,
            transport=httpx.MockTransport(lambda r: httpx.Response(500)),
            http_client=httpx.AsyncClient(),
        )


# -- the whole flow -------------------------------------------------------------------------


async def test_login_to_both_images_and_a_document_refresh(
    fake: FakePassbackServer, oauth: OAuthClient
) -> None:
    tokens = await log_in(fake, oauth)
    assert tokens.token_type == "bearer"
    assert tokens.expires_in == 300
    assert tokens.scopes == ("openid", IAL2)
    assert tokens.refresh_expires_in == 604800
    assert tokens.expires_at == fake.clock.now() + 300
    assert tokens.id_token_claims is not None
    assert tokens.id_token_claims["sub"] == fake.idme.subject
    async with PassbackClient(
        fake.api_token, base_url=BASE, transport=httpx.ASGITransport(app=fake)
    ) as client:
        attributes = await client.get_attributes(tokens.access_token)
        front, back = attributes.document_tokens.front, attributes.document_tokens.back
        assert back is not None
        images = [await client.get_document(token) for token in (front, back)]
        assert [image.content for image in images] == [
            fake.served_bytes(front),
            fake.served_bytes(back),
        ]
        new_front = await client.refresh_document_token(front)
        assert fake.document_id(new_front) == fake.document_id(front)
    assert fake.requests[-1].endpoint == "refresh"


async def test_a_refresh_buys_a_fresh_access_token_and_rotates(
    fake: FakePassbackServer, oauth: OAuthClient
) -> None:
    first = await log_in(fake, oauth)
    assert first.refresh_token is not None
    second = await oauth.refresh(first.refresh_token)
    assert second.access_token != first.access_token
    assert second.refresh_token not in (None, first.refresh_token)
    async with PassbackClient(
        fake.api_token, base_url=BASE, transport=httpx.ASGITransport(app=fake)
    ) as client:
        assert (await client.get_attributes(second.access_token)).has_document_tokens
    with pytest.raises(InvalidGrantError) as caught:
        await oauth.refresh(first.refresh_token)  # rotated away
    assert caught.value.error == "invalid_grant"


async def test_a_public_client_logs_in_with_pkce_alone(fake: FakePassbackServer) -> None:
    async with oauth_for(fake, client_secret=None) as public:
        tokens = await log_in(fake, public, [IAL2])
    assert tokens.id_token is None
    assert tokens.id_token_claims is None


async def test_the_secret_can_travel_as_http_basic(fake: FakePassbackServer) -> None:
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        seen.append(request)
        return response

    transport = through(fake, record)
    async with oauth_for(fake, transport, client_auth="client_secret_basic") as basic:
        await log_in(fake, basic)
    token_call = next(r for r in seen if r.url.path == "/oauth/token")
    assert token_call.headers["authorization"].startswith("Basic ")
    assert b"client_secret" not in token_call.content


async def test_a_consumer_that_must_send_its_secret_is_refused_without_it(
    clock: FakeClock,
) -> None:
    fake = FakePassbackServer(clock=clock, idme=FakeIdMe(require_client_secret=True))
    async with oauth_for(fake, client_secret=None) as public:
        with pytest.raises(OAuthError) as caught:
            await log_in(fake, public, [IAL2])
    assert (caught.value.status_code, caught.value.error) == (400, "invalid_client")
    assert not isinstance(caught.value, InvalidGrantError)


# -- errors on the redirect -----------------------------------------------------------------

REDIRECT_ERRORS = [
    "access_denied",
    "invalid_request",
    "invalid_client",
    "invalid_scope",
    "invalid_redirect_uri",
    "unsupported_response_type",
]


@pytest.mark.parametrize("error", REDIRECT_ERRORS)
async def test_every_redirect_error_is_typed_with_its_words(
    fake: FakePassbackServer, oauth: OAuthClient, error: str
) -> None:
    fake.idme.authorize_error = error
    request = oauth.authorization_request(scopes=[IAL2])
    with pytest.raises(AuthorizationError) as caught:
        oauth.parse_callback(await consent(fake, request), request)
    assert caught.value.error == error
    assert caught.value.error_description == f"The fake answers {error}."
    assert isinstance(caught.value, AccessDeniedError) == (error == "access_denied")
    assert fake.count(endpoint="token") == 0


async def test_a_scope_without_a_policy_is_invalid_scope(clock: FakeClock) -> None:
    fake = FakePassbackServer(clock=clock, idme=FakeIdMe(scopes=[IAL2]))
    async with oauth_for(fake) as oauth:
        request = oauth.authorization_request(scopes=[IAL2, "military"])
        with pytest.raises(AuthorizationError) as caught:
            oauth.parse_callback(await consent(fake, request), request)
    assert caught.value.error == "invalid_scope"


async def test_an_unknown_client_is_invalid_client(fake: FakePassbackServer) -> None:
    async with oauth_for(fake, client_id="someone-else") as stranger:
        request = stranger.authorization_request(scopes=[IAL2])
        with pytest.raises(AuthorizationError) as caught:
            stranger.parse_callback(await consent(fake, request), request)
    assert caught.value.error == "invalid_client"


@pytest.mark.parametrize(
    "query",
    [
        {"code": "abc", "state": "forged"},
        {"code": "abc"},
        {"error": "access_denied", "state": "forged"},
    ],
)
async def test_a_callback_that_is_not_this_logins_is_a_state_mismatch(
    oauth: OAuthClient, query: dict[str, str]
) -> None:
    request = oauth.authorization_request(scopes=[IAL2])
    with pytest.raises(StateMismatchError):
        oauth.parse_callback(str(httpx.URL(CALLBACK, params=query)), request)


async def test_callbacks_without_a_code_or_with_repeats_are_refused(oauth: OAuthClient) -> None:
    request = oauth.authorization_request(scopes=[IAL2])
    with pytest.raises(AuthorizationError, match="neither"):
        oauth.parse_callback(f"{CALLBACK}?state={request.state}", request)
    with pytest.raises(AuthorizationError, match="repeats"):
        oauth.parse_callback(f"{CALLBACK}?state={request.state}&code=a&code=b", request)


async def test_redirect_words_are_cut_short_and_printable(oauth: OAuthClient) -> None:
    request = oauth.authorization_request(scopes=[IAL2])
    forged = httpx.URL(
        CALLBACK,
        params={"error": "server_error", "error_description": "x\n" * 500, "state": request.state},
    )
    with pytest.raises(AuthorizationError) as caught:
        oauth.parse_callback(forged, request)
    assert caught.value.error_description is not None
    assert len(caught.value.error_description) <= 200
    assert "\n" not in str(caught.value)


# -- errors at the token endpoint -------------------------------------------------------------


async def test_a_reused_code_is_invalid_grant_and_revokes_its_tokens(
    fake: FakePassbackServer, oauth: OAuthClient
) -> None:
    request = oauth.authorization_request(scopes=[IAL2])
    code = oauth.parse_callback(await consent(fake, request), request)
    tokens = await oauth.exchange_code(code, request)
    with pytest.raises(InvalidGrantError) as caught:
        await oauth.exchange_code(code, request)
    assert caught.value.status_code == 400
    assert (
        caught.value.error_description == "The provided authorization grant is expired or revoked"
    )
    async with PassbackClient(
        fake.api_token, base_url=BASE, transport=httpx.ASGITransport(app=fake)
    ) as client:
        with pytest.raises(AuthenticationError):
            await client.get_attributes(tokens.access_token)


async def test_a_wrong_pkce_verifier_is_invalid_grant(
    fake: FakePassbackServer, oauth: OAuthClient
) -> None:
    request = oauth.authorization_request(scopes=[IAL2])
    code = oauth.parse_callback(await consent(fake, request), request)
    other = attrs.evolve(
        request, code_verifier=oauth.authorization_request(scopes=[IAL2]).code_verifier
    )
    with pytest.raises(InvalidGrantError, match="code_verifier"):
        await oauth.exchange_code(code, other)


async def test_an_expired_code_is_invalid_grant(
    fake: FakePassbackServer, oauth: OAuthClient, clock: FakeClock
) -> None:
    request = oauth.authorization_request(scopes=[IAL2])
    code = oauth.parse_callback(await consent(fake, request), request)
    await clock.advance(60.0)
    with pytest.raises(InvalidGrantError):
        await oauth.exchange_code(code, request)


async def test_a_wrong_client_secret_is_invalid_client(fake: FakePassbackServer) -> None:
    async with oauth_for(fake, client_secret="not-the-secret") as wrong:
        with pytest.raises(OAuthError) as caught:
            await log_in(fake, wrong, [IAL2])
    assert caught.value.error == "invalid_client"
    assert "not-the-secret" not in repr(wrong) + str(caught.value)


async def test_an_expired_refresh_token_is_invalid_grant(
    fake: FakePassbackServer, oauth: OAuthClient, clock: FakeClock
) -> None:
    tokens = await log_in(fake, oauth, [IAL2])
    assert tokens.refresh_token is not None
    assert tokens.refresh_expires_at == clock.now() + 604800
    await clock.advance(604800.0)
    with pytest.raises(InvalidGrantError):
        await oauth.refresh(tokens.refresh_token)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "slow_down"}),
            RateLimitError,
        ),
        (httpx.Response(503, text="<html>down</html>"), ServerError),
        (httpx.Response(307, headers={"Location": "https://elsewhere.example/"}), APIStatusError),
        (httpx.Response(200, text="<html>not json</html>"), MalformedResponseError),
        (httpx.Response(200, json={"token_type": "bearer"}), MalformedResponseError),
        (
            httpx.Response(200, json={"access_token": "a", "expires_in": "soon"}),
            MalformedResponseError,
        ),
    ],
)
async def test_other_token_answers_are_typed_and_never_retried(
    fake: FakePassbackServer, answer: httpx.Response, expected: type[PassbackError]
) -> None:
    calls: list[httpx.Request] = []

    async def replace(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path != "/oauth/token":
            return response
        calls.append(request)
        return answer

    # A caller's client that follows redirects must not make this one follow any.
    http = httpx.AsyncClient(transport=through(fake, replace), follow_redirects=True)
    async with http, oauth_for(fake, http_client=http, allow_insecure_http=True) as oauth:
        with pytest.raises(expected) as caught:
            await log_in(fake, oauth, [IAL2])
    assert len(calls) == 1
    if isinstance(caught.value, RateLimitError):
        assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("failure", "expected", "sent"),
    [
        (httpx.ConnectError("refused"), PassbackConnectionError, False),
        (httpx.ReadTimeout("slow"), PassbackTimeoutError, True),
        (httpx.RemoteProtocolError("dropped"), PassbackConnectionError, True),
    ],
)
async def test_wire_failures_are_typed_say_if_sent_and_carry_no_foreign_error(
    fake: FakePassbackServer, failure: httpx.HTTPError, expected: type[PassbackError], sent: bool
) -> None:
    calls: list[httpx.Request] = []

    async def fail(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path == "/oauth/token":
            calls.append(request)
            raise failure
        return response

    async with oauth_for(fake, through(fake, fail)) as oauth:
        request = oauth.authorization_request(scopes=[IAL2])
        code = oauth.parse_callback(await consent(fake, request), request)
        with pytest.raises(expected) as caught:
            await oauth.exchange_code(code, request)
    assert len(calls) == 1
    assert caught.value.sent is sent
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


# -- the access token it buys ----------------------------------------------------------------


async def test_an_access_token_buys_one_attributes_call_within_300_s(
    fake: FakePassbackServer, oauth: OAuthClient, clock: FakeClock
) -> None:
    reused, expired = await log_in(fake, oauth, [IAL2]), await log_in(fake, oauth, [IAL2])
    async with PassbackClient(
        fake.api_token, base_url=BASE, transport=httpx.ASGITransport(app=fake)
    ) as client:
        await client.get_attributes(reused.access_token)
        with pytest.raises(AuthenticationError) as used:
            await client.get_attributes(reused.access_token)
        await clock.advance(300.0)
        with pytest.raises(AuthenticationError) as late:
            await client.get_attributes(expired.access_token)
    assert used.value.status_code == late.value.status_code == 401
    assert fake.count(endpoint="attributes", status=401) == 2


# -- the id_token --------------------------------------------------------------------------------


async def test_the_id_token_is_verified_and_its_claims_exposed(
    fake: FakePassbackServer, oauth: OAuthClient
) -> None:
    tokens = await log_in(fake, oauth)
    claims = tokens.id_token_claims
    assert claims is not None
    assert (claims["iss"], claims["aud"]) == (BASE + "oidc", fake.client_id)
    assert fake.count(endpoint="jwks") == 1
    await log_in(fake, oauth)
    assert fake.count(endpoint="jwks") == 1  # cached


def tamper_id_token(change: Callable[[str], str]) -> Handler:
    async def handle(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path != "/oauth/token" or response.status_code != 200:
            return response
        answer = response.json()
        answer["id_token"] = change(answer["id_token"])
        return httpx.Response(200, json=answer)

    return handle


def flip_payload(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def unsigned(token: str) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    return f"{header}.{token.split('.')[1]}."


@pytest.mark.parametrize(
    ("change", "match"),
    [(flip_payload, "signature"), (unsigned, "'none'"), (lambda t: t[:40], "JWT")],
)
async def test_a_tampered_id_token_fails_verification(
    fake: FakePassbackServer, change: Callable[[str], str], match: str
) -> None:
    async with oauth_for(fake, through(fake, tamper_id_token(change))) as oauth:
        with pytest.raises(TokenVerificationError, match=match):
            await log_in(fake, oauth)


async def test_an_id_token_for_another_login_or_issuer_or_time_fails(
    fake: FakePassbackServer, oauth: OAuthClient
) -> None:
    request = oauth.authorization_request(scopes=["openid"])
    code = oauth.parse_callback(await consent(fake, request), request)
    with pytest.raises(TokenVerificationError, match="nonce"):
        await oauth.exchange_code(code, attrs.evolve(request, nonce="another-login"))
    async with oauth_for(fake, issuer="https://api.id.me/oidc") as elsewhere:
        with pytest.raises(TokenVerificationError, match="'iss'"):
            await log_in(fake, elsewhere)
    later = fake.idme.wall_time() + 301 + 60
    async with oauth_for(fake, wall_clock=lambda: later) as late:
        with pytest.raises(TokenVerificationError, match="expired"):
            await log_in(fake, late)


async def test_an_unknown_kid_refetches_the_jwks_once_per_interval(
    fake: FakePassbackServer, oauth: OAuthClient, clock: FakeClock
) -> None:
    await log_in(fake, oauth)
    fake.idme.keys.rotate(keep_old=False)  # ID.me rotates: the cached key set is stale
    await clock.advance(60.0)
    tokens = await log_in(fake, oauth)
    assert tokens.id_token_claims is not None
    assert fake.count(endpoint="jwks") == 2

    bogus = tamper_id_token(
        lambda t: fake.idme.keys.sign(
            json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "==")), kid="never-published"
        )
    )
    async with oauth_for(fake, through(fake, bogus)) as victim:
        for _ in range(3):
            with pytest.raises(TokenVerificationError, match="never-published"):
                await log_in(fake, victim)
        assert fake.count(endpoint="jwks") == 3  # one fetch, then none within the interval
        await clock.advance(60.0)
        with pytest.raises(TokenVerificationError):
            await log_in(fake, victim)
    assert fake.count(endpoint="jwks") == 4


async def test_a_jwks_outage_fails_before_the_code_is_spent(
    fake: FakePassbackServer,
) -> None:
    down = True

    async def outage(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if down and request.url.path.endswith("/jwks"):
            return httpx.Response(503)
        return response

    async with oauth_for(fake, through(fake, outage)) as oauth:
        request = oauth.authorization_request(scopes=["openid"])
        code = oauth.parse_callback(await consent(fake, request), request)
        with pytest.raises(ServerError):
            await oauth.exchange_code(code, request)
        assert fake.count(endpoint="token") == 0
        down = False
        tokens = await oauth.exchange_code(code, request)
    assert tokens.id_token_claims is not None


def test_openid_without_joserfc_is_refused_before_the_login_starts() -> None:
    script = (
        "import sys; sys.modules['joserfc'] = None\n"
        "import idme_passback\n"
        "from idme_passback import OAuthClient, ConfigurationError\n"
        "oauth = OAuthClient('c', redirect_uri='https://a.example/cb')\n"
        "oauth.authorization_request(scopes=['military'])\n"
        "try:\n"
        "    oauth.authorization_request(scopes=['openid'])\n"
        "except ConfigurationError as e:\n"
        "    print(e)\n"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert 'pip install "idme-passback[jose]"' in done.stdout


# -- secrets ---------------------------------------------------------------------------------------


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore", "idme_passback")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    yield caplog
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


async def test_no_secret_of_the_login_escapes(
    fake: FakePassbackServer, logs: pytest.LogCaptureFixture
) -> None:
    async with oauth_for(fake) as oauth:
        request = oauth.authorization_request(scopes=["openid", IAL2])
        code = oauth.parse_callback(await consent(fake, request), request)
        tokens = await oauth.exchange_code(code, request)
        assert tokens.refresh_token is not None
        refreshed = await oauth.refresh(tokens.refresh_token)
        failures: list[BaseException] = []
        for attempt in (
            oauth.exchange_code(code, request),
            oauth.refresh(tokens.refresh_token),
        ):
            try:
                await attempt
            except PassbackError as exc:
                failures.append(exc)
        shown = [repr(oauth), repr(request), repr(tokens), repr(refreshed)]
    shown += [str(e) + repr(e) + "".join(traceback.format_exception(e)) for e in failures]
    shown += [record.getMessage() for record in logs.records]
    text = "\n".join(shown)
    assert len(failures) == 2
    secrets = [fake.client_secret, code, request.code_verifier, tokens.access_token]
    secrets += [tokens.refresh_token, tokens.id_token, refreshed.access_token]
    secrets += [refreshed.refresh_token]
    for secret in secrets:
        assert secret
        assert secret not in text


def test_new_errors_survive_pickling() -> None:
    errors = [
        AuthorizationError("m", error="invalid_scope", error_description="d"),
        AccessDeniedError("m", error="access_denied"),
        StateMismatchError("m"),
        TokenVerificationError("m"),
        OAuthError("m", status_code=401, error="invalid_client", body_excerpt="x"),
        InvalidGrantError("m", error="invalid_grant", error_description="gone"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
        assert type(copy) is type(error)
        assert copy.args == error.args
        assert vars(copy) == vars(error)


# -- over a real socket ---------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_login_works_over_loopback() -> None:
    fake = FakePassbackServer()
    with serve(fake) as base:
        async with (
            OAuthClient(
                fake.client_id, fake.client_secret, redirect_uri=CALLBACK, base_url=base
            ) as oauth,
            httpx.AsyncClient() as browser,
        ):
            request = oauth.authorization_request(scopes=["openid", IAL2])
            redirect = await browser.get(request.url)
            code = oauth.parse_callback(redirect.headers["location"], request)
            tokens = await oauth.exchange_code(code, request)
            assert tokens.id_token_claims is not None
            assert tokens.id_token_claims["iss"] == base + "oidc"
            async with PassbackClient(fake.api_token, base_url=base) as client:
                attributes = await client.get_attributes(tokens.access_token)
                front = await client.get_document(attributes.document_tokens.front)
    assert front.media_type == "image/jpeg"


@pytest.mark.parametrize("bad", ["", "two words", "line\nbreak", "é", "x" * 5000])
async def test_malformed_codes_and_refresh_tokens_send_nothing(
    fake: FakePassbackServer, oauth: OAuthClient, bad: str
) -> None:
    request = oauth.authorization_request(scopes=[IAL2])
    with pytest.raises(InvalidTokenError, match="authorization code") as caught:
        await oauth.exchange_code(bad, request)
    with pytest.raises(InvalidTokenError, match="refresh token"):
        await oauth.refresh(bad)
    if bad:
        assert bad not in str(caught.value)
        callback = str(httpx.URL(CALLBACK, params={"code": bad, "state": request.state}))
        with pytest.raises(AuthorizationError, match="plausible"):
            oauth.parse_callback(callback, request)
    assert fake.count(endpoint="token") == 0
