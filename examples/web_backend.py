"""A Starlette backend: ID.me login, then the user's identity-document images.

``GET /login`` sends the browser to ID.me (OAuth 2.0 with PKCE); ID.me sends
it back to ``GET /callback``, which checks the state, exchanges the code,
spends the access token on the attributes and returns both images as JSON.
``GET /idme/callback?access_token=...`` skips the login for a caller that
already holds an access token.

One :class:`OAuthClient` and one :class:`PassbackClient` serve the whole
process: made when the app starts, closed when it stops, so connections are
pooled and every request goes through the same per-document rate limiter.

Run it (Starlette and uvicorn installed)::

    export IDME_API_TOKEN=...                # the consumer's API token
    export IDME_CLIENT_ID=... IDME_CLIENT_SECRET=...   # its OAuth client
    export IDME_REDIRECT_URI=https://backend.example/callback
    export IDME_PASSBACK_BASE_URL=...        # optional: a proxy or a fake server
    uvicorn examples.web_backend:app

To try it with no ID.me account, run ``idme-passback serve-fake --port 8001``,
export the variables it prints and
``IDME_REDIRECT_URI=http://127.0.0.1:8000/callback``, start the backend on
port 8000 and open ``http://127.0.0.1:8000/login``.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from idme_passback import (
    AccessDeniedError,
    AuthenticationError,
    AuthorizationError,
    AuthorizationRequest,
    DocumentImage,
    DocumentTokens,
    DocumentTokensMissingError,
    InvalidGrantError,
    LimiterUnavailableError,
    OAuthClient,
    PassbackClient,
    PassbackError,
    RateLimitError,
)

#: The box the images are fitted into: enough for a review screen, far less than the original.
DOCUMENT_SIZE = "600x400"
#: A web request must not hang for minutes on a spent rate limit: fail fast, let the user retry.
REQUEST_DEADLINE = 20.0
#: What to tell a client to wait when the API named no Retry-After.
DEFAULT_RETRY_AFTER = 60
#: What the login asks ID.me for: identity verified at IAL2 (add "openid" for an id_token).
SCOPES = ["http://idmanagement.gov/ns/assurance/ial/2/aal/2"]
#: The cookie that ties a browser to its login in flight (it holds the state, not a secret).
LOGIN_COOKIE = "idme_login"
#: Seconds a login may stay in flight, and how many may at once (the oldest go first).
LOGIN_LIFETIME = 600.0
MAX_PENDING_LOGINS = 10_000


def client_from_env() -> PassbackClient:
    """Return a client configured by ``IDME_API_TOKEN`` and ``IDME_PASSBACK_BASE_URL``."""
    return PassbackClient(
        os.environ.get("IDME_API_TOKEN"),
        base_url=os.environ.get("IDME_PASSBACK_BASE_URL") or None,
        deadline=REQUEST_DEADLINE,
    )


def oauth_from_env() -> OAuthClient | None:
    """Return the login client the environment configures; ``None`` without ``IDME_CLIENT_ID``.

    It reads ``IDME_CLIENT_ID``, ``IDME_CLIENT_SECRET``, ``IDME_REDIRECT_URI``
    and ``IDME_PASSBACK_BASE_URL``.
    """
    if not os.environ.get("IDME_CLIENT_ID"):
        return None
    return OAuthClient(
        os.environ.get("IDME_CLIENT_ID", ""),
        os.environ.get("IDME_CLIENT_SECRET") or None,
        redirect_uri=os.environ.get("IDME_REDIRECT_URI", ""),
        base_url=os.environ.get("IDME_PASSBACK_BASE_URL") or None,
    )


class PendingLogins:
    """Logins in flight, kept server-side: the verifier and nonce never reach the browser."""

    def __init__(self) -> None:
        self._by_state: collections.OrderedDict[str, tuple[float, AuthorizationRequest]] = (
            collections.OrderedDict()
        )

    def add(self, request: AuthorizationRequest) -> None:
        self._by_state[request.state] = (time.monotonic() + LOGIN_LIFETIME, request)
        while len(self._by_state) > MAX_PENDING_LOGINS:
            self._by_state.popitem(last=False)

    def take(self, state: str | None) -> AuthorizationRequest | None:
        """Return and forget the login ``state`` names, if it is still fresh."""
        found = self._by_state.pop(state, None) if state else None
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]


def _problem(status: int, error: str, detail: str, **headers: str) -> JSONResponse:
    # The library's messages carry no secret, so they are safe to return as the detail.
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _encode(image: DocumentImage) -> dict[str, object]:
    return {
        "media_type": image.media_type,
        "bytes": len(image),
        "data": base64.b64encode(image.content).decode("ascii"),
    }


async def fetch_both(
    client: PassbackClient, tokens: DocumentTokens
) -> tuple[DocumentImage, DocumentImage | None]:
    """Fetch the front and the back concurrently; raise the first failure, unwrapped.

    A plain task group would wrap a failure in an exception group; the
    handler wants the library's own error to map it to a status.
    """
    images: dict[str, DocumentImage] = {}
    failures: list[PassbackError] = []

    async def fetch(side: str, token: str) -> None:
        try:
            images[side] = await client.get_document(token, size=DOCUMENT_SIZE)
        except PassbackError as exc:
            failures.append(exc)
            group.cancel_scope.cancel()  # one side is no use without the other

    async with anyio.create_task_group() as group:
        group.start_soon(fetch, "front", tokens.front)
        if tokens.back is not None:  # a passport has a front only
            group.start_soon(fetch, "back", tokens.back)
    if failures:
        raise failures[0]
    return images["front"], images.get("back")


async def login(request: Request) -> Response:
    """``GET /login``: send the browser to ID.me, remembering this login server-side."""
    oauth: OAuthClient | None = request.app.state.oauth
    if oauth is None:
        return _problem(503, "login_not_configured", "set IDME_CLIENT_ID to enable /login")
    pending = oauth.authorization_request(scopes=SCOPES)
    request.app.state.logins.add(pending)
    response = RedirectResponse(pending.url, status_code=302)
    secure = request.url.scheme == "https"
    response.set_cookie(
        LOGIN_COOKIE,
        pending.state,
        max_age=int(LOGIN_LIFETIME),
        httponly=True,
        secure=secure,
        samesite="lax",
    )
    return response


async def oauth_callback(request: Request) -> Response:
    """``GET /callback?code=...&state=...``: finish the login, then answer like /idme/callback."""
    oauth: OAuthClient | None = request.app.state.oauth
    pending = request.app.state.logins.take(request.cookies.get(LOGIN_COOKIE))
    if oauth is None or pending is None:
        return _problem(400, "no_login", "no login in flight for this browser: start at /login")
    try:
        code = oauth.parse_callback(str(request.url), pending)
        login_tokens = await oauth.exchange_code(code, pending)
    except AccessDeniedError as exc:
        return _problem(403, "access_denied", str(exc))
    except AuthorizationError as exc:  # the redirect's error, or a state that is not ours
        return _problem(400, exc.error or "bad_callback", str(exc))
    except InvalidGrantError as exc:  # the code was spent or expired: log in again
        return _problem(400, "login_expired", str(exc))
    except PassbackError as exc:
        return _problem(502, "upstream_error", str(exc))
    response = await documents_for(request, login_tokens.access_token)
    response.delete_cookie(LOGIN_COOKIE)
    return response


async def callback(request: Request) -> JSONResponse:
    """``GET /idme/callback?access_token=...``: the user's front and back images as JSON."""
    access_token = request.query_params.get("access_token")
    if not access_token:
        return _problem(400, "missing_access_token", "the access_token parameter is required")
    return await documents_for(request, access_token)


