"""Keep the secrets out of the HTTP stack's own log lines.

httpx logs every request at INFO as ``HTTP Request: POST <full URL> "HTTP/1.1
200 OK"`` (encode/httpx#2760), and httpcore logs each step at DEBUG, response
headers included. The URL carries the API token (and, in query mode, the
access token), the path a document token, and a hostile server may echo any
secret into its reason phrase or a header. A filter on each of those loggers
rewrites every record before any handler (or an error tracker's logging
hook) sees it: secret query values and credentials in headers become
``[REDACTED]``, a document token in a path is shortened, and every secret
the library holds is scrubbed in any form (see :func:`~._tokens.scrub`).

A filter on a logger sees only the records made on that very logger, not
those its children pass up, so each logger the stack logs on gets one.
"""

from __future__ import annotations

import logging
import re
import sys

from ._tokens import scrub, shorten

__all__ = [
    "RedactingFilter",
    "install_redaction",
    "redact",
    "redact_parameters",
    "redact_url",
]

#: Query (or form) parameters whose value is a secret, here or in the OAuth flow.
SECRET_PARAMETERS = (
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "code",
    "code_verifier",
    "client_secret",
)
_SECRET_QUERY = re.compile(
    r"(?i)((?:^|(?<=[?&;\s\"'(,]))(?:" + "|".join(SECRET_PARAMETERS) + r")=)[^&;#\s\"']*"
)
_DOCUMENT_PATH = re.compile(r"(/documents/(?:refresh/)?)([^/?#\s\"']+)")
_CREDENTIALS = re.compile(r"(?i)\b(bearer\s+)[^\s\"',)\]]{8,}|\b(basic\s+)[A-Za-z0-9+/=]{8,}")

#: The loggers httpx, httpcore and hpack (HTTP/2 headers) write to.
LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.connection_pool",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "hpack",
    "hpack.hpack",
    "hpack.table",
)


def redact_parameters(text: str) -> str:
    """Return ``text`` with the values of secret parameters and HTTP credentials hidden."""
    text = _SECRET_QUERY.sub(r"\1[REDACTED]", text)
    return _CREDENTIALS.sub(lambda m: (m[1] or m[2]) + "[REDACTED]", text)


def redact_url(text: str) -> str:
    """Return ``text`` with secret query values, credentials and document tokens hidden."""
    text = redact_parameters(text)
    return _DOCUMENT_PATH.sub(lambda m: m[1] + shorten(m[2]), text)


def redact(text: str) -> str:
    """Return ``text`` with URLs redacted and every secret the library holds scrubbed."""
    return scrub(redact_url(text))


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's text; it never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place: its message is formatted once, then cleaned."""
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: its args must not ride on unredacted
            text = str(record.msg)
        record.msg = redact(text)
        record.args = ()
        return True


_FILTER = RedactingFilter()


def install_redaction() -> None:
    """Attach the filter to every logger of the HTTP stack (once per process)."""
    names = set(LOGGERS)
    # Any sub-logger a newer release added and has already created.
    names.update(
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".")[0] in ("httpx", "httpcore", "hpack")
    )
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    if "sentry_sdk" in sys.modules:
        from ._sentry import watch  # noqa: PLC0415 - only when the application uses Sentry

        watch()
