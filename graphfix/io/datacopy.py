"""Copy bytes file-to-file without them passing through Python where the OS can: reflink, copy_file_range,
sendfile, in that order, each used where the platform has it (asked by capability, not by platform name), and a
buffered copy at explicit offsets where none of them works (macOS's sendfile writes only to sockets, Windows has
none). Every path writes the same bytes.

Weights are gigabytes and a repair never looks at them, so they move in the kernel. Sparse files stay sparse
(holes are found with SEEK_DATA / SEEK_HOLE and skipped), so a mostly-empty multi-gigabyte data file costs what its
data costs.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from . import portable
from .protowire import Piece, SourceRange

# "clone": reflink where the filesystem can (btrfs, xfs), else an in-kernel copy. "copy": always an in-kernel copy.
# "link": hardlink external data; onnx >= 1.23's loader and checker refuse a data file with several links
# ("potential hardlink attack"), so only runtimes that do not check (onnxruntime) can load such an output.
DATA_MODES = ("clone", "copy", "link")
_FICLONE = 0x40049409  # _IOW(0x94, 9, int) from linux/fs.h
_CHUNK = 1 << 30
_BUFFER = 1 << 23  # the portable copy's read size: 8 MiB, past which larger reads gain nothing
# Errors meaning "this kernel or filesystem cannot do that", after which the next, plainer method is tried.
_UNSUPPORTED = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTTY, errno.EPERM,
                errno.EBADF, errno.ETXTBSY, errno.ENOTSOCK}


def _ioctl() -> Callable[[int, int, int], object] | None:
    """fcntl.ioctl where the platform has it (not on Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    ioctl: Callable[[int, int, int], object] | None = getattr(fcntl, "ioctl", None)
    return ioctl


def _reflink(src_fd: int, dst_fd: int) -> bool:
    if (ioctl := _ioctl()) is None:
        return False
    try:
        ioctl(dst_fd, _FICLONE, src_fd)
        return True
    except OSError as err:
        if err.errno in _UNSUPPORTED:
            return False
        raise


def _copy_range(src_fd: int, dst_fd: int, offset: int, length: int, dst_offset: int | None = None) -> None:
    """Copy length bytes at offset; at dst_offset, or at (and advancing) dst_fd's position when None."""
    end = offset + length
    copied = _in_kernel(src_fd, dst_fd, offset, end, dst_offset)
    if copied is None:
        return
    offset, dst_offset = copied
    if dst_offset is not None:
        os.lseek(dst_fd, dst_offset, os.SEEK_SET)
    _buffered(src_fd, dst_fd, offset, end)


def _in_kernel(src_fd: int, dst_fd: int, offset: int, end: int,
               dst_offset: int | None) -> tuple[int, int | None] | None:
    """copy_file_range, else sendfile, from offset to end; None when done, else where the plainer copy takes
    over (source offset, destination offset) after this platform or filesystem refused both."""
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is not None:
        try:
            while offset < end:
                done = copy_file_range(src_fd, dst_fd, min(end - offset, _CHUNK), offset, dst_offset)
                if done == 0:
                    raise OSError(errno.EIO, "source file ended early")
                offset += done
                dst_offset = None if dst_offset is None else dst_offset + done
            return None
        except OSError as err:
            if err.errno not in _UNSUPPORTED:
                raise
    sendfile = getattr(os, "sendfile", None)
    if sendfile is None:
        return offset, dst_offset
    if dst_offset is not None:
        os.lseek(dst_fd, dst_offset, os.SEEK_SET)
        dst_offset = None  # from here on the copy writes at (and advances) dst_fd's position
    try:
        while offset < end:  # sendfile writes at dst_fd's position
            done = sendfile(dst_fd, src_fd, offset, min(end - offset, _CHUNK))
            if done == 0:
                raise OSError(errno.EIO, "source file ended early")
            offset += done
        return None
    except OSError as err:  # macOS: the destination must be a socket (ENOTSOCK)
        if err.errno not in _UNSUPPORTED:
            raise
    return offset, dst_offset


def _buffered(src_fd: int, dst_fd: int, offset: int, end: int) -> None:
    """The portable copy: read at explicit offsets into one reused buffer, write at dst_fd's position. The source
    is read through its own positioned reads (pread) where the OS has them, so its fd's position is untouched."""
    buffer = bytearray(min(_BUFFER, max(end - offset, 1)))
    view = memoryview(buffer)
    pread = getattr(os, "preadv", None)
    with open(src_fd, "rb", buffering=0, closefd=False) as source:
        while offset < end:
            want = view[:min(end - offset, len(buffer))]
            if pread is not None:
                got = pread(src_fd, [want], offset)
            else:
                source.seek(offset)
                got = source.readinto(want) or 0
            if got == 0:
                raise OSError(errno.EIO, "source file ended early")
            _write_all(dst_fd, want[:got])
            offset += got


def _data_segments(fd: int, size: int) -> Iterable[tuple[int, int]]:
    """(start, end) of every region of fd that holds data; the whole file where holes cannot be asked about."""
    pos = 0
    if not hasattr(os, "SEEK_DATA"):  # Windows: no way to ask, so the holes are copied as the zeros they read as
        yield 0, size
        return
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:  # only a hole remains
                return
            if err.errno in _UNSUPPORTED:
                yield pos, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        pos = end


def _copy_contents(src_fd: int, dst_fd: int, allow_reflink: bool) -> None:
    if allow_reflink and _reflink(src_fd, dst_fd):
        return
    size = os.fstat(src_fd).st_size
    for start, end in _data_segments(src_fd, size):
        _copy_range(src_fd, dst_fd, start, end - start, dst_offset=start)
    os.ftruncate(dst_fd, size)  # a trailing hole


def copy_fd(src_fd: int, dst: Path, mode: str = "clone") -> None:
    """A byte-identical new file `dst` of the open file `src_fd`, with its permission bits (a 0600 input stays
    0600 beside OUT, whatever the umask)."""
    fd = os.open(dst, portable.CREATE_FLAGS, 0o600)
    try:
        portable.set_mode(fd, dst, os.fstat(src_fd).st_mode & 0o777)
        _copy_contents(src_fd, fd, allow_reflink=mode != "copy")
    finally:
        os.close(fd)


def copy_data_file(src_fd: int, src: Path, dst: Path, mode: str = "clone") -> None:
    """External data beside the output, from the open file `src_fd` (the very file that was checked, whatever its
    name `src` points at now): a hardlink of it only when asked ("link"), else a reflink or a kernel copy."""
    # Without linkat (os.supports_follow_symlinks), a link of a symlink would be of its target: copy instead.
    if mode == "link" and os.link in os.supports_follow_symlinks:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError as err:
            if err.errno not in _UNSUPPORTED and err.errno not in (errno.EMLINK, errno.ENOENT):
                raise
        else:  # the name may have been swapped since it was opened: keep the link only if it is that very file
            linked, opened = os.lstat(dst), os.fstat(src_fd)
            if (linked.st_dev, linked.st_ino) == (opened.st_dev, opened.st_ino):
                return
            os.unlink(dst)
    copy_fd(src_fd, dst, mode)


def write_pieces(pieces: Iterable[Piece], src_fd: int, dst: Path, mode: int = 0o644) -> None:
    """Write literal bytes and ranges of src_fd, in order, into the new file dst (permission bits `mode`)."""
    write_pieces_from(pieces, [(src_fd, -1)], dst, mode)


def write_pieces_from(pieces: Iterable[Piece], sources: Sequence[tuple[int, int]], dst: Path,
                      mode: int = 0o644) -> None:
    """write_pieces with ranges of several files: `sources` are (descriptor, size) and a range addresses their
    concatenation, in order (a merged model's weights come from two files); the last size may be -1 (unbounded)."""
    bases, base = [], 0
    for src_fd, size in sources:
        bases.append((base, src_fd))
        base += size
    fd = os.open(dst, portable.CREATE_FLAGS, 0o600)
    try:
        portable.set_mode(fd, dst, mode)
        pending: list[bytes] = []
        for piece in [*pieces, None]:
            if isinstance(piece, bytes):
                pending.append(piece)
                continue
            if pending:
                _write_all(fd, b"".join(pending))
                pending = []
            if isinstance(piece, SourceRange):
                start, src_fd = next((start, src) for start, src in reversed(bases) if piece.start >= start)
                _copy_range(src_fd, fd, piece.start - start, len(piece))
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
