"""The library's own telemetry: one OpenTelemetry span per public call, and metrics.

Safe by construction: a span or a metric holds the endpoint, the status, the
attempts, the time spent waiting on the rate limiter, the bytes received and
a document's SHA-256 digest; never a token, a URL, a header or the server's
words. Used only when ``opentelemetry-api`` is installed (the ``otel``
extra) and imported lazily, on the first call.

The generic httpx instrumentation (``HTTPXClientInstrumentor``, or
``opentelemetry-instrument``) would record every request's full URL, and
this API carries the API token (and, in query mode, the access token) in it.
So the library's own requests run with HTTP instrumentation suppressed
(OpenTelemetry's suppression context, the one instrumentations honour to
avoid double spans), and this span stands in for them.

Spans (kind CLIENT): ``idme_passback.get_attributes``,
``idme_passback.get_document``, ``idme_passback.download_document``,
``idme_passback.refresh_document_token``, and ``idme_passback.bulk_document``
for each item of ``fetch_many`` / ``download_many``.

Metrics (meter ``idme_passback``):

=====================================  ==============  ========================================
``idme_passback.requests``             counter         HTTP requests, by endpoint and outcome
``idme_passback.rate_limited``         counter         429 answers, by endpoint
``idme_passback.retries``              counter         retries, by endpoint
``idme_passback.limiter.wait``         histogram (s)   time a document call waited for a permit
``idme_passback.limiter.queue_depth``  up-down count   document calls waiting for a permit now
=====================================  ==============  ========================================
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._tokens import digest, scrub
from ._version import __version__
from .errors import PassbackError, TransportError

if TYPE_CHECKING:
    from ._config import Endpoint
    from .clock import Clock

__all__ = ["Call", "answered", "call", "failed", "received", "suppress_http", "timing"]

T = TypeVar("T")
_PREFIX = "idme_passback."


@attrs.define
class Call:
    """What one public call did, filled in as it goes."""

    name: str
    endpoint: str
    attempts: int = 0
    status: int | None = None
    limiter_wait: float = 0.0
    bytes: int = 0


_CURRENT: ContextVar[Call | None] = ContextVar("idme_passback_call", default=None)


class _OTel:
    """The OpenTelemetry API, its tracer and the library's instruments."""

    def __init__(self) -> None:
        from opentelemetry import context, metrics, trace  # noqa: PLC0415 - optional extra

        self.context = context
        self.trace = trace
        # Private in name, but it is the key every HTTP instrumentation checks.
        self.suppress_key: str | None = getattr(context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None)
        self.tracer = trace.get_tracer("idme_passback", __version__)
        meter = metrics.get_meter("idme_passback", __version__)
        self.requests = meter.create_counter(
            _PREFIX + "requests", unit="{request}", description="HTTP requests sent, by outcome"
        )
        self.rate_limited = meter.create_counter(
            _PREFIX + "rate_limited", unit="{response}", description="429 answers"
        )
        self.retries = meter.create_counter(
            _PREFIX + "retries", unit="{retry}", description="retried attempts"
        )
        self.limiter_wait = meter.create_histogram(
            _PREFIX + "limiter.wait", unit="s", description="time waited for a rate-limit permit"
        )
        self.queue_depth = meter.create_up_down_counter(
            _PREFIX + "limiter.queue_depth",
            unit="{call}",
            description="document calls waiting for a rate-limit permit",
        )


_LOADED: list[_OTel | None] = []


def _otel() -> _OTel | None:
    if not _LOADED:
        try:
            _LOADED.append(_OTel())
        except ImportError:
            _LOADED.append(None)
    return _LOADED[0]


def _watch_sentry() -> None:
    # Cheap when Sentry is absent: the module is imported only if the application did.
    if "sentry_sdk" in sys.modules:
        from ._sentry import watch  # noqa: PLC0415 - only when Sentry is in use

        watch()


@contextlib.contextmanager
def call(
    name: str, endpoint: Endpoint, *, document: str | None = None, server: str | None = None
) -> Iterator[Call]:
    """Run one public call inside its span, with HTTP instrumentation suppressed.

    ``document``: the document token, recorded only as its digest.
    """
    _watch_sentry()
    record = Call(name, endpoint.name)
    reset = _CURRENT.set(record)
    otel = _otel()
    if otel is None:
        try:
            yield record
        finally:
            _CURRENT.reset(reset)
        return
    attributes: dict[str, Any] = {_PREFIX + "endpoint": endpoint.name}
    if server:
        attributes["server.address"] = server
    if document is not None:
        attributes[_PREFIX + "document.digest"] = digest(document)
    span = otel.tracer.start_span(
        _PREFIX + name, kind=otel.trace.SpanKind.CLIENT, attributes=attributes
    )
    context = otel.trace.set_span_in_context(span)
    if otel.suppress_key is not None:
        context = otel.context.set_value(otel.suppress_key, True, context)
    token = otel.context.attach(context)
    try:
        yield record
    except BaseException as exc:
        _failed_call(otel, span, exc)
        raise
    finally:
        otel.context.detach(token)
        _CURRENT.reset(reset)
        _finish(otel, span, record)


