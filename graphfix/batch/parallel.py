"""`--jobs`: repairs run at once, each in a child process of its own, through public concurrent.futures API only.

A thread pool of `jobs` threads; each thread starts one child (`python -c ... graphfix.batch.parallel`), hands it
one pickled task on stdin and reads its pickled outcome from stdout. Processes, not threads, do the work: the passes
hold the GIL. The child is an ordinary graphfix process (interrupts.install, as the CLI): SIGTERM unwinds a repair
under way, its staging directory removed and its proof child killed.

Each child leads a process group of its own, like the proof's (proof/runtimes.run_child), so that a terminal's
Ctrl-C reaches this process alone. On any way out but the end of every task (Ctrl-C, SIGTERM, an error here), no
further child starts and each running one is sent SIGTERM, then SIGKILL after a grace period: no child survives
the run.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInputError, GraphfixError

PACKAGE_PARENT = Path(__file__).resolve().parent.parent.parent
_STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Task:
    """A module-level function of graphfix and its arguments, all picklable, run in a child process."""

    function: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Outcome:
    """What a task returned, or the error it raised (an exception that cannot be pickled comes back as a
    GraphfixError with the same message and exit code)."""

    value: Any = None
    error: BaseException | None = None


class ChildFailed(GraphfixError):
    """A child died without an outcome (killed: the kernel's OOM killer, a kill -9). Exit 2."""


class _Children:
    """The running children, and whether the run is stopping (then no new one starts)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def run(self, task: Task) -> Outcome:
        group: dict[str, Any] = ({} if os.name != "posix" else {"process_group": 0} if sys.version_info >= (3, 11)
                                 else {"preexec_fn": os.setpgrp})
        script = (f"import sys; sys.path.insert(0, {str(PACKAGE_PARENT)!r}); "
                  "from graphfix.batch.parallel import child_main; sys.exit(child_main())")
        with self.lock:
            if self.stopping:
                return Outcome(error=ChildFailed("not started: the run was stopping"))
            try:
                proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **group)
            except OSError as err:
                if err.errno == errno.EAGAIN:  # fork's answer at RLIMIT_NPROC
                    raise _process_limit(self.jobs) from None
                raise
            self.running.add(proc)
        try:
            stdout, stderr = proc.communicate(pickle.dumps(task))
        finally:
            with self.lock:
                self.running.discard(proc)
        if proc.returncode != 0 or not stdout:
            tail = (stderr.decode(errors="replace").strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit {proc.returncode}")
            return Outcome(error=ChildFailed(f"a --jobs worker process died ({how}: {tail}); nothing of its model "
                                             "was written"))
        outcome: Outcome = pickle.loads(stdout)
        return outcome

    def stop(self) -> None:
        """SIGTERM to every running child's group, SIGKILL to those still alive after the grace period."""
        with self.lock:
            self.stopping = True
            procs = list(self.running)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc, signal.SIGKILL)  # what it left in its group, or itself when it did not end
            proc.wait()


def _process_limit(jobs: int) -> BadInputError:
    return BadInputError(f"cannot start {jobs} --jobs worker processes: the process limit is reached (ulimit -u, "
                         "which counts threads too); use fewer --jobs or raise it")


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, sig)
        elif proc.poll() is None:
            proc.terminate()
    except (ProcessLookupError, PermissionError):  # gone already (PermissionError: macOS, a zombie leader)
        pass


def run_tasks(tasks: Sequence[Task], jobs: int, on_outcome: Callable[[int, Outcome], None]) -> None:
    """Run the tasks, `jobs` at once in child processes, calling on_outcome(index, outcome) in this thread as each
    finishes. Any way out before every task has finished (an error, on_outcome's included, or Ctrl-C) stops every
    child first."""
    children = _Children(jobs)
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="graphfix-jobs")
    try:
        pending: dict[Future[Outcome], int] = {}
        for i, task in enumerate(tasks):
            try:
                pending[pool.submit(children.run, task)] = i
            except RuntimeError:  # submit starts the pool's threads: a fresh pool refuses nothing else
                raise _process_limit(jobs) from None
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                on_outcome(pending.pop(future), future.result())
    finally:
        children.stop()
        pool.shutdown(wait=True, cancel_futures=True)


def child_main() -> int:
    """The child: one pickled Task on stdin, its pickled Outcome on stdout."""
    from ..io import interrupts

    interrupts.install()
    if hasattr(signal, "pthread_sigmask"):  # started from a thread that may have held them blocked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(interrupts.STOPPING))
    task: Task = pickle.loads(sys.stdin.buffer.read())
    try:
        outcome = Outcome(value=task.function(*task.args))
    except KeyboardInterrupt:
        return interrupts.exit_status()
    except Exception as err:  # (the parent decides what the error means)
        outcome = Outcome(error=_picklable(err))
    sys.stdout.buffer.write(pickle.dumps(outcome))
    sys.stdout.flush()
    return 0


def _picklable(err: Exception) -> BaseException:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # (an error type with its own __init__ arguments)
        plain = GraphfixError(str(err))
        plain.exit_code = getattr(err, "exit_code", 2)
        return plain


__all__ = ["ChildFailed", "Outcome", "Task", "child_main", "run_tasks"]
