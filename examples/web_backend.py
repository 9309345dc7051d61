"""A Starlette backend that returns a user's identity-document images after their ID.me login.

One :class:`PassbackClient` serves the whole process: it is created when the
app starts and closed when it stops, so connections are pooled and every
request goes through the same per-document rate limiter.

Run it (Starlette and uvicorn installed)::

    export IDME_API_TOKEN=...                # the consumer's API token
    export IDME_PASSBACK_BASE_URL=...        # optional: a proxy or a fake server
    uvicorn examples.web_backend:app

To try it with no ID.me account, run ``idme-passback serve-fake`` and export
the variables it prints, then open
``http://127.0.0.1:8000/idme/callback?access_token=<IDME_ACCESS_TOKEN>``
(give the backend another ``--port`` than the fake's).
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from idme_passback import (
    AuthenticationError,
    DocumentImage,
    DocumentTokens,
    DocumentTokensMissingError,
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


def client_from_env() -> PassbackClient:
    """Return a client configured by ``IDME_API_TOKEN`` and ``IDME_PASSBACK_BASE_URL``."""
    return PassbackClient(
        os.environ.get("IDME_API_TOKEN"),
        base_url=os.environ.get("IDME_PASSBACK_BASE_URL") or None,
        deadline=REQUEST_DEADLINE,
    )


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
) -> tuple[DocumentImage, DocumentImage]:
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
        group.start_soon(fetch, "back", tokens.back)
    if failures:
        raise failures[0]
    return images["front"], images["back"]


async def callback(request: Request) -> JSONResponse:
    """``GET /idme/callback?access_token=...``: the user's front and back images as JSON."""
    # In a real app ID.me redirects here with ?code=..., and the backend exchanges
    # that code for the access token at ID.me's OAuth token endpoint. This example
    # takes the access token directly to stay short.
    access_token = request.query_params.get("access_token")
    if not access_token:
        return _problem(400, "missing_access_token", "the access_token parameter is required")
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
    except PassbackError as exc:
        # A 401 here means *our* API token was refused: a server fault, not the user's.
        return _problem(502, "upstream_error", str(exc))
    return JSONResponse({"front": _encode(front), "back": _encode(back)})


def create_app(client_factory: Callable[[], PassbackClient] = client_from_env) -> Starlette:
    """Return the app; ``client_factory`` makes its one client (tests pass a fake's)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with client_factory() as client:
            app.state.passback = client
            yield

    return Starlette(routes=[Route("/idme/callback", callback)], lifespan=lifespan)


app = create_app()
