"""Checks and display forms for the three secrets.

Document tokens travel as a path segment and the API token as a query value,
so each is checked against a strict alphabet before any request is built:
nothing a caller passes can turn the request into a different one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .errors import InvalidTokenError

MAX_TOKEN_LENGTH = 256
MAX_ACCESS_TOKEN_LENGTH = 4096

# Letters, digits, '-', '_', '.', '~' (RFC 3986 unreserved), starting with a
# letter or digit so that '.' and '..' can never form a path segment.
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")
# Access tokens go through httpx's query encoding or a header; only what
# could split a header or a log line (whitespace, control characters) is refused.
_ACCESS_TOKEN = re.compile(r"[\x21-\x7e]+")


def _describe(kind: str, token: object) -> str:
    if not isinstance(token, str):
        return f"{kind} must be a str, got {type(token).__name__}"
    if not token:
        return f"{kind} is empty"
    return ""


def check_token(token: object, *, kind: str = "document token") -> str:
    """Return ``token`` if it is safe as a path segment or query value.

    Raises:
        InvalidTokenError: naming what is wrong, without echoing the token.
    """
    problem = _describe(kind, token)
    if problem:
        raise InvalidTokenError(problem)
    assert isinstance(token, str)
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError(
            f"{kind} is {len(token)} characters long; the limit is {MAX_TOKEN_LENGTH}"
        )
    if _TOKEN.fullmatch(token) is None or ".." in token:
        raise InvalidTokenError(
            f"{kind} may hold only letters, digits, '-', '_', '.' and '~' "
            "(starting with a letter or digit, no '..'); refusing to send it"
        )
    return token


def check_access_token(token: object) -> str:
    """Return ``token`` if it is a plausible OAuth access token.

    Raises:
        InvalidTokenError: for an empty or absurdly long token, or one with
            whitespace or control characters.
    """
    problem = _describe("access token", token)
    if problem:
        raise InvalidTokenError(problem)
    assert isinstance(token, str)
    if len(token) > MAX_ACCESS_TOKEN_LENGTH:
        raise InvalidTokenError(
            f"access token is {len(token)} characters long; the limit is {MAX_ACCESS_TOKEN_LENGTH}"
        )
    if _ACCESS_TOKEN.fullmatch(token) is None:
        raise InvalidTokenError(
            "access token holds whitespace, control or non-ASCII characters; refusing to send it"
        )
    return token


def shorten(token: str) -> str:
    """Return a correlation form of a token: a few leading characters and an ellipsis."""
    keep = min(6, len(token) // 4)
    return token[:keep] + "\u2026"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each secret in ``text`` by ``[REDACTED]``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text
