"""The ``idme-passback`` command line (also ``python -m idme_passback``).

Commands::

    idme-passback attributes                      print the user's attributes as JSON
    idme-passback fetch -o front.jpg < token      download one side of a document
    idme-passback refresh < token                 print a new document token
    idme-passback download-many tokens.csv --out DIR [--resume]
    idme-passback serve-fake [--port N]           serve the fake API on loopback
    idme-passback demo                            the whole flow against an in-process fake

Secrets never come from argv, which every user of the machine can read: the
API token comes from ``IDME_API_TOKEN`` or ``--api-token-file``, the access
token from ``IDME_ACCESS_TOKEN`` or ``--access-token-file``, and document
tokens from stdin. No option takes a secret's value.

Errors print one line, ``idme-passback: error: ...``, and no traceback:
not for a refused request, a bad file, a hostile server's answer or an
interrupted run. Only an error the command line cannot explain (a bug in
it) is called one, with its traceback when ``IDME_PASSBACK_DEBUG=1``.
Exit codes:

====  =====================================================================
0     success
1     any other error
2     bad usage or input: options, sizes, tokens, missing secrets, files
3     download-many: some items failed (see the manifest)
4     authentication: the API or access token was refused (401/403)
5     not found: unknown or expired document token (404/410), or no tokens
6     rate limited (429) beyond what the retries could absorb
7     transport or server failure: no connection, timeout, 5xx, bad body
130   interrupted (Ctrl+C)
====  =====================================================================

Tests drive :func:`run` in-process with a transport of their own, for
example ``httpx.ASGITransport(app=FakePassbackServer())``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

import httpx

from ..errors import PassbackError
from ._commands import attributes, fetch, refresh
from ._context import Context
from ._demo import demo
from ._download import download_many
from ._exitcodes import ExitCode, UsageError, exit_code_for
from ._parser import ParserExit, parse_args
from ._progress import ProgressLine
from ._serve import serve_fake

__all__ = ["DEBUG_ENV", "ExitCode", "ProgressLine", "UsageError", "main", "run"]

#: Set to 1 to see the traceback of an error the command line cannot explain.
DEBUG_ENV = "IDME_PASSBACK_DEBUG"

_Command = Callable[[argparse.Namespace, Context], Awaitable[int]]

_COMMANDS: dict[str, _Command] = {
    "attributes": attributes,
    "demo": demo,
    "download-many": download_many,
    "fetch": fetch,
    "refresh": refresh,
    "serve-fake": serve_fake,
}


def _innermost(exc: BaseException) -> BaseException:
    # A task group wraps failures in an exception group; the user wants the (first) failure.
    # (Duck-typed: Python 3.10 has no BaseExceptionGroup.)
    while True:
        inner = getattr(exc, "exceptions", None)
        if not (isinstance(inner, tuple) and inner and isinstance(inner[0], BaseException)):
            return exc
        exc = inner[0]


def _describe(exc: BaseException) -> str | None:
    """The one line that explains ``exc``, or ``None`` for an error nothing explains (a bug)."""
    if isinstance(exc, UnicodeError):
        return f"the input is not UTF-8 text ({getattr(exc, 'reason', exc)})"
    if isinstance(exc, UsageError | PassbackError | OSError):
        return str(exc) or type(exc).__name__
    return None


async def run(
    argv: Sequence[str] | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one command line and return its exit code; never raises for a failed command.

    Args:
        argv: the arguments (``sys.argv[1:]`` when ``None``).
        transport: send every request through this httpx transport.
        stdin, stdout, stderr: the streams to use instead of the process's.
    """
    ctx = Context(stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr, transport)
    try:
        args = parse_args(argv, ctx)
        return int(await _COMMANDS[args.command](args, ctx))
    except ParserExit as done:
        return done.status
    except Exception as raised:
        exc = _innermost(raised)
        described = _describe(exc)
        if described is not None:
            ctx.note(f"idme-passback: error: {described}")
            return int(exit_code_for(exc))
        ctx.note(
            f"idme-passback: internal error: {type(exc).__name__}: {exc} (a bug in "
            f"idme-passback; please report it; set {DEBUG_ENV}=1 to see its traceback)"
        )
        if os.environ.get(DEBUG_ENV) == "1":
            # Scrubbed like every line printed: a traceback repeats messages.
            ctx.note("".join(traceback.format_exception(raised)).rstrip())
        return int(ExitCode.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line in a fresh event loop; the ``idme-passback`` entry point."""
    try:
        return asyncio.run(run(argv))
    except KeyboardInterrupt:
        sys.stderr.write("idme-passback: interrupted\n")
        return int(ExitCode.INTERRUPTED)