@contextlib.contextmanager
def suppress_http() -> Iterator[None]:
    """Run a block with generic HTTP instrumentation suppressed, and no span of our own.

    For requests whose errors may quote secrets (the OAuth token endpoint's):
    a generic span would record the exception's message.
    """
    otel = _otel()
    if otel is None or otel.suppress_key is None:
        yield
        return
    token = otel.context.attach(otel.context.set_value(otel.suppress_key, True))
    try:
        yield
    finally:
        otel.context.detach(token)


def _failed_call(otel: _OTel, span: Any, exc: BaseException) -> None:
    name = type(exc).__name__
    span.set_attribute("error.type", name)
    if isinstance(exc, Exception):
        span.set_status(otel.trace.Status(otel.trace.StatusCode.ERROR, name))
    event: dict[str, str] = {"exception.type": name}
    if isinstance(exc, PassbackError):
        # The library's own messages hold no secret; scrubbed again all the same.
        event["exception.message"] = scrub(str(exc))
    span.add_event("exception", event)


def _finish(otel: _OTel, span: Any, record: Call) -> None:
    attributes: dict[str, Any] = {
        _PREFIX + "attempts": record.attempts,
        _PREFIX + "limiter.wait": record.limiter_wait,
        _PREFIX + "bytes": record.bytes,
    }
    if record.status is not None:
        attributes["http.response.status_code"] = record.status
    span.set_attributes(attributes)
    span.end()
    if record.attempts > 1:
        otel.retries.add(record.attempts - 1, {_PREFIX + "endpoint": record.endpoint})


def _outcome(status: int) -> str:
    if status == 200:
        return "ok"
    if status == 429:
        return "rate_limited"
    if 400 <= status < 500:
        return "client_error"
    if status >= 500:
        return "server_error"
    return "unexpected_status"


def answered(endpoint: Endpoint, status: int) -> None:
    """Count one request that got an answer (its headers arrived)."""
    record = _CURRENT.get()
    if record is not None:
        record.attempts += 1
        record.status = status
    otel = _otel()
    if otel is None:
        return
    labels = {_PREFIX + "endpoint": endpoint.name, _PREFIX + "outcome": _outcome(status)}
    otel.requests.add(1, {**labels, "http.response.status_code": status})
    if status == 429:
        otel.rate_limited.add(1, {_PREFIX + "endpoint": endpoint.name})


def failed(endpoint: Endpoint, error: TransportError) -> None:
    """Count one request that got no answer (refused, dropped, timed out)."""
    record = _CURRENT.get()
    if record is not None:
        record.attempts += 1
    otel = _otel()
    if otel is None:
        return
    outcome = "timeout" if "Timeout" in type(error).__name__ else "connection_error"
    otel.requests.add(1, {_PREFIX + "endpoint": endpoint.name, _PREFIX + "outcome": outcome})


def received(count: int) -> None:
    """Add ``count`` body bytes to the current call."""
    record = _CURRENT.get()
    if record is not None:
        record.bytes += count


def timing(
    enter: Callable[..., AbstractAsyncContextManager[T]], clock: Clock
) -> Callable[..., AbstractAsyncContextManager[T]]:
    """Wrap a permit source (the limiter's ``acquire`` or a bulk gate) to time its waits."""

    def timed(token: str, *, timeout: float | None) -> AbstractAsyncContextManager[T]:
        return _Timed(enter(token, timeout=timeout), clock)

    return timed


class _Timed(AbstractAsyncContextManager[T]):
    """Enters a permit, counting the caller among the waiters and timing the wait."""

    __slots__ = ("_clock", "_permit")

    def __init__(self, permit: AbstractAsyncContextManager[T], clock: Clock) -> None:
        self._permit = permit
        self._clock = clock

    async def __aenter__(self) -> T:
        otel = _otel()
        start = self._clock.now()
        if otel is not None:
            otel.queue_depth.add(1)
        try:
            return await self._permit.__aenter__()
        finally:
            waited = max(0.0, self._clock.now() - start)
            if otel is not None:
                otel.queue_depth.add(-1)
                otel.limiter_wait.record(waited)
            record = _CURRENT.get()
            if record is not None:
                record.limiter_wait += waited

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._permit.__aexit__(exc_type, exc, tb)
