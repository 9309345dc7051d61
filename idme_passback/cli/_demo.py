"""The ``demo`` command: the whole flow against an in-process fake ID.me, step by step.

Login (authorize, callback, code exchange), attributes, both images, a
document token refresh, the rate limit, and an OAuth refresh: every request
goes to the fake through ``httpx.ASGITransport``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from .._tokens import shorten
from ..client import PassbackClient
from ..errors import ConfigurationError
from ..limiter import RateLimiter
from ..models import DocumentTokens
from ..oauth import OAuthClient, TokenSet
from ._context import Context
from ._exitcodes import ExitCode, UsageError

__all__ = ["demo"]

#: The real API allows 2 requests a minute per document; a demo cannot wait a minute.
DEMO_LIMIT = 2
DEMO_PERIOD = 2.0
DEMO_BOX = "300x200"
DEMO_BASE = "http://passback.fake/"
DEMO_CALLBACK = "https://backend.example/idme/callback"
IAL2 = "http://idmanagement.gov/ns/assurance/ial/2/aal/2"


def _dimensions(path: Path) -> tuple[int, int]:
    from PIL import Image  # noqa: PLC0415 - Pillow is an optional extra

    with Image.open(path) as image:
        width, height = image.size
    return (width, height)


def _folder(out: str | None) -> Path:
    if out is None:
        return Path(tempfile.mkdtemp(prefix="idme-passback-demo-"))
    folder = Path(out)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def _openid() -> list[str]:
    """``openid`` when joserfc is there to verify the id_token (the ``jose`` extra)."""
    try:
        import joserfc  # noqa: F401, PLC0415 - only to know whether it is there
    except ImportError:
        return []
    return ["openid"]


async def _log_in(
    oauth: OAuthClient, transport: httpx.AsyncBaseTransport, ctx: Context
) -> TokenSet:
    say = ctx.out
    request = oauth.authorization_request(scopes=[*_openid(), IAL2])
    say("1. Login: the backend sends the browser to ID.me's authorize URL (PKCE S256, a state).")
    async with httpx.AsyncClient(transport=transport) as browser:
        consent = await browser.get(request.url)
    callback = consent.headers["location"]
    say(f"   ID.me redirects back to {callback.split('?')[0]} with a code and the state.")
    code = oauth.parse_callback(callback, request)
    tokens = await oauth.exchange_code(code, request)
    say(
        f"   The code buys a {tokens.token_type} access token for {tokens.expires_in:g} s "
        "(single-use) and a refresh token."
    )
    if tokens.id_token_claims is not None:
        say(f"   The id_token verified against the JWKS: issuer {tokens.id_token_claims['iss']}.")
    else:
        say('   (pip install "idme-passback[jose]" to ask for openid and verify the id_token.)')
    say()
    return tokens


async def _documents(
    client: PassbackClient, tokens: DocumentTokens, folder: Path, ctx: Context
) -> int:
    """Download each side twice, at its original size and fitted inside the box."""
    ctx.out(
        f"3. Documents: each side is downloaded at its original size, then fitted inside "
        f"{DEMO_BOX} with its aspect ratio kept."
    )
    sides = [("front", tokens.front)]
    if tokens.back is not None:  # a passport has a front only
        sides.append(("back", tokens.back))
    for side, token in sides:
        for size in (None, DEMO_BOX):
            name = f"{side}-{size or 'original'}.jpg"
            path = await client.download_document(token, folder / name, size=size)
            width, height = _dimensions(path)
            asked = f"asked {size}" if size else "original"
            ctx.out(f"   {side:<5} {asked:<14} got {width}x{height}  {path}")
    ctx.out()
    return 2 * len(sides)


async def demo(args: argparse.Namespace, ctx: Context) -> int:
    """Run the login, attributes, downloads, refreshes and a rate-limited request against a fake."""
    try:
        from PIL import Image  # noqa: F401, PLC0415 - only to fail early and clearly

        from ..testing import FakePassbackServer  # noqa: PLC0415 - needs the fake extra
    except ImportError:
        raise UsageError("the demo needs Pillow: pip install 'idme-passback[fake]'") from None

    folder = _folder(args.out)
    fake = FakePassbackServer(limit=DEMO_LIMIT, period=DEMO_PERIOD)
    limiter = RateLimiter(limit=DEMO_LIMIT, period=DEMO_PERIOD)
    say = ctx.out
    say("idme-passback demo: ID.me login and Document Passback against an in-process fake.")
    say("Nothing leaves this process: requests go to the fake through httpx.ASGITransport.")
    say()
    transport = httpx.ASGITransport(app=fake)
    async with (
        OAuthClient(
            fake.client_id,
            fake.client_secret,
            redirect_uri=DEMO_CALLBACK,
            base_url=DEMO_BASE,
            transport=transport,
        ) as oauth,
        PassbackClient(
            fake.api_token, base_url=DEMO_BASE, transport=transport, limiter=limiter
        ) as client,
    ):
        try:
            login = await _log_in(oauth, transport, ctx)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
        say("2. Attributes: the access token buys the user's attributes, once.")
        attributes = await client.get_attributes(login.access_token)
        tokens = attributes.document_tokens
        say(f"   handles: {', '.join(attributes)}")
        back = "none (a one-sided document)" if tokens.back is None else shorten(tokens.back)
        say(f"   document tokens: front {shorten(tokens.front)}  back {back}")
        say()
        images = await _documents(client, tokens, folder, ctx)

        say("4. Refresh: a new token for the front names the same document, for a repeat visit.")
        refreshed = await client.refresh_document_token(tokens.front)
        say(f"   new front token: {shorten(refreshed)} (it shares the old token's rate limit)")
        say()

        say(
            f"5. Rate limit: the real API allows {DEMO_LIMIT} requests a minute per document; "
            f"the demo shortens the period to {DEMO_PERIOD:g} s."
        )
        say(
            f"   The front has had its {DEMO_LIMIT} requests, so a third waits on the client's "
            "limiter instead of earning a 429."
        )
        began = time.monotonic()
        image = await client.get_document(refreshed)
        waited = time.monotonic() - began
        rejected = fake.count(status=429)
        say(
            f"   waited {waited:.1f} s, then got {len(image)} bytes ({image.media_type}); "
            f"the fake answered {rejected} requests with 429."
        )
        say()
        assert login.refresh_token is not None  # the fake always issues one
        renewed = await oauth.refresh(login.refresh_token)
        say(
            "6. OAuth refresh: the refresh token buys a new access token for another "
            f"attributes call ({renewed.expires_in:g} s), without a new login."
        )
    say()
    say(f"Done: {images} images in {folder}")
    return ExitCode.OK if rejected == 0 else ExitCode.ERROR
