"""Finding a secret in captured text, in any form; capturing what Sentry and OpenTelemetry send.

The forms are computed here independently of the library's scrubber, so a
test that uses them cannot pass because both share a mistake.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import traceback
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

#: Pieces of a secret this long or longer count as a leak (messages show six characters).
PIECE = 12


def encodings(secret: str) -> dict[str, str]:
    """Every form a secret may be found in: its name and its text."""
    raw = secret.encode()
    found = {
        "verbatim": secret,
        "percent": urllib.parse.quote(secret, safe=""),
        "percent-all": "".join(f"%{b:02X}" for b in raw),
        "percent-all-lower": "".join(f"%{b:02x}" for b in raw),
    }
    for pad in range(3):
        for name, encode in (("b64", base64.b64encode), ("b64url", base64.urlsafe_b64encode)):
            text = encode(b"\0" * pad + raw + b"\0\0").decode()
            # Only the characters that depend on the secret's bytes alone.
            start = -(-8 * pad // 6)
            end = 8 * (pad + len(raw)) // 6
            found[f"{name}@{pad}"] = text[start:end]
    return found


def leaks(text: str, secrets: Iterable[str]) -> list[str]:
    """Name each secret (by its first four characters) and form found in ``text``."""
    found = []
    for secret in set(secrets):
        forms = [name for name, form in encodings(secret).items() if form in text]
        if not forms and any(secret[i : i + PIECE] in text for i in range(len(secret) - PIECE + 1)):
            forms.append(f"a {PIECE}-character piece")
        found += [f"{secret[:4]}\u2026 as {name}" for name in forms]
    return sorted(found)


def assert_no_leak(text: str, secrets: Iterable[str], where: str) -> None:
    found = leaks(text, secrets)
    assert not found, f"secrets leaked into {where}: {found}"


def exposed(error: BaseException) -> str:
    """Everything a user could print of an error: str, repr, traceback, chain."""
    parts = []
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        parts.append(f"{current}\n{current!r}\n{vars(current)!r}")
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    parts.append("".join(traceback.format_exception(error)))
    return "\n".join(parts)


class Lines(logging.Handler):
    """Keeps every record of every logger, as a handler would print it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


_STACK = ("httpx", "httpcore", "hpack", "idme_passback")


@contextlib.contextmanager
def all_logs(*more: str) -> Iterator[Lines]:
    """Capture every log record at DEBUG (httpx, httpcore, the library and ``more``)."""
    handler = Lines()
    root = logging.getLogger()
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in (*_STACK, *more)]
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for logger, _ in saved:
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        for logger, level in saved:
            logger.setLevel(level)


# -- Sentry ---------------------------------------------------------------------


@contextlib.contextmanager
def sentry_capture(**options: Any) -> Iterator[list[str]]:
    """``sentry_sdk.init`` at its defaults, sending every envelope to a list instead.

    Yields the list; each item is an envelope as it would go on the wire.
    """
    import sentry_sdk  # noqa: PLC0415 - a test extra
    from sentry_sdk.transport import Transport  # noqa: PLC0415

    sent: list[str] = []

    class Capturing(Transport):
        def capture_envelope(self, envelope: Any) -> None:
            sent.append(envelope.serialize().decode("utf-8", "replace"))

    sentry_sdk.init(dsn="https://public@sentry.invalid/1", transport=Capturing, **options)
    # Breadcrumbs live on the scopes, from one test to the next: start afresh.
    sentry_sdk.get_isolation_scope().clear()
    sentry_sdk.get_current_scope().clear()
    try:
        yield sent
    finally:
        sentry_sdk.flush()
        sentry_sdk.get_client().close()
        sentry_sdk.get_global_scope().set_client(None)


def sentry_items(sent: list[str]) -> list[dict[str, Any]]:
    """The JSON items (events, transactions) of the captured envelopes."""
    items = []
    for envelope in sent:
        for line in envelope.splitlines()[1:]:
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict) and ("event_id" in item or "spans" in item):
                    items.append(item)
    return items


# -- OpenTelemetry ----------------------------------------------------------------

_OTEL: dict[str, Any] = {}


def otel() -> dict[str, Any]:
    """The process's OpenTelemetry providers, set once: in-memory span exporter, metric reader."""
    if not _OTEL:
        from opentelemetry import metrics, trace  # noqa: PLC0415 - a test extra
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
            InMemorySpanExporter,
        )

        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _OTEL.update(exporter=exporter, tracer_provider=tracer_provider, reader=reader)
    return _OTEL


@contextlib.contextmanager
def otel_capture() -> Iterator[dict[str, Any]]:
    """The generic httpx instrumentation on (as ``opentelemetry-instrument`` does), spans cleared.

    Yields the providers' dict; ``spans_text()`` and ``metrics_text()`` read it.
    """
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # noqa: PLC0415

    state = otel()
    state["exporter"].clear()
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=state["tracer_provider"])
    try:
        yield state
    finally:
        instrumentor.uninstrument()


def spans(state: dict[str, Any]) -> list[Any]:
    return list(state["exporter"].get_finished_spans())


def spans_text(state: dict[str, Any]) -> str:
    return "\n".join(span.to_json() for span in spans(state))


def metrics_text(state: dict[str, Any]) -> str:
    data = state["reader"].get_metrics_data()
    return "" if data is None else data.to_json()


def metric_points(state: dict[str, Any], name: str) -> list[Any]:
    data = state["reader"].get_metrics_data()
    points = []
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points
