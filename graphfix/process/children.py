"""Child processes that end with everything they started: the proof's, pip's and venv's (proof/runtimes.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from .interrupts import held_for_main_thread


def run_child(command: list[str], env: dict[str, str] | None = None,
              timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """subprocess.run(command, capture_output=True, text=True), ended with everything it started.

    The child leads a process group of its own and is started with signals held, so that an interruption never
    falls between its start and this function knowing its pid; on any way out but its end (Ctrl-C, SIGTERM, SIGHUP,
    an error) the whole group is killed: ensurepip's own pip child, pip's, the proof's. Its own group also keeps a
    terminal's Ctrl-C to graphfix, which alone reports it (the child inherits the held signals blocked, and is
    ended with SIGKILL, which nothing blocks). Past `timeout` seconds the group is killed and
    subprocess.TimeoutExpired raised."""
    group: dict[str, Any] = ({} if os.name != "posix" else {"process_group": 0} if sys.version_info >= (3, 11)
                             else {"preexec_fn": os.setpgrp})
    proc: subprocess.Popen[str] | None = None
    try:
        with held_for_main_thread():  # a signal held here is raised as the block ends: proc is known by then
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env, **group)
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:
        if proc is not None:
            with held_for_main_thread():
                _kill_group(proc)
        raise
    finally:
        if proc is not None:
            _kill_group(proc)  # what it left running in its group once it ended (nothing, normally)
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)
        elif proc.poll() is None:
            proc.kill()
    except (ProcessLookupError, PermissionError):  # the group is gone (PermissionError: macOS, a zombie leader)
        pass
    proc.wait()
