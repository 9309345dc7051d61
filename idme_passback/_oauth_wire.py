"""The OAuth and JWKS edge: settings checked, one request out, typed errors back.

It also holds the token endpoint's wire forms: the PKCE ``S256`` challenge,
HTTP Basic client credentials, and the answer's fields read and type-checked.

Kept apart and small so that it can meet the passback client's send path
later. Nothing is retried here (codes and access tokens are single-use),
redirects are never followed, bodies are read to a cap, and every outside
word is scrubbed of the secrets in play before an error keeps it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

import httpx

from ._config import ENVIRONMENTS
from ._http import transport_error
from ._telemetry import suppress_http
from ._tokens import scrub
from .errors import (
    APIStatusError,
    ConfigurationError,
    InvalidGrantError,
    InvalidTokenError,
    MalformedResponseError,
    OAuthError,
    RateLimitError,
    TransportError,
    status_error_class,
)
from .retry import parse_retry_after

__all__ = [
    "base_url",
    "basic_credentials",
    "json_object",
    "opaque",
    "optional_str",
    "pkce_challenge",
    "plausible",
    "redirect_uri",
    "scopes",
    "seconds",
    "send",
    "status_error",
    "words",
]

_MAX_BODY = 64 * 1024
_MAX_OPAQUE = 4096
_WORDS_CHARS = 200


def words(value: object, hidden: Iterable[str]) -> str | None:
    """Outside words (a redirect's or a server's), scrubbed, printable and short."""
    if not isinstance(value, str):
        return None
    text = "".join(c if c.isprintable() else " " for c in scrub(value, hidden))
    return " ".join(text.split())[:_WORDS_CHARS] or None


def plausible(value: object) -> TypeGuard[str]:
    """Whether ``value`` can be an opaque OAuth value: printable ASCII, no spaces, not absurd."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= _MAX_OPAQUE
        and all("!" <= c <= "~" for c in value)
    )


def opaque(value: object, kind: str) -> str:
    """Return ``value`` if it is a plausible code or token to send.

    Raises:
        InvalidTokenError: empty, not a string, too long, or holding whitespace,
            control or non-ASCII characters (the value itself is not echoed).
    """
    if not plausible(value):
        raise InvalidTokenError(
            f"the {kind} must be a non-empty string of printable ASCII without spaces, "
            f"at most {_MAX_OPAQUE} characters; refusing to send it"
        )
    return value


def base_url(environment: str, given: str | httpx.URL | None, insecure_ok: bool) -> str:
    """Return the base URL to use, ending in ``/``.

    Raises:
        ConfigurationError: an unknown environment, a URL that is not absolute
            http(s), or plain http to a non-loopback host without ``insecure_ok``.
    """
    if given is None:
        if environment not in ENVIRONMENTS:
            raise ConfigurationError(
                f"environment must be one of {sorted(ENVIRONMENTS)}, got {environment!r}"
            )
        return ENVIRONMENTS[environment]
    url = _url(str(given), "base_url")
    if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
        raise ConfigurationError("base_url must be an absolute http(s) URL without query")
    if url.scheme == "http" and not insecure_ok and not _is_loopback(url.host):
        raise ConfigurationError(
            "refusing plain http:// to a non-loopback host: the client secret and the "
            "codes would travel in clear text; use https://, or pass allow_insecure_http=True"
        )
    text = str(url)
    return text if text.endswith("/") else text + "/"


def redirect_uri(value: object) -> str:
    """Return ``value`` if it is a safe callback URL.

    Raises:
        ConfigurationError: not an absolute ``https://`` URL (``http://`` only on
            loopback), or one with a fragment.
    """
    if not isinstance(value, str) or not value:
        raise ConfigurationError("redirect_uri must be the callback URL registered with ID.me")
    url = _url(value, "redirect_uri")
    secure = url.scheme == "https" or (url.scheme == "http" and _is_loopback(url.host))
    if not secure or not url.host or url.fragment:
        raise ConfigurationError(
            "redirect_uri must be an absolute https:// URL (or http:// on loopback) "
            "without a fragment"
        )
    return value


