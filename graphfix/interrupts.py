"""Ctrl-C at any moment of a `graphfix` run: one `error: interrupted` line, exit 130, nothing half-written.

Python raises KeyboardInterrupt wherever the main thread happens to be, and two kinds of place cannot take it: a C
extension's module init (onnx's pybind11 module segfaults, onnxruntime's turns it into "ImportError: initialization
failed") and a weakref callback or __del__ (Python prints "Exception ignored" and carries on). The handler here
holds a Ctrl-C back until the extension's init has returned, and delivers a lost one again.

A terminal sends Ctrl-C to the whole process group: --jobs workers start with it ignored, and helper threads never
take it, so that the main thread alone reports it, once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.machinery import ExtensionFileLoader

_EXTENSION_INIT = {ExtensionFileLoader.create_module.__code__, ExtensionFileLoader.exec_module.__code__}
RETRY_SECONDS = 0.005

received = False


def install() -> None:
    """Route Ctrl-C through `_interrupted` for the rest of the process; the CLI's entry point calls this first."""
    global received
    received = False
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGALRM, _interrupted)  # the retry of a Ctrl-C held back during an extension's init
    sys.unraisablehook = _redeliver_lost_interrupt


def is_interrupt(err: BaseException) -> bool:
    """Whether `err` is how a Ctrl-C surfaced (any error raised after one arrived counts: see the module note)."""
    return isinstance(err, KeyboardInterrupt) or received


def _interrupted(signum, frame) -> None:
    global received
    received = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut short the temp directory's cleanup
    if _inside_extension_init(frame):
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
        return
    raise KeyboardInterrupt


def _inside_extension_init(frame) -> bool:
    while frame is not None:
        if frame.f_code in _EXTENSION_INIT:
            return True
        frame = frame.f_back
    return False


def _redeliver_lost_interrupt(unraisable) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        signal.setitimer(signal.ITIMER_REAL, RETRY_SECONDS)
        return
    sys.__unraisablehook__(unraisable)


@contextmanager
def held_for_main_thread() -> Iterator[None]:
    """A Ctrl-C arriving inside stays pending and reaches the main thread's handler on exit; threads started inside
    inherit the block, so they never take one (its disposition would then apply in the wrong thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def ignored_by_children() -> Iterator[None]:
    """Processes started inside ignore Ctrl-C from their first instruction (SIG_IGN survives exec, a handler does
    not); for this process a Ctrl-C meanwhile is held, not lost (Linux never discards a blocked signal)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with held_for_main_thread():
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
