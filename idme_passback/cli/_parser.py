"""The argument parser: argparse, with errors that raise (never exit) and never echo a value."""

from __future__ import annotations

import argparse
import contextlib
import math
import re
from collections.abc import Callable, Sequence
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


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, got {text[:20]!r}")
    return port


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text[:20]!r}")
    return value


def _seconds(*, positive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            kind = "a positive" if positive else "a non-negative"
            raise argparse.ArgumentTypeError(
                f"expected {kind} number of seconds, got {text[:20]!r}"
            )
        return value

    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate is a number from 0 to 1, got {text[:20]!r}")
    return value


def _dimensions(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text[:20]!r}")
    return int(width), int(height)


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
        description="Serve idme_passback.testing.FakePassbackServer over HTTP (or HTTPS\n"
        "with --certfile/--keyfile) until Ctrl+C, printing the base URL and the\n"
        "(fake) credentials it accepts. The options set the fake's rate limit,\n"
        "latency and faults, for load tests.",
    )
    sub.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    sub.add_argument("--port", type=_port, default=8000, help="default: 8000; 0 picks a free one")
    fake = sub.add_argument_group("the fake's behaviour")
    fake.add_argument(
        "--limit", type=_positive_int, default=2, metavar="N", help="requests per period (2)"
    )
    fake.add_argument(
        "--period",
        type=_seconds(positive=True),
        default=60.0,
        metavar="SECONDS",
        help="the rate-limit period (60)",
    )
    fake.add_argument(
        "--algorithm",
        choices=("sliding", "fixed", "bucket"),
        default="sliding",
        help="how the fake counts (sliding)",
    )
    fake.add_argument(
        "--latency",
        type=_seconds(positive=False),
        default=0.0,
        metavar="SECONDS",
        help="sleep before each document answer (0)",
    )
    for name, what in (
        ("error-rate", "a 500 page"),
        ("cut-body-rate", "half its body under a full Content-Length"),
        ("non-image-rate", "a 200 HTML page"),
        ("throttle-rate", "a 429 within its budget"),
    ):
        fake.add_argument(
            f"--{name}",
            type=_rate,
            default=0.0,
            metavar="P",
            help=f"the chance a document request gets {what} (0)",
        )
    fake.add_argument("--retry-after", metavar="VALUE", help="a fixed Retry-After for every 429")
    fake.add_argument("--seed", metavar="SEED", help="replay the same faults and tokens")
    fake.add_argument("--image-format", choices=("JPEG", "PNG"), default="JPEG")
    fake.add_argument(
        "--original-size",
        type=_dimensions,
        default=(856, 540),
        metavar="WxH",
        help="every document's original image (856x540)",
    )
    fake.add_argument(
        "--single-use-access-tokens",
        action="store_true",
        help="a second attributes call with one access token gets 401",
    )
    tls = sub.add_argument_group("TLS")
    tls.add_argument("--certfile", metavar="PATH", help="serve HTTPS with this certificate (PEM)")
    tls.add_argument("--keyfile", metavar="PATH", help="and this private key (PEM)")

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
