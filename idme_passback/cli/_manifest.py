"""The manifest of a bulk download: one JSON line per item, and no secret in any of them.

Each record names its item by input position, by a shortened token (for a
human) and by the token's SHA-256 (for ``--resume``, which can then
recognise a token without the manifest ever holding one); the record of a
downloaded file also holds the file's SHA-256::

    {"index": 0, "token": "d9ec9c…", "token_sha256": "…", "size": "300x200",
     "status": "ok", "path": "/abs/out/000000-d9ec9c.jpg", "bytes": 48213,
     "error": null, "message": null, "sha256": "…"}

A resumed run appends to the manifest, after ``download-many`` has read it
back (``cli/_download.py``): an item counts as done when an ``ok`` record
has its input position, token digest and size, and the file it names is
still a regular file of the recorded ``bytes``. A complete file found where
the run would write it but missing from the manifest is recorded then
(``"recovered": true``) instead of fetched again. Every line is flushed as
it is written, so a crash loses at most the line being written, which the
next ``--resume`` drops.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .._tokens import digest, scrub, shorten
from ..bulk import FetchResult

__all__ = ["Manifest", "make_record", "token_digest"]


def token_digest(token: str) -> str:
    """Return the SHA-256 hex digest of ``token``."""
    return digest(token)


def make_record(
    index: int, result: FetchResult, size: str | None, path: Path | None
) -> dict[str, Any]:
    """Return the manifest record of one finished item."""
    error = result.error
    return {
        "index": index,
        "token": shorten(result.token),
        "token_sha256": token_digest(result.token),
        "size": size,
        "status": "ok" if error is None else "error",
        "path": None if path is None else str(path.resolve()),
        "bytes": result.bytes,
        "error": None if error is None else type(error).__name__,
        # The library's messages hold no secret; scrubbed again all the same, of the
        # item's token and of every secret the run handled (the API token, every
        # token read), in any form: a server may echo another item's token.
        "message": None if error is None else scrub(str(error), [result.token]),
    }


class Manifest:
    """An open manifest file, written one flushed JSON line per item, mode 0600."""

    def __init__(self, path: Path, *, append: bool) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        self.path = path
        self._file: IO[str] = os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line, every secret scrubbed from it, and flush it."""
        line = json.dumps(record, ensure_ascii=False)
        # The last line of defence: what reaches the disk holds no secret in any form.
        self._file.write(scrub(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> Manifest:
        """Return the manifest; leaving the block closes it."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the file."""
        self.close()
