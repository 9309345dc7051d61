"""The argument parser: argparse, with errors that raise (never exit) and never echo a value."""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Sequence
from typing import NoReturn

from .._version import __version__
from ._context import Context
from ._exitcodes import UsageError, epilog

__all__ = ["ParserExit", "parse_args"]

_UNRECOGNIZED = "unrecognized arguments: "
_INVALID_CHOICE = re.compile(r"invalid choice: .*? \(choose from", re.DOTALL)
_SECRETS_HINT = (
    "secrets are never taken from the command line: set IDME_API_TOKEN and "
    "IDME_ACCESS_TOKEN (or use --api-token-file / --access-token-file), and pass "
    "document tokens on stdin"
)

_DESCRIPTION = """\
Fetch identity-document images from ID.me's Document Passback API.

Secrets never go on the command line, where every user of the machine can
read them: the API token comes from IDME_API_TOKEN or --api-token-file, the
access token from IDME_ACCESS_TOKEN or --access-token-file, and document
tokens from stdin. IDME_PASSBACK_BASE_URL, if set, is the default --base-url.
"""


class ParserExit(Exception):
    """argparse finished early on purpose (``--help``, ``--version``)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _clean(message: str) -> str:
    """Return argparse's ``message`` without the values it would echo (they may be secrets)."""
    if message.startswith(_UNRECOGNIZED):
        words = message[len(_UNRECOGNIZED) :].split()
        options = [word.split("=", 1)[0] for word in words if word.startswith("-") and word != "-"]
        text = "unrecognized arguments"
        if options:
            text += ": " + " ".join(options)
        if len(words) > len(options):
            text += f" (and {len(words) - len(options)} value(s), not shown)"
        if any("token" in option for option in options):
            text += "; " + _SECRETS_HINT
        return text
    return _INVALID_CHOICE.sub("invalid choice (choose from", message)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Raise a :class:`UsageError` instead of printing usage and exiting."""
        raise UsageError(f"{_clean(message)} (see '{self.prog} --help')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """Raise :class:`ParserExit` instead of exiting, so ``run()`` stays in charge."""
        if message:
            raise UsageError(_clean(message.strip()))
        raise ParserExit(status)


def _api_options() -> _Parser:
    parent = _Parser(add_help=False, allow_abbrev=False)
    group = parent.add_argument_group("connection")
    group.add_argument(
        "--environment",
        choices=("sandbox", "production"),
        default="sandbox",
        help="which ID.me API to call (default: sandbox)",
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="call this base URL instead (a proxy, a fake server); default: "
        "$IDME_PASSBACK_BASE_URL, else the environment's",
    )
    group.add_argument(
        "--api-token-file",
        metavar="PATH",
        help="read the API token from this file (default: $IDME_API_TOKEN)",
    )
    return parent


def _stdin_token(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "token",
        nargs="?",
        default="-",
        metavar="-",
        help="the document token is read from stdin (it is a secret, so it is never an argument)",
    )


def _command(
    commands: argparse._SubParsersAction[_Parser],
    name: str,
    *,
    summary: str,
    description: str,
    api: bool = True,
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        parents=[_api_options()] if api else [],
        help=summary,
        description=description,
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``idme-passback`` command line."""
    parser = _Parser(
        prog="idme-passback",
        description=_DESCRIPTION,
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Off, or '--api-token SECRET' would be taken as '--api-token-file SECRET'.
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub = _command(
        commands,
        "attributes",
        summary="print the user's attributes as JSON (document tokens included)",
        description="Print the attributes of the user whose access token is in\n"
        "IDME_ACCESS_TOKEN (or --access-token-file) as JSON. The output holds the\n"
        "document tokens: treat it as a secret.",
    )
    sub.add_argument(
        "--access-token-file",
        metavar="PATH",
        help="read the access token from this file (default: $IDME_ACCESS_TOKEN)",
    )

    sub = _command(
        commands,
        "fetch",
        summary="download one side of a document; the token is read from stdin",
        description="Download one side of an identity document to -o PATH, streamed\n"
        "and atomic; print the path. The document token is read from stdin:\n\n"
        "  idme-passback fetch -o front.jpg < front.token",
    )
    _stdin_token(sub)
    sub.add_argument("-o", "--output", metavar="PATH", required=True, help="where to write it")
    sub.add_argument("--size", metavar="WxH", help="fit inside this box (100..1000 each)")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing file")

    sub = _command(
        commands,
        "refresh",
        summary="print a new document token for the same document (token on stdin)",
        description="Print a new document token for the document whose token is on stdin.",
    )
    _stdin_token(sub)

    sub = _command(
        commands,
        "download-many",
        summary="download many documents into a folder, with a manifest",
        description="Download every document listed in FILE (or stdin) into --out DIR.\n\n"
        "Input: one token per line, or CSV rows token[,size[,filename]], or a CSV\n"
        "with a header naming a 'token' column (and optionally 'size', 'filename').\n"
        "Manifest: one JSON line per item (status, path, bytes, error), naming tokens\n"
        "only by a shortened form and their SHA-256. --resume skips items it lists as\n"
        "done whose files still exist. Exits 3 if any item failed.",
    )
    sub.add_argument("input", nargs="?", default="-", metavar="FILE", help="default: stdin")
    sub.add_argument("--out", metavar="DIR", required=True, help="the folder (created, 0700)")
    sub.add_argument("--size", metavar="WxH", help="the size for rows that name none")
    sub.add_argument("--concurrency", type=int, default=16, metavar="N", help="default: 16")
    sub.add_argument("--manifest", metavar="PATH", help="default: DIR/manifest.jsonl")
    sub.add_argument("--resume", action="store_true", help="skip what an earlier run finished")
    sub.add_argument(
        "--overwrite", action="store_true", help="replace existing files (and the manifest)"
    )

    sub = _command(
        commands,
        "serve-fake",
        api=False,
        summary="serve a fake Passback API on loopback and print its credentials",
        description="Serve idme_passback.testing.FakePassbackServer over HTTP until\n"
        "Ctrl+C, printing the base URL and the (fake) credentials it accepts.",
    )
    sub.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    sub.add_argument("--port", type=int, default=8000, help="default: 8000; 0 picks a free one")

    sub = _command(
        commands,
        "demo",
        api=False,
        summary="run the whole flow against an in-process fake, explained",
        description="Run attributes, downloads, a refresh and a rate-limited request\n"
        "against an in-process fake server: no network, no set-up, a few seconds.",
    )
    sub.add_argument("--out", metavar="DIR", help="where to put the images (default: a temp dir)")
    return parser


def parse_args(argv: Sequence[str] | None, ctx: Context) -> argparse.Namespace:
    """Parse ``argv`` (``sys.argv[1:]`` if ``None``); help and version go to ``ctx.stdout``.

    Raises:
        UsageError: for anything argparse rejects.
        ParserExit: after ``--help`` or ``--version``.
    """
    with contextlib.redirect_stdout(ctx.stdout):
        return build_parser().parse_args(argv)
