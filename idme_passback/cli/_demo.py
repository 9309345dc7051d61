"""The ``demo`` command: the whole flow against an in-process fake server, step by step."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import httpx

from .._tokens import shorten
from ..client import PassbackClient
from ..limiter import RateLimiter
from ._context import Context
from ._exitcodes import ExitCode, UsageError

__all__ = ["demo"]

#: The real API allows 2 requests a minute per document; a demo cannot wait a minute.
DEMO_LIMIT = 2
DEMO_PERIOD = 2.0
DEMO_BOX = "300x200"


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


async def demo(args: argparse.Namespace, ctx: Context) -> int:
    """Run attributes, downloads, a refresh and a rate-limited request against a fake server."""
    try:
        from PIL import Image  # noqa: F401, PLC0415 - only to fail early and clearly

        from ..testing import FakePassbackServer  # noqa: PLC0415 - needs the fake extra
    except ImportError:
        raise UsageError("the demo needs Pillow: pip install 'idme-passback[fake]'") from None

    folder = _folder(args.out)
    fake = FakePassbackServer(limit=DEMO_LIMIT, period=DEMO_PERIOD)
    limiter = RateLimiter(limit=DEMO_LIMIT, period=DEMO_PERIOD)
    say = ctx.out
    say("idme-passback demo: the Document Passback flow against an in-process fake of the API.")
    say("Nothing leaves this process: requests go to the fake through httpx.ASGITransport.")
    say()
    async with PassbackClient(
        fake.api_token,
        base_url="http://passback.fake/",
        transport=httpx.ASGITransport(app=fake),
        limiter=limiter,
    ) as client:
        say("1. Attributes: the access token from the user's ID.me login buys their attributes.")
        attributes = await client.get_attributes(fake.access_token)
        tokens = attributes.document_tokens
        say(f"   handles: {', '.join(attributes)}")
        say(f"   document tokens: front {shorten(tokens.front)}  back {shorten(tokens.back)}")
        say()

        say(
            f"2. Documents: each side is downloaded at its original size, then fitted inside "
            f"{DEMO_BOX} with its aspect ratio kept."
        )
        for side, token in (("front", tokens.front), ("back", tokens.back)):
            for size in (None, DEMO_BOX):
                name = f"{side}-{size or 'original'}.jpg"
                path = await client.download_document(token, folder / name, size=size)
                width, height = _dimensions(path)
                asked = f"asked {size}" if size else "original"
                say(f"   {side:<5} {asked:<14} got {width}x{height}  {path}")
        say()

        say("3. Refresh: a new token for the front names the same document, for a repeat visit.")
        refreshed = await client.refresh_document_token(tokens.front)
        say(f"   new front token: {shorten(refreshed)} (it shares the old token's rate limit)")
        say()

        say(
            f"4. Rate limit: the real API allows {DEMO_LIMIT} requests a minute per document; "
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
    say(f"Done: 4 images in {folder}")
    return ExitCode.OK if rejected == 0 else ExitCode.ERROR
