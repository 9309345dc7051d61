"""Writing an image to disk so that it is either whole and in place, or absent.

Every operation goes through a descriptor of the folder, opened once before
any request (``O_DIRECTORY | O_NOFOLLOW``, then ``dir_fd=`` for each call):
swapping the folder's path for a symlink between the checks and the write
cannot move the file elsewhere.

The bytes go into a temporary file beside the target, named after it
(``.front.jpg.idme-part``), mode 0600, created exclusively and held under an
``flock`` for as long as it is written. It is moved into place only once the
body is complete, and removed on any failure. A process killed outright
leaves its temporary file behind, but not its lock: the next write of the
same file, and every bulk job at its start, removes temporary files that
are the client's (the name, a regular file, this user's) and that no live
writer holds.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from types import TracebackType

import anyio.to_thread
import attrs

from .errors import (
    FileWriteError,
    FolderNotFoundError,
    FolderNotWritableError,
    InvalidFilenameError,
    TargetExistsError,
    TargetIsAFolderError,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locks, so no sweeping either
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "PART_SUFFIX",
    "TEMP_PREFIX",
    "Folder",
    "Target",
    "Written",
    "check_target",
    "is_part_name",
]

logger = logging.getLogger("idme_passback")

#: How a temporary file's name ends (it starts with a dot and the target's name).
PART_SUFFIX = ".idme-part"
#: How every temporary file's name starts: hidden.
TEMP_PREFIX = "."
#: The temporary files of releases before 0.x: removed once an hour old.
LEGACY_PREFIX, LEGACY_SUFFIX = ".idme-passback-", ".part"
_LEGACY_AGE = 3600.0
_PART_OVERHEAD = len(b".") + len(PART_SUFFIX.encode())
_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# The temporary files this process is writing, by (device, inode): where flock is
# emulated with per-process locks (NFS), our own lock would not keep us out.
_WRITING: set[tuple[int, int]] = set()


def is_part_name(name: str) -> bool:
    """Whether ``name`` is one of the client's temporary files."""
    return (name.startswith(".") and name.endswith(PART_SUFFIX) and len(name) > _PART_OVERHEAD) or (
        name.startswith(LEGACY_PREFIX) and name.endswith(LEGACY_SUFFIX)
    )


def _part(name: str) -> str:
    return f".{name}{PART_SUFFIX}"