async def documents_for(request: Request, access_token: str) -> JSONResponse:
    """Spend the access token on the attributes, then fetch both sides."""
    client: PassbackClient = request.app.state.passback
    try:
        attributes = await client.get_attributes(access_token)
        tokens = attributes.document_tokens
    except DocumentTokensMissingError as exc:
        return _problem(404, "no_document", str(exc))
    except AuthenticationError as exc:
        # The access token was refused (expired, or already used): log in again.
        return _problem(401, "not_authenticated", str(exc))
    except ValueError as exc:  # InvalidTokenError: a malformed access token
        return _problem(400, "bad_access_token", str(exc))
    except PassbackError as exc:
        return _problem(502, "upstream_error", str(exc))

    try:
        front, back = await fetch_both(client, tokens)
    except RateLimitError as exc:
        wait = DEFAULT_RETRY_AFTER if exc.retry_after is None else math.ceil(exc.retry_after)
        return _problem(429, "rate_limited", str(exc), **{"Retry-After": str(wait)})
    except LimiterUnavailableError as exc:
        # The shared budget (Redis) is down: nothing was sent; try again shortly.
        return _problem(503, "limiter_unavailable", str(exc), **{"Retry-After": "5"})
    except PassbackError as exc:
        # A 401 here means *our* API token was refused: a server fault, not the user's.
        return _problem(502, "upstream_error", str(exc))
    return JSONResponse({"front": _encode(front), "back": back and _encode(back)})


def create_app(
    client_factory: Callable[[], PassbackClient] = client_from_env,
    oauth_factory: Callable[[], OAuthClient | None] = oauth_from_env,
) -> Starlette:
    """Return the app; the factories make its one client of each (tests pass a fake's).

    When ``oauth_factory`` gives ``None`` there is no login: ``/login`` answers 503.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            app.state.passback = await stack.enter_async_context(client_factory())
            oauth = oauth_factory()
            app.state.oauth = oauth and await stack.enter_async_context(oauth)
            app.state.logins = PendingLogins()
            yield

    routes = [
        Route("/login", login),
        Route("/callback", oauth_callback),
        Route("/idme/callback", callback),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


app = create_app()
