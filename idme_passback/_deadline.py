"""One call's deadline: a clock and an instant, asked by every wait of the call."""

from __future__ import annotations

import math

import attrs
import httpx

from .clock import Clock
from .errors import DeadlineExceededError

#: What an attempt's timeout may be: seconds, an httpx.Timeout, or none.
Timeout = float | httpx.Timeout | None


@attrs.frozen
class Deadline:
    """When a call must be over, on the clock its waits are measured on.

    Made once per call (:meth:`after`), then asked by the limiter wait, each
    attempt's timeouts, each body chunk and each backoff.
    """

    clock: Clock = attrs.field(repr=False)
    #: The instant on ``clock``; ``inf`` for no deadline.
    at: float
    #: The seconds the caller allowed (for messages); ``None`` for no deadline.
    seconds: float | None

    @classmethod
    def after(cls, clock: Clock, seconds: float | None) -> Deadline:
        """The deadline ``seconds`` from now (``None``: never)."""
        if seconds is None:
            return cls(clock, math.inf, None)
        return cls(clock, clock.now() + seconds, seconds)

    def remaining(self) -> float:
        """Seconds left (``inf`` for no deadline, never below 0)."""
        if self.at == math.inf:
            return math.inf
        return max(self.at - self.clock.now(), 0.0)

    def wait_allowed(self) -> float | None:
        """Seconds left as a limiter timeout: ``None`` for no deadline."""
        return None if self.at == math.inf else self.remaining()

    def cap(self, timeout: Timeout) -> Timeout:
        """``timeout``, shortened so that no single wait of it outlasts the deadline."""
        left = self.remaining()
        if left == math.inf or _longest(timeout) <= left:
            return timeout
        return httpx.Timeout(max(left, 0.001))

    def check(self, doing: str, *, sent: bool) -> None:
        """Raise if the deadline has passed.

        Raises:
            DeadlineExceededError: naming what the call was ``doing``.
        """
        if self.at != math.inf and self.clock.now() >= self.at:
            raise DeadlineExceededError(
                f"the call's deadline of {self.seconds:g} s passed {doing}", sent=sent
            )


def _longest(timeout: Timeout) -> float:
    """The longest single wait a timeout setting allows (``inf`` for none)."""
    if not isinstance(timeout, httpx.Timeout):
        return math.inf if timeout is None else float(timeout)
    phases = (timeout.connect, timeout.read, timeout.write, timeout.pool)
    return max(math.inf if phase is None else phase for phase in phases)
