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

Errors print one line, ``idme-passback: error: ...``, and no traceback.
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
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

import httpx

from ._commands import attributes, fetch, refresh
from ._context import Context
from ._demo import demo
from ._download import download_many
from ._exitcodes import ExitCode, UsageError, exit_code_for
from ._parser import ParserExit, parse_args
from ._progress import ProgressLine
from ._serve import serve_fake

__all__ = ["ExitCode", "ProgressLine", "UsageError", "main", "run"]

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
    # A task group wraps a lone failure in an exception group; the user wants the failure.
    while True:
        inner = getattr(exc, "exceptions", None)
        if not (isinstance(inner, tuple) and len(inner) == 1):
            return exc
        exc = inner[0]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UsageError | OSError) or exc.__module__.startswith("idme_passback"):
        return str(exc) or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {exc}"


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
        ctx.note(f"idme-passback: error: {_describe(exc)}")
        return int(exit_code_for(exc))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line in a fresh event loop; the ``idme-passback`` entry point."""
    try:
        return asyncio.run(run(argv))
    except KeyboardInterrupt:
        sys.stderr.write("idme-passback: interrupted\n")
        return int(ExitCode.INTERRUPTED)
