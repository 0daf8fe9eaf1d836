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
    return any(path == root or path.is_relative_to(root) for root in trusted_roots(base))


def _opened_path(fd: int, fallback: Path) -> Path | None:
    """The path of the file open at `fd` as the kernel sees it now; None when it is gone (removed meanwhile)."""
    try:
        link = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: the name must still be that very file
        try:
            named = os.stat(fallback)
        except OSError:
            return None
        opened = os.fstat(fd)
        return fallback if (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino) else None
    return None if link.endswith(" (deleted)") else Path(link)


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
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadInputError(missing or f"{what}: no such file {shown(relative)}") from None
    except OSError as err:
        reason = "it changed into a symlink while being read" if err.errno == errno.ELOOP else err.strerror
        raise BadInputError(f"{what}: cannot open {shown(relative)}: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat_module.S_ISREG(info.st_mode):
            raise BadInputError(f"{what}: {shown(relative)} is not a regular file")
        opened = _opened_path(fd, real)
        if opened is None:
            raise BadInputError(f"{what}: {shown(relative)} was removed while being read")
        if not _inside(opened, base):
            raise BadInputError(f"{what} points outside the model's directory: {shown(relative)}")
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(fd=fd, real=opened, stat=info)
