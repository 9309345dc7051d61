"""The client's settings in one place: defaults, environments, endpoints, the base URL."""

from __future__ import annotations

import enum
import ipaddress
import math

import attrs
import httpx

from .errors import ConfigurationError

#: The documented base URLs.
ENVIRONMENTS: dict[str, str] = {
    "sandbox": "https://api.idmelabs.com/",
    "production": "https://api.id.me/",
}
#: Per attempt: 10 s to connect, 30 s between bytes read or written.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Seconds one call may take in all: waiting on the limiter, attempts and backoff.
DEFAULT_DEADLINE = 300.0


class UseClientDefault(enum.Enum):
    """The type of :data:`CLIENT_DEFAULT`: "use what the client was built with".

    A sentinel, so that ``None`` can mean "none" (no timeout, no deadline).
    """

    CLIENT_DEFAULT = enum.auto()


#: Per-call ``timeout=`` / ``deadline=`` default: the client's own setting.
CLIENT_DEFAULT = UseClientDefault.CLIENT_DEFAULT


@attrs.frozen
class Endpoint:
    """One endpoint of the API, as the request path needs to know it."""

    #: The name used in messages and logs.
    name: str
    #: The path under the base URL (document and refresh calls add a token).
    path: str
    #: Whether a retry is safe once the request may have reached the server.
    retry_after_send: bool
    #: Whether each request waits on the per-document rate limiter.
    rate_limited: bool


#: ``GET attributes.json``: the access token is single-use, so never resent once it may have left.
ATTRIBUTES = Endpoint("attributes", "api/public/v3/attributes.json", False, False)
#: ``POST documents/{token}``: two requests a minute per document.
DOCUMENT = Endpoint("document", "api/public/v3/documents/", True, True)
#: ``POST documents/refresh/{token}``: not rate limited.
REFRESH = Endpoint("refresh", "api/public/v3/documents/refresh/", True, False)


def check_retries(max_retries: object) -> int:
    """Return ``max_retries`` if it is an int >= 0.

    Raises:
        ConfigurationError: otherwise.
    """
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError("max_retries must be an int >= 0")
    return max_retries


def check_deadline(seconds: object) -> float | None:
    """Return a deadline in seconds (``None``: none) if it is positive and finite.

    Raises:
        ConfigurationError: for zero, a negative number, NaN, infinity or a non-number.
    """
    if seconds is None:
        return None
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise ConfigurationError(
            f"deadline must be a positive, finite number of seconds or None, got {seconds!r}"
        )
    return float(seconds)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_base_url(
    environment: str,
    base_url: str | httpx.URL | None,
    *,
    in_process: bool,
    allow_insecure_http: bool,
) -> httpx.URL:
    """Return the base URL requests go to, ending in ``/``.

    Raises:
        ConfigurationError: an unknown environment, a URL that is not absolute
            http(s), one with a query or fragment, or plain http to a remote
            host (it would carry the API token in clear text).
    """
    if base_url is None:
        if environment not in ENVIRONMENTS:
            raise ConfigurationError(
                f"environment must be one of {sorted(ENVIRONMENTS)}, got {environment!r}"
            )
        return httpx.URL(ENVIRONMENTS[environment])
    text = str(base_url)
    url = httpx.URL(text)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError("base_url must be an absolute http:// or https:// URL")
    # (An empty query or fragment, a bare "?" or "#", is falsy in httpx's URL.)
    if url.query or url.fragment or "?" in text or "#" in text:
        raise ConfigurationError("base_url must not carry a query or fragment")
    if (
        url.scheme == "http"
        and not allow_insecure_http
        and not in_process
        and not _is_loopback(url.host)
    ):
        raise ConfigurationError(
            "refusing plain http:// to a non-loopback host: the API token would travel "
            "in clear text; use https://, or pass allow_insecure_http=True"
        )
    if not url.raw_path.endswith(b"/"):
        url = url.copy_with(raw_path=url.raw_path + b"/")
    return url
