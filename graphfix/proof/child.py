"""The proof's process: a Python of the proven onnxruntime release that imports numpy and onnxruntime while
graphfix is still reading and writing, then answers requests read from stdin, one line each (client_loop.serve).

It imports graphfix's package folder as `graphfix`, and nothing beside it (`BOOT`): an installed graphfix sits in a
site-packages holding the newer onnxruntime, which would win over an isolated release's (runtimes.py). Of graphfix
it imports only the client loop and the standard-library modules it names (test_architecture checks).

Importing onnxruntime costs a Python a third of a second, which is most of a small model's proof. So a process is
kept once it has answered, for the next proof in its release (one idle process per release and graphfix process:
a directory's decoders, a --jobs worker's models and a library caller's repairs share it), and the command line
starts the installed release's first thing (`start_idle`, from graphfix.__main__, before the command line itself
is imported) when its arguments say a proof there follows. A proof takes it over (`take_idle`); it ends with its
owner (`close_idle`, also at exit; and on its own once its stdin closes, when the owner was killed), or by itself
after `IDLE_SECONDS` without a request. A process that answered with a failure is ended after it. This module
imports nothing of graphfix's heavy stages, so that starting the process costs milliseconds.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..process.children import end_child, finish_child, start_child

if TYPE_CHECKING:
    from .cases import Request

PACKAGE = Path(__file__).resolve().parent.parent
# The child's first words: graphfix's folder as the package `graphfix` (its __init__ imports only the standard
# library), so that `python -I` sees graphfix's modules without the site-packages beside them.
BOOT = "; ".join([
    "import importlib.util, sys",
    "spec = importlib.util.spec_from_file_location('graphfix', {init!r}, submodule_search_locations=[{package!r}])",
    "sys.modules['graphfix'] = graphfix = importlib.util.module_from_spec(spec)",
    "spec.loader.exec_module(graphfix)",
    "from graphfix.proof.client_loop import serve",
    "sys.exit(serve({idle_seconds}))",
])
# An idle process ends by itself after this long without a request (a library caller's, between its repairs), and
# is taken for a proof only within half of it, so that it never ends just as it is given one.
IDLE_SECONDS = 60.0


def boot_command(python: Path | str) -> list[str]:
    """The command line of a proof process in `python`: isolated (-I); another release's interpreter writes no
    bytecode (-B) into graphfix's installation, which is not its own (its venv's numpy and onnxruntime have theirs,
    written when it was installed), while this one writes it as any import does (an install without bytecode, as
    uv makes, would otherwise compile numpy and onnxruntime for every proof)."""
    boot = BOOT.format(init=str(PACKAGE / "__init__.py"), package=str(PACKAGE), idle_seconds=IDLE_SECONDS)
    flags = ["-I"] if str(python) == sys.executable else ["-I", "-B"]
    return [str(python), *flags, "-c", boot]


class RuntimeChild:
    """The proof's process in the onnxruntime release `release` names (this interpreter's when None), started before
    its request is known. `send` gives it a request, `answer` waits for the answer; `close` ends it however far it
    got. answer ends it too, or keeps it idle for the next proof in its release when it answered."""

    def __init__(self, release: str | None):
        self.release = release
        if release is None:
            python = Path(sys.executable)
        else:
            from .runtimes import runtime_python

            python = runtime_python(release)
        self.python = python
        self._owner = os.getpid()  # a forked copy of this object is not its owner
        self._start()

    def _start(self) -> None:
        # Its stderr, read only when it dies (a pipe nobody reads while it lives could fill and stop it), in a file
        # with no name, so that nothing of it outlives a kill.
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")
        try:
            self._proc: subprocess.Popen[str] | None = start_child(boot_command(self.python), stdin=subprocess.PIPE,
                                                                   stderr=self._stderr)
            self.pid = self._proc.pid
            self._idle_since = time.monotonic()
        except BaseException:
            self._stderr.close()
            raise
        self._sent = False

    def send(self, request: Request) -> None:
        """Give the child `request`, which it starts on at once (it must name the child's release). One that has
        waited for it too long (graphfix wrote a big model meanwhile) may be ending by itself: a new one gets it."""
        if request.release != self.release or self._sent or self._proc is None:
            raise ValueError(f"a proof child for onnxruntime {self.release or 'installed'} takes its release's "
                             "requests, one at a time")
        if not self._fresh():
            self.close()
            self._start()
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(request.to_json() + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:  # it died already: answer() says how
            pass
        self._sent = True

    def answer(self, request: Request | None = None) -> dict[str, Any]:
        """The answer to `request` (sent now), or to the one sent before; a BadInputError when it fails."""
        from .runtimes import answer_of

        if request is not None:
            self.send(request)
        if self._proc is None or not self._sent:
            raise ValueError("the proof child was asked nothing")
        assert self._proc.stdout is not None
        try:
            line = self._proc.stdout.readline()  # "" once it died without answering
            if not line:
                proc = finish_child(self._proc)
                self._stderr.seek(0)
                proc.stderr = self._stderr.read()
            else:
                proc = subprocess.CompletedProcess(self._proc.args, 0, line, "")
            answer = answer_of(proc, self.release, self.python)
        except BaseException:
            self.close()
            raise
        self._sent = False
        self._idle_since = time.monotonic()
        _keep_idle(self)
        return answer

    def close(self) -> None:
        if self._proc is not None:
            ended_by_itself = self._proc.poll() == 0  # and removed its temporary folder (client_loop.serve)
            end_child(self._proc)
            self._proc = None
            if not ended_by_itself:  # killed, here or by the kernel: its folder, named for its pid, is left to us
                for scratch in glob.glob(os.path.join(tempfile.gettempdir(), f"graphfix-proof-{self.pid}-*")):
                    shutil.rmtree(scratch, ignore_errors=True)
        self._stderr.close()

    def _alive(self) -> bool:
        return self._owner == os.getpid() and self._proc is not None and self._proc.poll() is None

    def _fresh(self) -> bool:
        return time.monotonic() - self._idle_since < IDLE_SECONDS / 2


# One idle process per release (None: the installed one), each kept by the proof that last used it.
_idle: dict[str | None, RuntimeChild] = {}
_idle_lock = threading.Lock()


def start_idle() -> None:
    """Start the installed release's proof process now, for the proof the command will run."""
    with _idle_lock:
        if None not in _idle:
            _idle[None] = RuntimeChild(None)


def take_idle(release: str | None) -> RuntimeChild | None:
    """The idle process of `release`, if it is alive and its interpreter is still the one that release resolves to
    (the cache or GRAPHFIX_PYTHON may have changed since); one that is not is ended here."""
    with _idle_lock:
        child = _idle.pop(release, None)
    if child is None or child._owner != os.getpid():
        return None
    if child._alive() and child._fresh() and child.python == _interpreter_of(release):
        return child
    child.close()
    return None


def _interpreter_of(release: str | None) -> Path | None:
    if release is None:
        return Path(sys.executable)
    from .runtimes import runtime_home, venv_python

    return venv_python(runtime_home(release))


def _keep_idle(child: RuntimeChild) -> None:
    if child._alive():
        with _idle_lock:
            if child.release not in _idle:
                _idle[child.release] = child
                return
    child.close()


def close_idle() -> None:
    """End every idle process."""
    with _idle_lock:
        children = list(_idle.values())
        _idle.clear()
    for child in children:
        if child._owner == os.getpid():
            child.close()


atexit.register(close_idle)


__all__ = ["BOOT", "PACKAGE", "RuntimeChild", "boot_command", "close_idle", "start_idle", "take_idle"]
