"""Keep the secrets out of what Sentry sends, with Sentry at its defaults.

Registered by the library itself, once, the first time a client is made or
called while ``sentry_sdk`` is imported: one global event processor, which
Sentry runs on every error event and transaction before ``before_send``.
Nothing here imports Sentry unless the application already did.

What the processor does, and why:

* **The library's own stack frames lose their local variables.** Sentry
  sends every frame's locals by default (``include_local_variables``), and
  the library's frames hold the requests it builds (their repr shows the
  URL, with the API token), the tokens themselves and their tuples.
* **HTTP breadcrumbs and spans of the library's own requests are cleaned**
  (Sentry's httpx integration records each one's URL, query and reason
  phrase): the secret query values are redacted, a document token in the
  path shortened, and a reason phrase other than the standard one for the
  status (a hostile server can echo anything there) is filtered.
* **Every string of every event is scrubbed** of every secret the library
  holds, in any form (verbatim, percent-encoded, base64), and of the values
  of the secret query parameters (``token``, ``access_token``, ``code``...):
  what the caller's own frames, messages and breadcrumbs hold too.

If the processor itself fails, the event is dropped rather than sent
unscrubbed.
"""

from __future__ import annotations

import http
import logging
import threading
from collections.abc import Callable
from typing import Any

from ._redact import redact_parameters, redact_url
from ._tokens import scrub, scrub_truncated

__all__ = ["clean_event", "note_base_url", "watch"]

logger = logging.getLogger("idme_passback")

# Frames whose locals hold requests, URLs or tokens: the library's and the HTTP stack's.
_PRIVATE_MODULES = ("idme_passback", "httpx", "httpcore", "h11", "h2", "hpack")
# Paths only this API's requests have, whatever the base URL.
_API_PATHS = ("/api/public/v3/", "/oauth/token", "/oidc/.well-known/")
_FILTERED = "[Filtered]"

_lock = threading.Lock()
_installed: list[Callable[..., Any]] = []
_bases: set[str] = set()


def note_base_url(base_url: str) -> None:
    """Remember that the library sends requests under ``base_url``."""
    with _lock:
        _bases.add(base_url)


def watch() -> None:
    """Register the event processor with Sentry, once per process."""
    if _installed:
        return
    try:
        from sentry_sdk.scope import add_global_event_processor  # noqa: PLC0415
    except ImportError:  # not Sentry's Python SDK as we know it
        return
    with _lock:
        if _installed:
            return
        add_global_event_processor(_process)
        _installed.append(_process)


def _process(event: Any, hint: Any) -> Any:
    try:
        return clean_event(event)
    except Exception:  # fail closed: an event that may hold a secret is never sent
        logger.warning("dropped a Sentry event that could not be scrubbed")
        return None


def clean_event(event: dict[str, Any]) -> dict[str, Any]:
    """Return ``event`` (an error event or a transaction) with no secret left in it."""
    for frames in _frame_lists(event):
        for frame in frames:
            if isinstance(frame, dict) and _private(frame):
                frame.pop("vars", None)
    crumbs = event.get("breadcrumbs")
    values = crumbs.get("values") if isinstance(crumbs, dict) else crumbs
    for crumb in values if isinstance(values, list) else ():
        if isinstance(crumb, dict) and crumb.get("type") == "http":
            _clean_http(crumb, "data")
    spans = event.get("spans")
    for span in spans if isinstance(spans, list) else ():
        if isinstance(span, dict) and str(span.get("op", "")).startswith("http"):
            _clean_http(span, "data")
    cleaned = _scrub_all(event)
    assert isinstance(cleaned, dict)
    return cleaned


def _frame_lists(event: dict[str, Any]) -> list[list[Any]]:
    found = []
    for section in ("exception", "threads"):
        holder = event.get(section)
        values = holder.get("values") if isinstance(holder, dict) else None
        for value in values if isinstance(values, list) else ():
            stack = value.get("stacktrace") if isinstance(value, dict) else None
            frames = stack.get("frames") if isinstance(stack, dict) else None
            if isinstance(frames, list):
                found.append(frames)
    return found


def _private(frame: dict[str, Any]) -> bool:
    module = frame.get("module")
    if isinstance(module, str) and module.split(".")[0] in _PRIVATE_MODULES:
        return True
    path = frame.get("abs_path")
    return isinstance(path, str) and any(
        f"/{name}/" in path.replace("\\", "/") for name in _PRIVATE_MODULES
    )


def _ours(url: str) -> bool:
    with _lock:
        bases = tuple(_bases)
    return url.startswith(bases) or any(path in url for path in _API_PATHS)


def _clean_http(item: dict[str, Any], key: str) -> None:
    """Clean one HTTP breadcrumb or span of the library's own requests."""
    data = item.get(key)
    if not isinstance(data, dict):
        return
    url = data.get("url")
    description = item.get("description")
    target = url if isinstance(url, str) else description if isinstance(description, str) else ""
    if not _ours(target):
        return
    if isinstance(url, str):
        data["url"] = redact_url(url)
    if isinstance(description, str):
        item["description"] = redact_url(description)
    for name in ("http.query", "http.fragment"):
        value = data.get(name)
        if isinstance(value, str) and value:
            data[name] = redact_url(value)
    status = data.get("http.response.status_code", data.get("status_code"))
    reason = data.get("reason")
    if isinstance(reason, str) and reason != _standard_reason(status):
        data["reason"] = _FILTERED


def _standard_reason(status: object) -> str | None:
    try:
        return http.HTTPStatus(status).phrase  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None


def _scrub_all(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {
            (_scrub_text(k) if isinstance(k, str) else k): _scrub_all(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub_all(item) for item in value]
    if hasattr(value, "value") and hasattr(value, "metadata"):  # Sentry's AnnotatedValue
        value.value = _scrub_all(value.value)
    return value


def _scrub_text(text: str) -> str:
    if not text:
        return text
    cleaned = redact_parameters(text)
    # Sentry marks a string it cut short with "..."; a secret's start may end it.
    if cleaned.endswith("..."):
        return scrub_truncated(cleaned[:-3]) + "..."
    return scrub(cleaned)
