"""What every command gets: the three standard streams, an optional transport, the secrets."""

from __future__ import annotations

from typing import TextIO

import attrs
import httpx

from .._tokens import remember, scrub

__all__ = ["Context"]


@attrs.define
class Context:
    """The streams a command reads and writes, and what it must never print.

    ``transport`` points the commands at something other than the network
    (tests pass ``httpx.ASGITransport(app=FakePassbackServer())``).
    ``secrets`` collects every secret read, so that any message printed can
    be scrubbed of them as a last line of defence; the repr never shows them.
    """

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    transport: httpx.AsyncBaseTransport | None = None
    # Never in the repr: only how many there are.
    secrets: list[str] = attrs.field(factory=list, repr=lambda secrets: f"<{len(secrets)} hidden>")

    def out(self, line: str = "") -> None:
        """Write one line of results to stdout."""
        self.stdout.write(line + "\n")
        self.stdout.flush()

    def note(self, line: str) -> None:
        """Write one line of commentary (progress, warnings) to stderr."""
        self.stderr.write(self.safe(line) + "\n")
        self.stderr.flush()

    def safe(self, text: str) -> str:
        """Return ``text`` with every secret this run has read replaced by ``[REDACTED]``.

        Every form is hidden (verbatim, percent-encoded, base64), and so is
        every secret the library has handled in this process (each token the
        run passed to it, read from a file, stdin or the environment).
        """
        return scrub(text, self.secrets)

    def keep_secret(self, secret: str) -> str:
        """Remember ``secret`` so no message (and no manifest line) can print it; return it."""
        self.secrets.append(secret)
        remember(secret)
        return secret