def _url(text: str, option: str) -> httpx.URL:
    try:
        return httpx.URL(text)
    except httpx.InvalidURL:
        raise ConfigurationError(f"{option} is not a valid URL") from None


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "127.0.0.1", "::1", "[::1]") or host.endswith(".localhost")


def scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Return the scopes as a tuple.

    Raises:
        ConfigurationError: none, a bare string, or one with whitespace or empty.
    """
    if isinstance(scopes, str):
        raise ConfigurationError("scopes must be a list of strings, not one string")
    wanted = tuple(scopes)
    if not wanted:
        raise ConfigurationError("ask for at least one scope")
    for scope in wanted:
        if not isinstance(scope, str) or not scope or scope.split() != [scope]:
            raise ConfigurationError("each scope must be a non-empty string without whitespace")
    return wanted


async def send(
    http: httpx.AsyncClient, request: httpx.Request, hidden: tuple[str, ...], what: str
) -> tuple[httpx.Response, bytes]:
    """Send once, never following a redirect; return the response and its (capped) body.

    Raises:
        TransportError: the exchange failed, with no foreign exception attached.
    """
    failure: TransportError | None = None
    body = bytearray()
    try:
        # No generic HTTP span: an error of h11's may quote the code or a token.
        with suppress_http():
            response = await http.send(request, stream=True, follow_redirects=False)
            try:
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > _MAX_BODY:
                        break
            finally:
                await response.aclose()
    except httpx.HTTPError as exc:
        failure = translate(exc, hidden, what)
    if failure is not None:
        # Raised outside the handler, so no httpx error (and its request) rides along.
        raise failure
    return response, bytes(body[:_MAX_BODY])


def translate(exc: httpx.HTTPError, hidden: Iterable[str], what: str) -> TransportError:
    return transport_error(exc, what, words(str(exc), hidden) or "no detail")


def status_error(
    response: httpx.Response, body: bytes, hidden: tuple[str, ...], what: str
) -> APIStatusError:
    status = response.status_code
    excerpt = words(body.decode("utf-8", "replace"), hidden) or ""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    error = words(payload.get("error"), hidden) if isinstance(payload, dict) else None
    description = (
        words(payload.get("error_description"), hidden) if isinstance(payload, dict) else None
    )
    reason = words(response.reason_phrase, hidden) or ""
    message = f"the {what} was refused: {status} {reason}".rstrip()
    if error:
        message += f", {error}" + (f" ({description})" if description else "")
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimitError(
            message,
            body_excerpt=excerpt,
            error=error,
            error_description=description,
            retry_after=retry_after,
        )
    if error and 400 <= status < 500:
        cls: type[APIStatusError] = InvalidGrantError if error == "invalid_grant" else OAuthError
    else:
        cls = status_error_class(status)
    return cls(
        message,
        status_code=status,
        body_excerpt=excerpt,
        error=error,
        error_description=description,
    )


def json_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise MalformedResponseError(
            f"the {what} answered 200 with a body that is not a JSON object"
        )
    return value


def pkce_challenge(verifier: str) -> str:
    """The PKCE ``S256`` code challenge of ``verifier`` (RFC 7636, section 4.2)."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return digest.rstrip(b"=").decode("ascii")


def basic_credentials(client_id: str, secret: str) -> str:
    """The ``Authorization`` header value that sends the client's secret as HTTP Basic."""
    pair = f"{_form_encode(client_id)}:{_form_encode(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _form_encode(value: str) -> str:
    # RFC 6749, section 2.3.1: Basic credentials are form-encoded first.
    return str(httpx.QueryParams({"v": value}))[2:]


def optional_str(answer: Mapping[str, Any], name: str) -> str | None:
    """The token endpoint's string ``name``; ``None`` when absent, null or empty."""
    value = answer.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedResponseError(f"the token endpoint's {name!r} is not a string")
    return value


def seconds(answer: Mapping[str, Any], name: str) -> float | None:
    """The token endpoint's number of seconds ``name``; ``None`` when absent or null."""
    value = answer.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MalformedResponseError(f"the token endpoint's {name!r} is not a number") from None
