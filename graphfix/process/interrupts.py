"""Ctrl-C, SIGTERM or SIGHUP at any moment of a `graphfix` run: one `error: interrupted` line, exit 128+n,
nothing half-written and no process left behind.

SIGTERM is what `timeout`, `make`, `docker stop`, systemd and a cancelled CI job send, SIGHUP what a dropped ssh
session sends: each is an interruption like Ctrl-C, raised as KeyboardInterrupt so that the same cleanup runs
(staging directories removed, child processes killed by subprocess.run on the way out); `signal_received` says
which one came, for the exit status.

Python raises KeyboardInterrupt wherever the main thread happens to be, and two kinds of place cannot take it: a C
extension's module init (onnx's pybind11 module segfaults, onnxruntime's turns it into "ImportError: initialization
failed") and a weakref callback or __del__ (Python prints "Exception ignored" and carries on). The handler here
holds a Ctrl-C back until the extension's init has returned, and delivers a lost one again. The few file steps
that must happen together run inside `held_for_main_thread`, which takes a Ctrl-C only at its end.

A terminal sends Ctrl-C to the whole process group: child processes (the proof's, --jobs workers) lead groups of
their own, and helper threads never take it, so that the main thread alone reports it, once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.machinery import ExtensionFileLoader
from types import FrameType
from typing import Any

_EXTENSION_INIT = {ExtensionFileLoader.create_module.__code__, ExtensionFileLoader.exec_module.__code__}
RETRY_SECONDS = 0.005
# The signal that carries the retry of a held-back Ctrl-C: SIGALRM from an interval timer where POSIX has them;
# Windows has neither, so there a timer thread simulates SIGBREAK (Ctrl-Break, itself an interrupt) in the main thread.
_RETRY_SIGNAL: int | None = getattr(signal, "SIGALRM", None) or getattr(signal, "SIGBREAK", None)

# The signals that end a run the way Ctrl-C does.
STOPPING: tuple[int, ...] = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                                  if hasattr(signal, name))  # Windows has no SIGHUP

received = False
signal_received: int = signal.SIGINT
_holds = 0  # depth of held_for_main_thread blocks in the main thread
_held = False  # a Ctrl-C (or its retry) came in during them


def install() -> None:
    """Route Ctrl-C, SIGTERM and SIGHUP through `_interrupted` for the rest of the process; the CLI's entry point
    calls this first (and each --jobs worker, batch/parallel.py, which its parent stops with SIGTERM)."""
    global received, signal_received
    received, signal_received = False, signal.SIGINT
    for sig in STOPPING:
        signal.signal(sig, _interrupted)
    if _RETRY_SIGNAL is not None:  # the retry of a Ctrl-C held back during an extension's init
        signal.signal(_RETRY_SIGNAL, _interrupted)
    sys.unraisablehook = _redeliver_lost_interrupt


def _retry_soon() -> None:
    """Deliver the held-back Ctrl-C again in RETRY_SECONDS, through _RETRY_SIGNAL."""
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
    elif _RETRY_SIGNAL is not None:
        import _thread

        timer = threading.Timer(RETRY_SECONDS, _thread.interrupt_main, args=(_RETRY_SIGNAL,))
        timer.daemon = True
        timer.start()


def exit_status() -> int:
    """128+n for the signal that interrupted the run (130 for Ctrl-C), as a shell reports a process it killed."""
    return 128 + int(signal_received)


def message() -> str:
    """The start of the one line: `interrupted`, or `interrupted by SIGTERM` for a signal other than Ctrl-C."""
    sig = signal_received
    return "interrupted" if sig == signal.SIGINT else f"interrupted by {signal.Signals(sig).name}"


def is_interrupt(err: BaseException) -> bool:
    """Whether `err` is how a Ctrl-C surfaced (any error raised after one arrived counts: see the module note)."""
    return isinstance(err, KeyboardInterrupt) or received


def _interrupted(signum: int, frame: FrameType | None) -> None:
    global received, _held, signal_received
    if signum in STOPPING and not received:
        signal_received = signum  # the first one decides the exit status; the SIGALRM retry keeps it
    if _holds:  # raised where the hold ends
        _held = True
        return
    received = True
    for sig in STOPPING:  # a second signal must not cut short the temp directory's cleanup
        signal.signal(sig, signal.SIG_IGN)
    if _inside_extension_init(frame):
        _retry_soon()
        return
    raise KeyboardInterrupt


def _inside_extension_init(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code in _EXTENSION_INIT:
            return True
        frame = frame.f_back
    return False


def _redeliver_lost_interrupt(unraisable: Any) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _retry_soon()
        return
    sys.__unraisablehook__(unraisable)


@contextmanager
def held_for_main_thread() -> Iterator[None]:
    """A Ctrl-C arriving inside is raised on the way out, at that exact point, whatever thread the kernel gave it to.

    Blocking SIGINT in the main thread alone is not enough: once another thread exists (onnxruntime leaves one
    behind after validation) the kernel delivers the signal there, and Python then runs the handler in the main
    thread at its next bytecode, inside the block. So the handler itself defers while held. The block stays, so
    that threads started inside inherit it and never take a Ctrl-C (its disposition would apply in the wrong
    thread). A library caller's default handler is swapped for the deferring one for the duration."""
    global _holds, _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # No bytecode that can take a signal lies between the increment and the try: the count is always undone.
    mask, swapped = None, False
    _holds += 1
    try:
        if _holds == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            swapped = True
            signal.signal(signal.SIGINT, _interrupted)
        if hasattr(signal, "pthread_sigmask"):  # Windows has no signal masks and runs handlers in the main thread
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(STOPPING))
        yield
    finally:
        try:
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one pending on this thread is deferred too
            if swapped:
                signal.signal(signal.SIGINT, signal.default_int_handler)
        finally:
            _holds -= 1
            deliver = _held and not _holds
            if not _holds:
                _held = False
        if deliver:
            if swapped:
                raise KeyboardInterrupt  # what the library caller's default handler would have done
            _interrupted(signal_received, None)
