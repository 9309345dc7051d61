"""Reading the items of a bulk job: one token per line, or a CSV with a ``token`` column.

Two forms are accepted, told apart by the first row:

* a header naming the columns, one of them ``token`` (``size`` and
  ``filename`` are optional; other columns are ignored);
* no header: each row is ``token[,size[,filename]]`` (so a plain list of
  tokens, one per line, is the simplest case).

Blank rows and rows starting with ``#`` are skipped. Each line is one row
(a token, a size and a file name never hold a line break). Rows are read
lazily in batches, off the event loop, so a slow pipe never stalls the
downloads and a file of millions of rows is never held in memory.

A row that cannot be read (longer than :data:`MAX_LINE` characters, not
UTF-8, not CSV) is a row with a ``problem``: it fails alone, and the rows
around it go on. A line is never read whole past :data:`MAX_LINE`.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncGenerator
from typing import TextIO

import anyio.to_thread
import attrs

from .._tokens import shorten
from ..bulk import DocumentRequest, ItemLike
from ..errors import InvalidSizeError
from ._exitcodes import UsageError

__all__ = ["MAX_LINE", "Row", "read_rows"]

_COLUMNS = ("token", "size", "filename")
#: The longest row read, in characters; a longer one fails alone, unread.
MAX_LINE = 64 * 1024
# Characters per batch: large enough to amortise the thread hop, small enough to start at once.
_BATCH_HINT = 64 * 1024


@attrs.frozen(repr=False)
class Row:
    """One input row: its position among the items, the token, and the raw size and file name.

    ``problem`` says why a row could not be read (its other fields are then empty).
    """

    index: int
    token: str
    size: str | None = None
    filename: str | None = None
    problem: str | None = None

    def item(self) -> ItemLike:
        """Return the item to hand to :meth:`PassbackClient.download_many`.

        Without a file name, the file is named after the row's place in the
        input (``000042-d9ec9c.jpg``), so a resumed run names it as a fresh
        one would. A malformed size is handed over raw, so the library
        rejects it as this item's own error (reported like any other) rather
        than ending the job.
        """
        stem = None
        if self.filename is None:
            stem = f"{self.index:06d}-{shorten(self.token).rstrip(chr(0x2026))}"
        try:
            return DocumentRequest(self.token, self.size, self.filename, stem)
        except InvalidSizeError:
            return (self.token, self.size)

    def __repr__(self) -> str:
        return f"Row(index={self.index}, token={shorten(self.token)!r}, size={self.size!r})"


def _cell(cells: list[str], position: int | None) -> str | None:
    if position is None or position >= len(cells):
        return None
    return cells[position] or None


#: A line too long to read: the marker that stands for it in a batch.
_TOO_LONG = object()


def _read_batch(stream: TextIO, line_number: int) -> list[str | object]:
    """Read the next lines (about :data:`_BATCH_HINT` characters), each within MAX_LINE."""
    lines: list[str | object] = []
    size = 0
    try:
        while size < _BATCH_HINT:
            line = stream.readline(MAX_LINE + 1)
            if not line:
                break
            if len(line) > MAX_LINE and not line.endswith("\n"):
                # Skip the rest of it, a bounded piece at a time.
                while (rest := stream.readline(MAX_LINE)) and not rest.endswith("\n"):
                    pass
                lines.append(_TOO_LONG)
            else:
                lines.append(line)
            size += len(line)
    except UnicodeDecodeError:
        raise UsageError(
            f"the input is not UTF-8 text (near line {line_number + len(lines) + 1})"
        ) from None
    return lines


def _parse(line: str) -> tuple[list[str] | None, str | None]:
    """A line's cells, or why it cannot be read."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return None, "the row is not UTF-8 text"
    try:
        [raw] = list(csv.reader([line])) or [[]]
    except (csv.Error, ValueError) as exc:
        return None, f"the row is not CSV ({exc})"
    return [cell.strip() for cell in raw], None


async def read_rows(stream: TextIO) -> AsyncGenerator[Row, None]:
    """Yield the rows of ``stream`` in order (see the module docstring for the format).

    Raises:
        UsageError: a stream that cannot be decoded at all (stdin that is not UTF-8).
    """
    positions: dict[str, int] = {name: i for i, name in enumerate(_COLUMNS)}
    first = True
    index = 0
    line_number = 0
    while True:
        # Abandoned on cancellation: a read blocked on a pipe must not hold up Ctrl+C.
        lines = await anyio.to_thread.run_sync(
            _read_batch, stream, line_number, abandon_on_cancel=True
        )
        if not lines:
            return
        for line in lines:
            line_number += 1
            if line is _TOO_LONG:
                problem: str | None = f"the row is longer than {MAX_LINE} characters"
                cells: list[str] | None = None
            else:
                assert isinstance(line, str)
                cells, problem = _parse(line)
            if cells is not None:
                if not any(cells) or cells[0].startswith("#"):
                    continue
                if first:
                    first = False
                    lowered = [cell.lower() for cell in cells]
                    if "token" in lowered:
                        positions = {
                            name: lowered.index(name) for name in _COLUMNS if name in lowered
                        }
                        continue
                yield Row(
                    index,
                    _cell(cells, positions.get("token")) or "",
                    _cell(cells, positions.get("size")),
                    _cell(cells, positions.get("filename")),
                )
            else:
                first = False
                yield Row(index, "", problem=f"line {line_number}: {problem}")
            index += 1
