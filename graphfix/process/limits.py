"""The limits this process runs under, asked only to say what ran out once something has."""

from __future__ import annotations

import os


def address_space_limit() -> int | None:
    """The soft RLIMIT_AS in bytes, or None when there is none (also on Windows, which has no rlimits)."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def address_space_limited() -> bool:
    """Whether a soft RLIMIT_AS is set, told by /proc where there is one (Linux) rather than by the `resource`
    extension: loaded at start-up under a tight limit, it moves where importing the command line runs out, into
    CPython paths that raise SystemError rather than MemoryError (4 runs of 12 at 24 MB)."""
    try:
        with open("/proc/self/limits", "rb") as limits:
            for line in limits:
                if line.startswith(b"Max address space"):
                    return line.split()[3] != b"unlimited"
    except OSError:
        pass
    return address_space_limit() is not None


def on_noexec_mount(path: os.PathLike[str] | str) -> bool:
    """Whether `path` lies on a filesystem mounted noexec, where no shared library can be mapped to run."""
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_NOEXEC", 0))
    except (OSError, AttributeError):  # Windows has no statvfs
        return False
