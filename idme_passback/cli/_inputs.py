"""Reading the items of a bulk job: one token per line, or a CSV with a ``token`` column.

Two forms are accepted, told apart by the first row:

* a header naming the columns, one of them ``token`` (``size`` and
  ``filename`` are optional; other columns are ignored);
* no header: each row is ``token[,size[,filename]]`` (so a plain list of
  tokens, one per line, is the simplest case).

Blank rows and rows starting with ``#`` are skipped. Rows are read lazily in
batches, off the event loop, so a slow pipe never stalls the downloads and a
file of millions of rows is never held in memory.
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

__all__ = ["Row", "read_rows"]

_COLUMNS = ("token", "size", "filename")
# Bytes per read: large enough to amortise the thread hop, small enough to start at once.
_BATCH_HINT = 64 * 1024


@attrs.frozen(repr=False)
class Row:
    """One input row: its position among the items, the token, and the raw size and file name."""

    index: int
    token: str
    size: str | None = None
    filename: str | None = None

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


async def read_rows(stream: TextIO) -> AsyncGenerator[Row, None]:
    """Yield the rows of ``stream`` in order (see the module docstring for the format)."""
    positions: dict[str, int] = {name: i for i, name in enumerate(_COLUMNS)}
    first = True
    index = 0
    while True:
        # Abandoned on cancellation: a read blocked on a pipe must not hold up Ctrl+C.
        lines = await anyio.to_thread.run_sync(
            stream.readlines, _BATCH_HINT, abandon_on_cancel=True
        )
        if not lines:
            return
        for raw in csv.reader(lines):
            cells = [cell.strip() for cell in raw]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if first:
                first = False
                lowered = [cell.lower() for cell in cells]
                if "token" in lowered:
                    positions = {name: lowered.index(name) for name in _COLUMNS if name in lowered}
                    continue
            yield Row(
                index,
                _cell(cells, positions.get("token")) or "",
                _cell(cells, positions.get("size")),
                _cell(cells, positions.get("filename")),
            )
            index += 1
