"""What the operating system offers, asked of it by capability (hasattr / getattr), never by platform name.

Linux gives graphfix its fast and strict paths: O_NOFOLLOW and O_NONBLOCK opens, /proc/self/fd to ask where an
open file really is, reflinks and in-kernel copies (datacopy.py). macOS and Windows lack some of these; each has a
fallback here that keeps the same guarantee another way, so that the same bytes land on every platform. The test
mode that hides the Linux-only APIs (tests/io/test_portable_io.py) runs the commands through these fallbacks.

Where Windows truly behaves differently:
- Files are opened in text mode unless O_BINARY is given: every os.open here carries it, or a CR LF pair in a
  weight would be read as LF.
- A file another process holds open (an indexer, an antivirus scan, a runtime session) cannot be replaced: the
  rename fails with a sharing violation that clears by itself, so `replace` retries for a moment.
- Names are case-insensitive (also on macOS's default APFS): whether two names are one file is asked of the
  filesystem (same device and inode), never decided by comparing the strings.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

# 0 where the platform has no such flag: text-mode translation is Windows-only, the rest POSIX-only.
O_BINARY: int = getattr(os, "O_BINARY", 0)
O_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
O_NOCTTY: int = getattr(os, "O_NOCTTY", 0)
O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
O_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)
READ_FLAGS = os.O_RDONLY | O_BINARY | O_NOCTTY | O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_BINARY | O_CLOEXEC
_SHARING_VIOLATIONS = (5, 32)  # ERROR_ACCESS_DENIED (a pending delete), ERROR_SHARING_VIOLATION
_REPLACE_RETRIES = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)  # seconds: an indexer's or scanner's hold is that short


class NotRegularFileError(OSError):
    """Refused before opening: without O_NONBLOCK, opening a FIFO would wait for a writer that never comes."""


def same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def owned_by_another(info: os.stat_result, *also: int) -> bool:
    """Whether a file belongs to a user other than this one (and `also`); never where files have no POSIX owner
    (Windows: st_uid is always 0, and ACLs decide)."""
    return hasattr(os, "getuid") and info.st_uid not in (os.getuid(), *also)


def writable_by_others(info: os.stat_result) -> bool:
    """Whether group or others may write to a file; never where mode bits do not say (Windows: every directory
    reads 0o777, and ACLs decide)."""
    return hasattr(os, "getuid") and bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def open_for_reading(path: str | os.PathLike[str], *, nofollow: bool = False) -> int:
    """An fd of `path` opened for reading without blocking on a FIFO and, with `nofollow`, refusing (ELOOP) a last
    component that is a symlink. Where O_NONBLOCK or O_NOFOLLOW are missing, the name is looked at first (lstat or
    stat: a directory is EISDIR, anything else not regular NotRegularFileError, a symlink ELOOP) and the opened
    file must then be that very file (same device and inode): a swap between the look and the open is refused."""
    flags = READ_FLAGS | O_NONBLOCK | (O_NOFOLLOW if nofollow else 0)
    if O_NONBLOCK and (O_NOFOLLOW or not nofollow):
        return os.open(path, flags)
    looked = os.lstat(path) if nofollow else os.stat(path)
    if stat.S_ISLNK(looked.st_mode):
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))
    if stat.S_ISDIR(looked.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(looked.st_mode):
        raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
    fd = os.open(path, flags)
    if not same_inode(os.fstat(fd), looked):
        os.close(fd)
        raise OSError(errno.ELOOP, "the file changed while being opened", str(path))
    return fd


def read_at(fd: int, size: int, offset: int) -> bytes:
    """Up to `size` bytes of the file open at `fd`, from `offset`: pread, which leaves the fd's position as it is,
    where the OS has it; a seek and a read on Windows, which has no pread."""
    if hasattr(os, "pread"):
        return os.pread(fd, size, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


def set_mode(fd: int, path: Path, mode: int) -> None:
    """Permission bits of the file open at `fd`, named `path` (only Windows before Python 3.13 lacks fchmod, and
    there only the read-only bit exists)."""
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:
        os.chmod(path, mode)


def opened_path(fd: int, resolved: Path) -> Path | None:
    """Where the file open at `fd` is now, as the kernel knows it; None when it was removed meanwhile. Linux says
    it through /proc/self/fd, macOS through fcntl F_GETPATH. Elsewhere `resolved` (the name that was opened, links
    resolved) is taken only if it still resolves to itself (no directory on the way became a symlink) and still
    names that very file; a swap and a swap back between the open and this look is the one race left there."""
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
    else:
        return None if link.endswith(" (deleted)") else Path(link)
    if (kernel := _fcntl_path(fd)) is not None:
        return kernel
    try:
        named = os.stat(resolved)
    except OSError:
        return None
    if Path(os.path.realpath(resolved)) != resolved or not same_inode(named, os.fstat(fd)):
        return None
    return resolved


def _fcntl_path(fd: int) -> Path | None:
    try:
        import fcntl
    except ImportError:
        return None
    request: int | None = getattr(fcntl, "F_GETPATH", None)
    if request is None:
        return None
    try:
        raw = fcntl.fcntl(fd, request, bytes(1024))
    except OSError:
        return None
    return Path(os.fsdecode(raw.rstrip(b"\0")))


def replace(src: Path, dst: Path) -> None:
    """os.replace, retried for a moment on a sharing violation: on Windows a file that another process has open
    (without FILE_SHARE_DELETE) cannot be replaced until it lets go. Only an error that says so (a `winerror`)
    is retried; a POSIX PermissionError (a read-only directory) is final at once."""
    for delay in _REPLACE_RETRIES:
        try:
            os.replace(src, dst)
            return
        except PermissionError as err:
            if getattr(err, "winerror", None) not in _SHARING_VIOLATIONS:
                raise
            time.sleep(delay)
    os.replace(src, dst)
