"""Under an address-space limit (`ulimit -v`), graphfix's native libraries are loaded before any work, in a place
where failing to load them can still be reported.

Python turns a failed allocation into MemoryError, but the dynamic loader does not: when it cannot allocate the
thread-local storage of a library it maps (numpy's, libffi's, onnx's), it prints "cannot allocate memory for
thread-local data: ABORT" and ends the process with exit 127, before any handler runs. So, only when a limit is
set (no cost otherwise), a forked child first loads them and reports whether it could; the process itself then
loads them too, so that nothing is mapped later, when the model's allocations have brought it near the limit.
"""

from __future__ import annotations

import importlib
import mmap
import os
import signal

# Every extension module a command loads after start-up (tests/test_interruption_and_limits.py holds the runs
# of repair, check and split to it): numpy (its ctypes glue loads libffi), numpy.linalg, onnx's C++ extension,
# and contextvars (asyncio-free code still reaches it through numpy's printing).
NATIVE_MODULES = ("numpy", "numpy.linalg", "ctypes", "contextvars", "onnx", "onnx.onnx_cpp2py_export")

_HEADROOM = 16 * 2**20


def address_space_limit() -> int | None:
    """The soft RLIMIT_AS in bytes, or None when there is none (also on Windows, which has no rlimits)."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def address_space_used() -> int | None:
    """This process's address space in bytes (VmSize), where /proc tells it (Linux, the one system that enforces
    RLIMIT_AS); None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def load_within_address_space_limit() -> None:
    """Load NATIVE_MODULES first when an address-space limit is set; MemoryError, naming the limit, when they do
    not fit in it."""
    limit = address_space_limit()
    if limit is None or not hasattr(os, "fork"):
        return
    child = os.fork()
    if child == 0:  # pragma: no cover - the child's coverage is not collected
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # OpenBLAS's own words on failing: the parent says it
            _load()
            mmap.mmap(-1, _HEADROOM)  # room left for the parent's own loading, which may differ by a few pages
        except BaseException:
            os._exit(1)
        os._exit(0)
    try:
        _, status = os.waitpid(child, 0)
    except BaseException:  # Ctrl-C or SIGTERM while the child loads: it must not outlive us
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        raise
    if os.waitstatus_to_exitcode(status) != 0:
        raise MemoryError(f"onnx and numpy do not load within the address-space limit of {limit // 2**20} MB")
    _load()


def _load() -> None:
    for name in NATIVE_MODULES:
        importlib.import_module(name)
