"""Writing an image to disk so that it is either whole and in place, or absent."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncGenerator
from pathlib import Path

import anyio.to_thread

TEMP_PREFIX = ".idme-passback-"
TEMP_SUFFIX = ".part"


def check_target(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Check before any request that ``path`` can be written.

    Raises:
        FileNotFoundError: the folder does not exist.
        FileExistsError: the file exists and ``overwrite`` is false.
        IsADirectoryError: the path is a folder.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{str(target)!r} is a folder, not a file path")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"the folder {str(target.parent)!r} does not exist")
    if not overwrite and target.exists():
        raise FileExistsError(f"{str(target)!r} exists; pass overwrite=True to replace it")
    return target


async def write_atomically(
    target: Path, chunks: AsyncGenerator[bytes, None], *, overwrite: bool, fsync: bool = True
) -> int:
    """Stream ``chunks`` into a 0600 temporary file beside ``target``, then move it into place.

    The temporary file is removed on any failure, cancellation included, so
    ``target`` either holds every byte or is untouched. Without ``overwrite``
    the final step is a hard link, which fails rather than replace a file
    that appeared meanwhile.

    Returns:
        The number of bytes written.
    """
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=target.parent)
    temp = Path(temp_name)
    written = 0
    try:
        with open(fd, "wb") as file:  # noqa: ASYNC230 - wraps the open descriptor
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    file.write(chunk)
                    written += len(chunk)
            file.flush()
            if fsync:
                await anyio.to_thread.run_sync(os.fsync, file.fileno())
        if overwrite:
            os.replace(temp, target)
        else:
            _move_without_replacing(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()  # noqa: ASYNC240 - one metadata call; must run even when cancelled
        raise
    return written


def _move_without_replacing(temp: Path, target: Path) -> None:
    try:
        os.link(temp, target)
    except FileExistsError:
        raise FileExistsError(f"{str(target)!r} appeared meanwhile; not replacing it") from None
    except OSError:
        # No hard links on this file system: check, then rename (a narrow race).
        if target.exists():
            raise FileExistsError(f"{str(target)!r} appeared meanwhile; not replacing it") from None
        os.replace(temp, target)
    else:
        temp.unlink()
