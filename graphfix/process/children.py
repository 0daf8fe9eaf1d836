"""Child processes that end with everything they started: the proof's (proof/child.py), pip's and venv's
(proof/runtimes.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import IO, Any

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
    return finish_child(start_child(command, env), timeout=timeout)


def start_child(command: list[str], env: dict[str, str] | None = None, stdin: int = subprocess.DEVNULL,
                stderr: int | IO[str] = subprocess.PIPE) -> subprocess.Popen[str]:
    """The child of run_child, started alone (`stdin`: subprocess.PIPE for one that waits to be told what to do;
    `stderr`: a file, for one whose stderr is read only once it ended); the caller ends it with finish_child, or
    end_child on any way out before that."""
    proc: subprocess.Popen[str] | None = None
    try:
        with held_for_main_thread():  # a signal held here is raised as the block ends: proc is known by then
            proc = subprocess.Popen(command, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                    env=env, **own_group())
    except BaseException:
        if proc is not None:
            end_child(proc)
        raise
    return proc


def finish_child(proc: subprocess.Popen[str], text: str | None = None,
                 timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """What a child of start_child wrote once it ended (after reading `text` on its stdin, if given); its group is
    killed on any way out, as run_child's."""
    try:
        stdout, stderr = proc.communicate(text, timeout=timeout)
    except BaseException:
        end_child(proc)
        raise
    finally:
        _kill_group(proc)  # what it left running in its group once it ended (nothing, normally)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def end_child(proc: subprocess.Popen[str]) -> None:
    """Kill a child of start_child and its group, however far it got."""
    with held_for_main_thread():
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    signal_group(proc)
    proc.wait()


def own_group() -> dict[str, Any]:
    """Popen's arguments that make the child lead a process group of its own (none on Windows, which has none)."""
    if os.name != "posix":
        return {}
    return {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}


def signal_group(proc: subprocess.Popen[Any], sig: int | None = None) -> None:
    """`sig` (SIGKILL when None) to the process group `proc` leads; on Windows, which has no process groups, proc
    itself is ended (TerminateProcess, whatever the signal)."""
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL if sig is None else sig)
        elif proc.poll() is None:
            proc.kill()
    except (ProcessLookupError, PermissionError):  # the group is gone (PermissionError: macOS, a zombie leader)
        pass
