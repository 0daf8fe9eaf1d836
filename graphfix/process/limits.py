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


def on_noexec_mount(path: os.PathLike[str] | str) -> bool:
    """Whether `path` lies on a filesystem mounted noexec, where no shared library can be mapped to run."""
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_NOEXEC", 0))
    except (OSError, AttributeError):  # Windows has no statvfs
        return False
