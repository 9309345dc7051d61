"""Where the command line finds its secrets: the environment, a file, or stdin; never argv.

Anything on the command line is visible to every user of the machine
(``ps``, ``/proc/PID/cmdline``), so no option takes a secret's value.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from ._context import Context
from ._exitcodes import UsageError

__all__ = ["read_access_token", "read_api_token", "read_document_token"]

API_TOKEN_ENV = "IDME_API_TOKEN"
ACCESS_TOKEN_ENV = "IDME_ACCESS_TOKEN"


def _from_file(path: str, option: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        # The path is not echoed: someone may have passed the secret itself as the path.
        raise UsageError(
            f"cannot read {option}: {reason} (it takes the path of a file holding the "
            "token, never the token itself)"
        ) from None
    secret = text.strip()
    if not secret:
        raise UsageError(f"the file given to {option} is empty")
    return secret


def _read(ctx: Context, path: str | None, option: str, env: str, what: str) -> str:
    if path is not None:
        return ctx.keep_secret(_from_file(path, option))
    secret = os.environ.get(env, "").strip()
    if not secret:
        raise UsageError(
            f"no {what}: set {env} or pass {option} PATH "
            "(secrets are never taken from the command line)"
        )
    return ctx.keep_secret(secret)


def read_api_token(ctx: Context, path: str | None) -> str:
    """Return the API token from ``--api-token-file`` or ``IDME_API_TOKEN``.

    Raises:
        UsageError: when neither gives one, or the file cannot be read.
    """
    return _read(ctx, path, "--api-token-file", API_TOKEN_ENV, "API token")


def read_access_token(ctx: Context, path: str | None) -> str:
    """Return the access token from ``--access-token-file`` or ``IDME_ACCESS_TOKEN``.

    Raises:
        UsageError: when neither gives one, or the file cannot be read.
    """
    return _read(ctx, path, "--access-token-file", ACCESS_TOKEN_ENV, "access token")


def read_document_token(ctx: Context, argument: str | None) -> str:
    """Return the one document token on stdin (prompted for, unechoed, on a terminal).

    ``argument`` is the TOKEN positional: only ``-`` (or nothing) is accepted.

    Raises:
        UsageError: for a token given as an argument, or not exactly one token on stdin.
    """
    if argument not in (None, "-"):
        # Refused rather than warned about: by now it is in the process table anyway,
        # but a habit that works would be repeated. The value is not echoed.
        raise UsageError(
            "document tokens are secrets and are never taken as arguments (argv is visible "
            "to other users); pass it on stdin, for example: "
            "idme-passback fetch -o front.jpg < front.token"
        )
    if ctx.stdin.isatty():
        text = getpass.getpass("Document token (not echoed): ", stream=ctx.stderr)
    else:
        text = ctx.stdin.read()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise UsageError(f"expected one document token on stdin, got {len(lines)} lines")
    return ctx.keep_secret(lines[0])
