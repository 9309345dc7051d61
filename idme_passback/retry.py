"""Retrying: the policy (how long to wait, how often) and the loop that follows it."""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import attrs

from .errors import DeadlineExceededError, LimiterTimeoutError, PassbackError, RateLimitError

if TYPE_CHECKING:
    from ._config import Endpoint
    from ._deadline import Deadline

__all__ = ["MAX_RETRY_AFTER", "RetryPolicy", "parse_retry_after"]

T = TypeVar("T")
logger = logging.getLogger("idme_passback")

#: The longest wait a ``Retry-After`` is read as (a day): ``1e308`` must not overflow a timer.
MAX_RETRY_AFTER = 86_400.0


def _http_date(text: str) -> float | None:
    """The POSIX time of an HTTP date with a time zone, or ``None``."""
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    try:
        return when.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def parse_retry_after(
    value: str | None, *, now: float | None = None, date: str | None = None
) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for, or ``None`` if absent or unreadable.

    Both forms are read: delta-seconds (``"30"``) and an HTTP date. A date
    is counted from the answer's own ``Date`` header when ``date`` is given
    and readable (so a client whose clock is off still waits what the server
    meant), else from ``now`` (wall-clock seconds; the current time by
    default). A date in the past gives ``0.0``; any wait is capped at
    :data:`MAX_RETRY_AFTER`.
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if text.isascii() and text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)  # a thousand nines reads as inf: capped too
    try:
        seconds = float(text) if text.isascii() else None
    except ValueError:
        seconds = None
    if seconds is not None:
        return min(seconds, MAX_RETRY_AFTER) if math.isfinite(seconds) and seconds >= 0 else None
    when = _http_date(text)
    if when is None:
        return None
    reference = None if date is None else _http_date(date)
    if reference is None:
        reference = time.time() if now is None else now
    return min(max(0.0, when - reference), MAX_RETRY_AFTER)


@attrs.frozen
class RetryPolicy:
    """How a call retries.

    Attributes:
        max_retries: retries after the first attempt.
        backoff_initial: the first backoff's ceiling, in seconds.
        backoff_max: the largest backoff ceiling.
        retry_after_cap: a Retry-After longer than this is not waited out;
            the call raises :class:`~idme_passback.RateLimitError` instead.
        default_retry_after: the pause assumed after a 429 that names none.
    """

    max_retries: int = 2
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    retry_after_cap: float = 120.0
    default_retry_after: float | None = None

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1))
        return rng.uniform(0.0, ceiling)


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    endpoint: Endpoint,
    retryable: Callable[[Exception, Endpoint], bool],
    policy: RetryPolicy,
    max_retries: int,
    deadline: Deadline,
    rng: random.Random,
) -> T:
    """Run ``attempt`` until it succeeds, the retries run out, or the deadline passes.

    Raises:
        DeadlineExceededError: the deadline passed (waiting on the limiter,
            or before a retry could start).
        PassbackError: the last attempt's error, when it is not worth a retry.
    """
    retry = 0
    sent = False  # whether any attempt so far may have reached the server
    while True:
        try:
            return await attempt()
        except LimiterTimeoutError:
            # No rate-limit token can come in time: this attempt was never sent.
            raise DeadlineExceededError(
                f"the call's deadline of {deadline.seconds:g} s would pass before the "
                f"document's rate limit allows another request (after {retry} retries)",
                sent=sent,
            ) from None
        except PassbackError as exc:
            sent = sent or getattr(exc, "sent", True)
            retry += 1
            if retry > max_retries or not retryable(exc, endpoint):
                raise
            delay = policy.backoff(retry, rng)
            if isinstance(exc, RateLimitError):
                if (exc.retry_after or 0.0) > policy.retry_after_cap:
                    raise
                if endpoint.rate_limited:
                    delay = 0.0  # the limiter holds the document until Retry-After has passed
                elif exc.retry_after is not None:
                    delay = exc.retry_after
            if delay >= deadline.remaining():
                raise DeadlineExceededError(
                    f"the call's deadline of {deadline.seconds:g} s passed before retry "
                    f"{retry} (last failure: {type(exc).__name__})",
                    sent=sent,
                ) from exc
            logger.debug(
                "%s: retry %d of %d in %.2f s", type(exc).__name__, retry, max_retries, delay
            )
            if delay:
                await deadline.clock.sleep(delay)
