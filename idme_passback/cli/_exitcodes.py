"""The command line's exit codes, and which error earns which."""

from __future__ import annotations

import enum

from ..errors import (
    AuthenticationError,
    ConfigurationError,
    DocumentTokensMissingError,
    FileWriteError,
    FolderNotFoundError,
    FolderNotWritableError,
    GoneError,
    InvalidFilenameError,
    InvalidSizeError,
    InvalidTokenError,
    NotFoundError,
    PassbackError,
    PermissionDeniedError,
    RateLimitError,
    ResponseError,
    ServerError,
    TargetExistsError,
    TargetIsAFolderError,
    TransportError,
)

__all__ = ["ExitCode", "UsageError", "epilog", "exit_code_for"]


class ExitCode(enum.IntEnum):
    """What the process tells its caller; each kind of failure has its own code."""

    OK = 0
    ERROR = 1
    USAGE = 2
    ITEMS_FAILED = 3
    AUTHENTICATION = 4
    NOT_FOUND = 5
    RATE_LIMITED = 6
    UNAVAILABLE = 7
    INTERRUPTED = 130


#: The table shown in ``--help`` (and kept in step with the package docstring by a test).
DESCRIPTIONS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.ERROR: "any other error",
    ExitCode.USAGE: "bad usage or input: options, sizes, tokens, missing secrets, files",
    ExitCode.ITEMS_FAILED: "download-many: some items failed (see the manifest)",
    ExitCode.AUTHENTICATION: "authentication: the API or access token was refused (401/403)",
    ExitCode.NOT_FOUND: "not found: unknown or expired document token (404/410), or no tokens",
    ExitCode.RATE_LIMITED: "rate limited (429) beyond what the retries could absorb",
    ExitCode.UNAVAILABLE: "transport or server failure: no connection, timeout, 5xx, bad body",
    ExitCode.INTERRUPTED: "interrupted (Ctrl+C)",
}


class UsageError(Exception):
    """The command line was used wrongly: a missing secret, a bad option value, a bad file."""


# Checked in order: the first match wins, so subclasses come before their bases.
_CODES: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (UsageError, ExitCode.USAGE),
    (ConfigurationError, ExitCode.USAGE),
    (InvalidSizeError, ExitCode.USAGE),
    (InvalidTokenError, ExitCode.USAGE),
    # A file that exists, a folder that does not or refuses files, a name too
    # long: the user can fix the arguments.
    (InvalidFilenameError, ExitCode.USAGE),
    (TargetExistsError, ExitCode.USAGE),
    (TargetIsAFolderError, ExitCode.USAGE),
    (FolderNotFoundError, ExitCode.USAGE),
    (FolderNotWritableError, ExitCode.USAGE),
    (FileWriteError, ExitCode.ERROR),
    (AuthenticationError, ExitCode.AUTHENTICATION),
    (PermissionDeniedError, ExitCode.AUTHENTICATION),
    (NotFoundError, ExitCode.NOT_FOUND),
    (GoneError, ExitCode.NOT_FOUND),
    (DocumentTokensMissingError, ExitCode.NOT_FOUND),
    (RateLimitError, ExitCode.RATE_LIMITED),
    (TransportError, ExitCode.UNAVAILABLE),
    (ServerError, ExitCode.UNAVAILABLE),
    (ResponseError, ExitCode.UNAVAILABLE),
    (PassbackError, ExitCode.ERROR),
    (FileExistsError, ExitCode.USAGE),
    (FileNotFoundError, ExitCode.USAGE),
    (IsADirectoryError, ExitCode.USAGE),
    (NotADirectoryError, ExitCode.USAGE),
    (PermissionError, ExitCode.USAGE),
    (UnicodeError, ExitCode.USAGE),
    (KeyboardInterrupt, ExitCode.INTERRUPTED),
)


def exit_code_for(exc: BaseException) -> ExitCode:
    """Return the exit code for an error that ended a command."""
    for kind, code in _CODES:
        if isinstance(exc, kind):
            return code
    return ExitCode.ERROR


def epilog() -> str:
    """Return the exit-code table for ``--help``."""
    lines = ["exit codes:"]
    lines += [f"  {int(code):<4}{text}" for code, text in DESCRIPTIONS.items()]
    return "\n".join(lines)
