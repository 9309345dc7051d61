"""Keep the secrets out of httpx's own log lines.

httpx logs every request at INFO as ``HTTP Request: POST <full URL> ...``
(encode/httpx#2760). This API puts the API token and the access token in the
query string and the document token in the path, so that line would leak all
three. A filter on the ``httpx`` logger rewrites the URL in each record
before any handler sees it: secret query values become ``[REDACTED]`` and a
document token in the path is shortened.
"""

from __future__ import annotations

import logging
import re

import httpx

from ._tokens import shorten

_SECRET_QUERY = re.compile(r"(?i)((?:^|[?&;])(?:token|access_token)=)[^&;#\s\"']*")
_DOCUMENT_PATH = re.compile(r"(/documents/(?:refresh/)?)([^/?#\s\"']+)")


def redact_url(text: str) -> str:
    """Return ``text`` with secret query values and document tokens in paths hidden."""
    text = _SECRET_QUERY.sub(r"\1[REDACTED]", text)
    return _DOCUMENT_PATH.sub(lambda m: m[1] + shorten(m[2]), text)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites URLs in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drop it."""
        if isinstance(record.msg, str) and ("token" in record.msg or "/documents/" in record.msg):
            record.msg = redact_url(record.msg)
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(
                redact_url(str(arg)) if isinstance(arg, httpx.URL | str) else arg for arg in args
            )
        return True


_FILTER = RedactingFilter()


def install_redaction() -> None:
    """Attach the filter to httpx's logger (once per process)."""
    logger = logging.getLogger("httpx")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
