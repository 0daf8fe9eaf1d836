"""Opening a file named by an untrusted model: its location is checked (relative, no NUL, inside the model's
directory or the directory's trusted roots, with links resolved), the file is opened without following a last
symlink and without blocking, and the opened file itself is checked (a regular file, its own path inside). Callers
read and copy through the returned descriptor, never through the name again, so a file swapped for a symlink to
somewhere else after the check cannot be reached. External data (external_data.py) and the other files of a model
directory (batch/model_directory.py) are opened here.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError
from . import portable


@dataclass
class OpenedFile:
    """A file inside a model's directory, opened once and checked as opened: read and copy it through `fd`."""

    fd: int
    real: Path  # the opened file's own resolved path (inside the directory)
    stat: os.stat_result

    @property
    def mode(self) -> int:
        return self.stat.st_mode & 0o777


def shown(name: str, limit: int = 120) -> str:
    """repr(name), shortened: a hostile location may be kilobytes long."""
    text = repr(name)
    return text if len(text) <= limit else f"{text[:limit]}...'"


def trusted_roots(base: Path) -> list[Path]:
    """Where the files of the model directory `base` (resolved) may really live: inside it, and for a Hugging Face
    cache snapshot (`<cache>/models--org--name/snapshots/<revision>/...`, whose every file is a symlink into that
    repository's `blobs/`) in that repository's blobs as well, which is where the hub client puts them."""
    parts = base.parts
    for index in range(len(parts) - 2, 0, -1):
        if parts[index] == "snapshots" and parts[index - 1].startswith(("models--", "datasets--")):
            return [base, Path(*parts[:index]) / "blobs"]
    return [base]


def _inside(path: Path, base: Path) -> bool:
    roots = trusted_roots(base)
    if any(path == root or path.is_relative_to(root) for root in roots):
        return True
    # On a case-insensitive filesystem (macOS's default, Windows) the kernel may spell a directory otherwise than the
    # user did: then whether a directory on the way *is* a root is asked of the filesystem (device and inode).
    try:
        ids = {(info.st_dev, info.st_ino) for info in map(os.stat, roots)}
        return any((info.st_dev, info.st_ino) in ids for info in map(os.stat, path.parents))
    except OSError:
        return False


def open_inside(base: Path, relative: str, what: str, *, missing: str | None = None) -> OpenedFile:
    """Open `relative` under the directory `base` for reading, refusing (BadInputError, naming `what`) anything
    absolute, escaping `base` (through `..` or a symlink, checked before opening and again on the opened file), not
    a regular file (a FIFO is never waited on: opened non-blocking, refused by its fstat), or unreadable."""
    if "\0" in relative:
        raise BadInputError(f"{what} has a location with a NUL byte: {shown(relative)}")
    if not relative or os.path.isabs(relative) or Path(relative).drive:
        raise BadInputError(f"{what} has an absolute or empty location {shown(relative)}")
    base = base.resolve()
    real = Path(os.path.realpath(base / relative))
    if not _inside(real, base):
        raise BadInputError(f"{what} points outside the model's directory: {shown(relative)}")
    try:  # the resolved path, so a last component swapped for a symlink meanwhile fails (ELOOP) instead of leading out
        fd = portable.open_for_reading(real, nofollow=True)
    except FileNotFoundError:
        raise BadInputError(missing or f"{what}: no such file {shown(relative)}") from None
    except (portable.NotRegularFileError, IsADirectoryError):  # refused before opening where O_NONBLOCK is missing
        raise BadInputError(f"{what}: {shown(relative)} is not a regular file") from None
    except OSError as err:
        reason = "it changed into a symlink while being read" if err.errno == errno.ELOOP else err.strerror
        raise BadInputError(f"{what}: cannot open {shown(relative)}: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat_module.S_ISREG(info.st_mode):
            raise BadInputError(f"{what}: {shown(relative)} is not a regular file")
        opened = portable.opened_path(fd, real)
        if opened is None:
            raise BadInputError(f"{what}: {shown(relative)} was removed while being read")
        if not _inside(opened, base):
            raise BadInputError(f"{what} points outside the model's directory: {shown(relative)}")
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(fd=fd, real=opened, stat=info)
