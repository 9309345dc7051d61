"""Retry policy: which failures are worth another try, and how long to wait first."""

from __future__ import annotations

import email.utils
import math
import random
import time

import attrs

__all__ = ["RetryPolicy", "parse_retry_after"]

#: Statuses below 500 that a document or refresh call retries; every 5xx is retried too.
RETRYABLE_STATUSES = frozenset({408, 429})


def retryable_status(status: int) -> bool:
    """Whether a document or refresh call retries an answer with ``status``."""
    return status >= 500 or status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for, or ``None`` if absent or unreadable.

    Both forms are read: delta-seconds (``"30"``) and an HTTP date, counted
    from ``now`` (wall-clock seconds; the current time by default). A date in
    the past gives ``0.0``.
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    reference = time.time() if now is None else now
    return max(0.0, when.timestamp() - reference)


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
