"""Writing an image to disk so that it is either whole and in place, or absent.

Every operation goes through a descriptor of the folder, opened once before
any request (``O_DIRECTORY | O_NOFOLLOW``, then ``dir_fd=`` for each call,
by :class:`~idme_passback._dirfd.OpenFolder`, the base of :class:`Folder`):
swapping the folder's path for a symlink between the checks and the write
cannot move the file elsewhere.

The bytes go into a temporary file beside the target, named after it
(``.front.jpg.idme-part``), mode 0600, created exclusively and held under an
``flock`` for as long as it is written. It is moved into place only once the
body is complete, and removed on any failure. A process killed outright
leaves its temporary file behind, but not its lock: the next write of the
same file, and every bulk job at its start (``sweep``), removes temporary
files that are the client's (the name, a regular file, this user's) and
that no live writer holds.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import AsyncGenerator
from pathlib import Path
from types import TracebackType

import anyio.to_thread
import attrs

from ._dirfd import (
    DIR_FD,
    O_CLOEXEC,
    O_NOFOLLOW,
    PART_OVERHEAD,
    PART_SUFFIX,
    TEMP_PREFIX,
    WRITING,
    OpenFolder,
    is_part_name,
    part_name,
    try_lock,
)
from .errors import (
    FileWriteError,
    FolderNotFoundError,
    FolderNotWritableError,
    InvalidFilenameError,
    TargetExistsError,
    TargetIsAFolderError,
)

__all__ = [
    "PART_SUFFIX",
    "TEMP_PREFIX",
    "Folder",
    "Target",
    "Written",
    "check_target",
    "is_part_name",
]

_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


@attrs.frozen
class Written:
    """What :meth:`Folder.write` put on disk."""

    bytes: int
    sha256: str


class Folder(OpenFolder):
    """A folder opened for writing images; use as a context manager, or :meth:`close`.

    Raises (from :meth:`open`):
        FolderNotFoundError: no such folder, or not a folder.
        FolderNotWritableError: the folder cannot be opened.
    """

    __slots__ = ("name_max",)

    def __init__(self, path: Path, fd: int | None, name_max: int) -> None:
        super().__init__(path, fd)
        #: The longest file name (in bytes) the file system allows.
        self.name_max = name_max

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Folder:
        """Open the folder ``path`` (symlinks in it are followed once, here)."""
        folder = Path(path)
        shown = str(folder)
        if not DIR_FD:  # pragma: no cover - Windows: paths, checked as well as they can be
            if not folder.is_dir():
                raise FolderNotFoundError(f"the folder {shown!r} does not exist")
            return cls(folder, None, 255)
        flags = os.O_RDONLY | os.O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
        try:
            # Resolved first, so a folder reached through a symlink of the caller's
            # works; O_NOFOLLOW then refuses one swapped in since.
            fd = os.open(os.path.realpath(folder), flags)
        except (FileNotFoundError, NotADirectoryError):
            raise FolderNotFoundError(f"the folder {shown!r} does not exist") from None
        except PermissionError:
            raise FolderNotWritableError(f"the folder {shown!r} cannot be opened") from None
        except OSError as exc:
            raise FolderNotFoundError(
                f"the folder {shown!r} cannot be opened ({exc.strerror or exc})"
            ) from None
        try:
            name_max = os.fpathconf(fd, "PC_NAME_MAX")
        except (OSError, ValueError):
            name_max = 255
        return cls(folder, fd, name_max)

    def close(self) -> None:
        """Close the folder's descriptor."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> Folder:
        """Return the folder; leaving the block closes it."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the folder."""
        self.close()

    def __repr__(self) -> str:
        return f"Folder({str(self.path)!r})"

    # -- checks, before any request --------------------------------------------

    def check_name(self, name: str) -> str:
        """Return ``name`` if it is a bare name this file system can hold beside its temporary.

        Raises:
            InvalidFilenameError: otherwise.
        """
        if not name or name in (".", "..") or "/" in name or "\x00" in name or os.sep in name:
            raise InvalidFilenameError(f"{name[:40]!r} is not a bare file name")
        if os.altsep is not None and os.altsep in name:
            raise InvalidFilenameError(f"{name[:40]!r} is not a bare file name")
        try:
            encoded = os.fsencode(name)
        except UnicodeError:
            raise InvalidFilenameError(
                f"the file name {name[:40]!r} cannot be encoded for this file system"
            ) from None
        if len(encoded) + PART_OVERHEAD > self.name_max:
            raise InvalidFilenameError(
                f"the file name {name[:40]!r}... is {len(encoded)} bytes; this file system "
                f"allows {self.name_max - PART_OVERHEAD} (its temporary file needs "
                f"{PART_OVERHEAD} more)"
            )
        if is_part_name(name):
            raise InvalidFilenameError(
                f"{name[:40]!r} is named like one of the client's temporary files"
            )
        return name

    def check_free(self, name: str, *, overwrite: bool) -> None:
        """Raise unless ``name`` can be written (a dangling symlink is not free).

        Where ``os.access`` answers (proved once per folder), a name it cannot
        look up for another reason (an I/O error) counts as free here: the
        write meets that error itself.

        Raises:
            TargetIsAFolderError: ``name`` is a folder.
            TargetExistsError: something is there and ``overwrite`` is false.
        """
        if self._known_free(name):
            return
        try:
            info = self._lstat(name)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._translate(exc, name) from None
        shown = str(self.path / name)
        if stat.S_ISDIR(info.st_mode):
            raise TargetIsAFolderError(f"{shown!r} is a folder, not a file path")
        if not overwrite:
            what = "a symlink" if stat.S_ISLNK(info.st_mode) else "a file"
            raise TargetExistsError(f"{shown!r} exists ({what}); pass overwrite=True to replace it")

    def check_unclaimed(self, name: str) -> None:
        """Raise if another live download is writing ``name``; remove a dead one's leftovers.

        Raises:
            TargetExistsError: a live writer holds the file's temporary file.
        """
        part = part_name(name)
        try:
            self._lstat(part)
        except OSError:
            return
        if not self._remove_if_stale(part):
            raise TargetExistsError(
                f"{str(self.path / name)!r} is being written by another download"
            )

    def check_writable(self) -> None:
        """Prove the folder takes new files, by making (and removing) one.

        Raises:
            FolderNotWritableError: it does not.
        """
        probe = part_name(f"probe-{os.getpid()}-{secrets.token_hex(6)}")
        try:
            fd = self._open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise FolderNotWritableError(
                f"the folder {str(self.path)!r} does not take new files "
                f"({exc.strerror or type(exc).__name__})"
            ) from None
        os.close(fd)
        with contextlib.suppress(OSError):
            self._unlink(probe)

    # -- writing ---------------------------------------------------------------

    async def write(
        self,
        name: str,
        chunks: AsyncGenerator[bytes, None],
        *,
        overwrite: bool,
        fsync: bool = True,
    ) -> Written:
        """Stream ``chunks`` into the temporary file of ``name``, then move it into place.

        The temporary file is removed on any failure, cancellation included, so
        ``name`` either holds every byte or is untouched. Without ``overwrite``
        the final step is a hard link, which fails rather than replace a file
        that appeared meanwhile.

        Raises:
            TargetExistsError: the file appeared meanwhile, or another
                download of it is under way.
            FileWriteError: the disk refused the bytes (full, I/O error).
        """
        part = part_name(name)
        fd = self._create_part(part, name)
        info = os.fstat(fd)
        mine = (info.st_dev, info.st_ino)
        WRITING.add(mine)
        digest = hashlib.sha256()
        written = 0
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    self._write_all(fd, chunk, name)
                    digest.update(chunk)
                    written += len(chunk)
            if fsync:
                await anyio.to_thread.run_sync(self._fsync, fd, name)
            self._place(part, name, overwrite=overwrite)
        except BaseException:
            self._discard(part, fd)
            raise
        finally:
            WRITING.discard(mine)
            os.close(fd)
        if fsync and self._fd is not None:
            # The new name is durable too. In a worker thread, like the file's own
            # fsync: in the loop it stalled every other download (benchmark row 8);
            # shielded, so a call cancelled now still ends as it would have.
            with anyio.CancelScope(shield=True), contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(os.fsync, self._fd)
        return Written(written, digest.hexdigest())

    # -- internals ---------------------------------------------------------------

    def _create_part(self, part: str, name: str) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for _ in range(3):
            try:
                fd = self._open(part, flags, 0o600)
            except FileExistsError:
                if self._remove_if_stale(part):
                    continue
                raise TargetExistsError(
                    f"{str(self.path / name)!r} is being written by another download"
                ) from None
            except OSError as exc:
                raise self._translate(exc, name) from None
            # Locked at once; a sweeper that saw it in between may have removed it.
            if try_lock(fd) and self._is_at(part, fd):
                return fd
            os.close(fd)
        raise TargetExistsError(f"{str(self.path / name)!r} is being written by another download")

    def _write_all(self, fd: int, chunk: bytes, name: str) -> None:
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            raise self._write_failed(exc, name) from None

    def _fsync(self, fd: int, name: str) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            raise self._write_failed(exc, name) from None

    def _write_failed(self, exc: OSError, name: str) -> FileWriteError:
        error = FileWriteError(
            f"writing {str(self.path / name)!r} failed ({exc.strerror or exc}); "
            "nothing was left behind"
        )
        error.errno = exc.errno
        return error

    def _place(self, part: str, name: str, *, overwrite: bool) -> None:
        try:
            if overwrite:
                self._replace(part, name)
                return
            try:
                self._link(part, name)
            except FileExistsError:
                raise TargetExistsError(
                    f"{str(self.path / name)!r} appeared meanwhile; not replacing it"
                ) from None
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                # No hard links on this file system: check, then rename (a narrow race).
                with contextlib.suppress(FileNotFoundError):
                    self._lstat(name)
                    raise TargetExistsError(
                        f"{str(self.path / name)!r} appeared meanwhile; not replacing it"
                    ) from None
                self._replace(part, name)
                return
            self._unlink(part)
        except TargetExistsError:
            raise
        except OSError as exc:
            raise self._translate(exc, name) from None

    def _translate(self, exc: OSError, name: str) -> Exception:
        shown = str(self.path / name)
        if isinstance(exc, IsADirectoryError):
            return TargetIsAFolderError(f"{shown!r} is a folder, not a file path")
        if isinstance(exc, FileExistsError):
            return TargetExistsError(f"{shown!r} exists; pass overwrite=True to replace it")
        if exc.errno == errno.ENAMETOOLONG:
            return InvalidFilenameError(f"the file name {name[:40]!r}... is too long here")
        if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
            return FolderNotWritableError(
                f"the folder {str(self.path)!r} does not take new files ({exc.strerror})"
            )
        return self._write_failed(exc, name)


@attrs.frozen
class Target:
    """A checked place to write one file: an opened folder and a name in it."""

    folder: Folder
    name: str

    @property
    def path(self) -> Path:
        """The file's path, as the caller named its folder."""
        return self.folder.path / self.name


def check_target(path: str | os.PathLike[str], *, overwrite: bool) -> Target:
    """Check before any request that ``path`` can be written; open its folder.

    The caller closes ``target.folder`` once done.

    Raises:
        FolderNotFoundError: the folder does not exist.
        FolderNotWritableError: the folder does not take new files.
        TargetExistsError: the file (or a symlink, even a dangling one) exists
            and ``overwrite`` is false.
        TargetIsAFolderError: the path is a folder.
        InvalidFilenameError: a name the file system cannot hold.
    """
    target = Path(path)
    if not target.name or target.name in (".", ".."):
        raise TargetIsAFolderError(f"{str(target)!r} is a folder, not a file path")
    folder = Folder.open(target.parent)
    try:
        name = folder.check_name(target.name)
        folder.check_free(name, overwrite=overwrite)
        folder.check_unclaimed(name)
        folder.check_writable()
    except BaseException:
        folder.close()
        raise
    return Target(folder, name)
