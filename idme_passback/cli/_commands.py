"""The single-call commands: ``attributes``, ``fetch`` and ``refresh``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..client import PassbackClient
from ..limiter import RateLimiter
from ._context import Context
from ._exitcodes import ExitCode
from ._secrets import read_access_token, read_api_token, read_document_token

__all__ = ["BASE_URL_ENV", "attributes", "fetch", "make_client", "refresh"]

BASE_URL_ENV = "IDME_PASSBACK_BASE_URL"


def make_client(
    args: argparse.Namespace, ctx: Context, *, limiter: RateLimiter | None = None
) -> PassbackClient:
    """Return a client configured from the global options and the environment.

    Raises:
        UsageError: no API token.
        ConfigurationError: an unusable base URL.
    """
    api_token = read_api_token(ctx, args.api_token_file)
    base_url = args.base_url or os.environ.get(BASE_URL_ENV) or None
    return PassbackClient(
        api_token,
        environment=args.environment,
        base_url=base_url,
        transport=ctx.transport,
        limiter=limiter,
    )


async def attributes(args: argparse.Namespace, ctx: Context) -> int:
    """Print the user's attributes as JSON, document tokens included (that is their point)."""
    async with make_client(args, ctx) as client:
        access_token = read_access_token(ctx, args.access_token_file)
        result = await client.get_attributes(access_token)
    payload = {
        "attributes": [
            {"handle": item.handle, "name": item.name, "value": item.value}
            for item in result.attributes
        ],
        "status": [
            {
                "group": entry.group,
                "subgroups": None if entry.subgroups is None else list(entry.subgroups),
                "verified": entry.verified,
            }
            for entry in result.status
        ],
    }
    ctx.out(json.dumps(payload, indent=2, ensure_ascii=False))
    return ExitCode.OK


async def fetch(args: argparse.Namespace, ctx: Context) -> int:
    """Download one side of a document (token on stdin) to ``-o PATH``; print the path."""
    async with make_client(args, ctx) as client:
        token = read_document_token(ctx, args.token)
        path = await client.download_document(
            token, Path(args.output), size=args.size, overwrite=args.overwrite
        )
    ctx.out(str(path))
    return ExitCode.OK


async def refresh(args: argparse.Namespace, ctx: Context) -> int:
    """Print a new document token for the document whose token is on stdin."""
    async with make_client(args, ctx) as client:
        token = read_document_token(ctx, args.token)
        new_token = await client.refresh_document_token(token)
    ctx.out(new_token)
    return ExitCode.OK
