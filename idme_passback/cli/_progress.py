"""The progress display of a bulk download: a redrawn bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from ..bulk import Progress

__all__ = ["ProgressLine", "format_bytes"]

_BAR_WIDTH = 24
# A terminal redraw costs a write; more than ten a second shows nothing more.
_REDRAW_INTERVAL = 0.1


def format_bytes(count: int) -> str:
    """Return ``count`` bytes in decimal units: ``950 B``, ``12.3 kB``, ``4.5 MB``."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


class ProgressLine:
    """An ``on_progress`` hook for :meth:`PassbackClient.download_many`.

    On a terminal it redraws one line in place (``\\r``); in a log or a pipe
    it writes a plain line every ``every`` items or every ``interval``
    seconds, whichever comes first, so a long job leaves a readable trail.
    Call :meth:`finish` once at the end.

    Example::

        progress = ProgressLine(sys.stderr)
        async with client.download_many(tokens, "out/", on_progress=progress) as results:
            async for result in results:
                ...
        progress.finish()
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        every: int = 100,
        interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._every = every
        self._interval = interval
        self._clock = clock
        self._start = clock()
        self._last: Progress | None = None
        self._shown: Progress | None = None
        self._shown_at = self._start

    def __call__(self, progress: Progress) -> None:
        """Record ``progress`` and show it if it is time to."""
        self._last = progress
        now = self._clock()
        if self._tty:
            complete = progress.total is not None and progress.done >= progress.total
            if complete or now - self._shown_at >= _REDRAW_INTERVAL:
                self._show(progress, now)
            return
        since = progress.done - (self._shown.done if self._shown else 0)
        if since >= self._every or now - self._shown_at >= self._interval:
            self._show(progress, now)

    def finish(self) -> None:
        """Show the final state (if not shown yet) and end the terminal line."""
        if self._last is not None and self._last != self._shown:
            self._show(self._last, self._clock())
        if self._tty and self._shown is not None:
            self._stream.write("\n")
            self._stream.flush()

    def render(self, progress: Progress, now: float) -> str:
        """Return the text of one progress line, without line ending."""
        elapsed = max(now - self._start, 1e-9)
        total = "?" if progress.total is None else str(progress.total)
        text = (
            f"{progress.done}/{total} done, {progress.failed} failed, "
            f"{format_bytes(progress.bytes)}, {progress.done / elapsed:.1f}/s"
        )
        if self._tty and progress.total:
            filled = min(_BAR_WIDTH, _BAR_WIDTH * progress.done // progress.total)
            text = "[" + "#" * filled + "-" * (_BAR_WIDTH - filled) + "] " + text
        return text

    def _show(self, progress: Progress, now: float) -> None:
        text = self.render(progress, now)
        if self._tty:
            # Carriage return, the line, then erase whatever a longer old line left.
            self._stream.write("\r" + text + "\x1b[K")
        else:
            self._stream.write("progress: " + text + "\n")
        self._stream.flush()
        self._shown = progress
        self._shown_at = now
