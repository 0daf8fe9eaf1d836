"""`--jobs`: repairs run at once, each in a child process, through public concurrent.futures API only.

A thread pool of `jobs` threads; each thread keeps one child (`python -c ... graphfix.batch.parallel`) for as long
as it has tasks, hands it one pickled task at a time on its stdin and reads the pickled outcome from its stdout, so
that graphfix's imports are paid once per worker, not once per model. Processes, not threads, do the work: the
passes hold the GIL. The child is an ordinary graphfix process (interrupts.install, as the CLI): SIGTERM unwinds a
repair under way, its staging directory removed and its proof child killed.

Each child leads a process group of its own, like the proof's (process/children.py own_group), so that a terminal's
Ctrl-C reaches this process alone. At the end each child's stdin is closed and it exits; on any other way out
(Ctrl-C, SIGTERM, an error here) no further child starts and each one is sent SIGTERM, then SIGKILL after a grace
period: no child survives the run.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import BadInputError, GraphfixError
from ..process.children import own_group, signal_group

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


_LENGTH = struct.Struct(">Q")  # each message: its length, then the pickle


def _send(stream: IO[bytes], data: bytes) -> None:
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes | None:
    """One message; None at the end of the stream (the other side closed it, or died)."""
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        return None
    data = stream.read(_LENGTH.unpack(header)[0])
    return data if len(data) == _LENGTH.unpack(header)[0] else None


class _Child:
    """One worker process and the file its stderr goes to (read only when it dies: a pipe nobody reads while the
    child lives could fill and stop it)."""

    def __init__(self) -> None:
        script = (f"import sys; sys.path.insert(0, {str(PACKAGE_PARENT)!r}); "
                  "from graphfix.batch.parallel import child_main; sys.exit(child_main())")
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self.stderr, **own_group())
        except BaseException:
            self.stderr.close()
            raise

    def run(self, task: Task) -> Outcome:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            _send(self.proc.stdin, pickle.dumps(task))
            answer = _receive(self.proc.stdout)
        except OSError:  # a broken pipe: it died before reading the task
            answer = None
        if answer is None:
            return Outcome(error=ChildFailed(f"a --jobs worker process died ({self.death()}); nothing of its model "
                                             "was written"))
        outcome: Outcome = pickle.loads(answer)
        return outcome

    def death(self) -> str:
        code = self.proc.wait()
        self.stderr.seek(0)
        tail = (self.stderr.read().decode(errors="replace").strip().splitlines() or ["nothing said"])[-1]
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        return f"{how}: {tail}"

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the end of its tasks: it exits
        except OSError:
            pass

    def end(self, grace: float) -> None:
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        signal_group(self.proc)  # what it left in its group, or itself when it did not end
        self.proc.wait()
        for stream in (self.proc.stdout, self.stderr):
            if stream is not None:
                stream.close()


class _Children:
    """Each pool thread's child, and whether the run is stopping (then no new one starts)."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.lock = threading.Lock()
        self.started: list[_Child] = []
        self.stopping = False
        self.own = threading.local()

    def run(self, task: Task) -> Outcome:
        child: _Child | None = getattr(self.own, "child", None)
        if child is None or child.proc.poll() is not None:
            with self.lock:
                if self.stopping:
                    return Outcome(error=ChildFailed("not started: the run was stopping"))
                try:
                    child = self.own.child = _Child()
                except OSError as err:
                    if err.errno == errno.EAGAIN:  # fork's answer at RLIMIT_NPROC
                        raise _process_limit(self.jobs) from None
                    raise
                self.started.append(child)
        return child.run(task)

    def stop(self, *, finished: bool) -> None:
        """`finished`: every task is done, each child is told to exit; else SIGTERM to every child's group, and
        SIGKILL to those still alive after the grace period."""
        with self.lock:
            self.stopping = True
            children = list(self.started)
        for child in children:
            child.close()
            if not finished:
                signal_group(child.proc, signal.SIGTERM)
        for child in children:
            child.end(_STOP_GRACE_SECONDS)


def _process_limit(jobs: int) -> BadInputError:
    return BadInputError(f"cannot start {jobs} --jobs worker processes: the process limit is reached (ulimit -u, "
                         "which counts threads too); use fewer --jobs or raise it")


def _outcome(task: Task) -> Outcome:
    try:
        return Outcome(value=task.function(*task.args))
    except Exception as err:  # (the caller decides what the error means)
        return Outcome(error=err)


def run_tasks(tasks: Sequence[Task], jobs: int, on_outcome: Callable[[int, Outcome], None]) -> None:
    """Run the tasks, `jobs` at once in child processes (one job, or one task: in this process, in order), calling
    on_outcome(index, outcome) in this thread as each finishes. Any way out before every task has finished (an
    error, on_outcome's included, or Ctrl-C) stops every child first."""
    if jobs <= 1 or len(tasks) <= 1:
        for i, task in enumerate(tasks):
            on_outcome(i, _outcome(task))
        return
    children = _Children(jobs)
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="graphfix-jobs")
    finished = False
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
        finished = True
    finally:
        children.stop(finished=finished)
        pool.shutdown(wait=True, cancel_futures=True)


def child_main() -> int:
    """The child: pickled Tasks on stdin, one pickled Outcome on stdout for each, until stdin ends."""
    from ..process import interrupts

    interrupts.install()
    if hasattr(signal, "pthread_sigmask"):  # started from a thread that may have held them blocked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(interrupts.STOPPING))
    tasks = sys.stdin.buffer
    outcomes = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what a library prints goes to stderr, not into the answers
    try:
        while (message := _receive(tasks)) is not None:
            outcome = _outcome(pickle.loads(message))
            if outcome.error is not None:
                outcome = Outcome(error=_picklable(outcome.error))
            _send(outcomes, pickle.dumps(outcome))
    except KeyboardInterrupt:
        return interrupts.exit_status()
    return 0


def _picklable(err: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # (an error type with its own __init__ arguments)
        plain = GraphfixError(str(err))
        plain.exit_code = getattr(err, "exit_code", 2)
        return plain


__all__ = ["ChildFailed", "Outcome", "Task", "child_main", "run_tasks"]