def _try_lock(fd: int) -> bool:
    """Take the file's lock if no one holds it; ``True`` where locks do not exist."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True  # a file system without locks: nothing to wait for
    return True


@attrs.frozen
class Written:
    """What :meth:`Folder.write` put on disk."""

    bytes: int
    sha256: str


class Folder:
    """A folder opened for writing images; use as a context manager, or :meth:`close`.

    Raises (from :meth:`open`):
        FolderNotFoundError: no such folder, or not a folder.
        FolderNotWritableError: the folder cannot be opened.
    """

    __slots__ = ("_fd", "name_max", "path")

    def __init__(self, path: Path, fd: int | None, name_max: int) -> None:
        self.path = path
        self._fd = fd
        #: The longest file name (in bytes) the file system allows.
        self.name_max = name_max

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Folder:
        """Open the folder ``path`` (symlinks in it are followed once, here)."""
        folder = Path(path)
        shown = str(folder)
        if not _DIR_FD:  # pragma: no cover - Windows: paths, checked as well as they can be
            if not folder.is_dir():
                raise FolderNotFoundError(f"the folder {shown!r} does not exist")
            return cls(folder, None, 255)
        flags = os.O_RDONLY | os.O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
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
        if len(encoded) + _PART_OVERHEAD > self.name_max:
            raise InvalidFilenameError(
                f"the file name {name[:40]!r}... is {len(encoded)} bytes; this file system "
                f"allows {self.name_max - _PART_OVERHEAD} (its temporary file needs "
                f"{_PART_OVERHEAD} more)"
            )
        if is_part_name(name):
            raise InvalidFilenameError(
                f"{name[:40]!r} is named like one of the client's temporary files"
            )
        return name

    def check_free(self, name: str, *, overwrite: bool) -> None:
        """Raise unless ``name`` can be written (a dangling symlink is not free).

        Raises:
            TargetIsAFolderError: ``name`` is a folder.
            TargetExistsError: something is there and ``overwrite`` is false.
        """
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
        part = _part(name)
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
        probe = _part(f"probe-{os.getpid()}-{secrets.token_hex(6)}")
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
        part = _part(name)
        fd = self._create_part(part, name)
        info = os.fstat(fd)
        mine = (info.st_dev, info.st_ino)
        _WRITING.add(mine)
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
            _WRITING.discard(mine)
            os.close(fd)
        if fsync and self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)  # the new name is durable too
        return Written(written, digest.hexdigest())

    def sweep(self) -> int:
        """Remove the client's stale temporary files here; return how many went."""
        if fcntl is None or self._fd is None:  # pragma: no cover - no locks, no way to tell
            return 0
        removed = 0
        now = time.time()
        with os.scandir(self._fd) as entries:
            names = [entry.name for entry in entries if is_part_name(entry.name)]
        for name in names:
            if name.startswith(LEGACY_PREFIX) and not name.endswith(PART_SUFFIX):
                # Written without a lock: only an old one is certainly abandoned.
                with contextlib.suppress(OSError):
                    info = self._lstat(name)
                    if now - info.st_mtime < _LEGACY_AGE or not self._ours(info):
                        continue
                    self._unlink(name)
                    removed += 1
                continue
            if self._remove_if_stale(name):
                removed += 1
        if removed:
            logger.info("removed %d stale temporary file(s) in %s", removed, self.path)
        return removed

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
            if _try_lock(fd) and self._is_at(part, fd):
                return fd
            os.close(fd)
        raise TargetExistsError(f"{str(self.path / name)!r} is being written by another download")

    def _remove_if_stale(self, part: str) -> bool:
        """Remove ``part`` if it is ours and no live writer holds it; say whether it is gone."""
        try:
            info = self._lstat(part)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        if not self._ours(info) or (info.st_dev, info.st_ino) in _WRITING:
            return False
        try:
            fd = self._open(part, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0), 0)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        try:
            if os.fstat(fd).st_ino != info.st_ino or not _try_lock(fd):
                return False
            # Held under its lock: no cooperating writer can be using it.
            self._unlink(part)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    @staticmethod
    def _ours(info: os.stat_result) -> bool:
        uid = os.geteuid() if hasattr(os, "geteuid") else info.st_uid
        return stat.S_ISREG(info.st_mode) and info.st_uid == uid

    def _is_at(self, name: str, fd: int) -> bool:
        try:
            return self._lstat(name).st_ino == os.fstat(fd).st_ino
        except OSError:
            return False

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

    def _discard(self, part: str, fd: int) -> None:
        # Only our own file: if the name has been taken over since, leave it be.
        if self._is_at(part, fd):
            with contextlib.suppress(OSError):
                self._unlink(part)

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

    # Path operations, relative to the descriptor where the platform has them.

    def _where(self, name: str) -> tuple[str, int | None]:
        if self._fd is None:
            if not _DIR_FD:  # pragma: no cover
                return str(self.path / name), None
            raise ValueError("the folder is closed")
        return name, self._fd

    def _open(self, name: str, flags: int, mode: int) -> int:
        where, fd = self._where(name)
        return os.open(where, flags | _O_NOFOLLOW | _O_CLOEXEC, mode, dir_fd=fd)

    def _lstat(self, name: str) -> os.stat_result:
        where, fd = self._where(name)
        return os.stat(where, dir_fd=fd, follow_symlinks=False)

    def _unlink(self, name: str) -> None:
        where, fd = self._where(name)
        os.unlink(where, dir_fd=fd)

    def _link(self, source: str, target: str) -> None:
        src, fd = self._where(source)
        dst, _ = self._where(target)
        os.link(src, dst, src_dir_fd=fd, dst_dir_fd=fd)

    def _replace(self, source: str, target: str) -> None:
        src, fd = self._where(source)
        dst, _ = self._where(target)
        os.replace(src, dst, src_dir_fd=fd, dst_dir_fd=fd)


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
