"""The proof's process: a Python of the proven onnxruntime release that imports numpy and onnxruntime while
graphfix is still reading and writing, then takes one request on stdin (client_loop.serve) and answers on stdout.

It sees only a copy of the few graphfix modules the client loop needs (`CARRIED`), never graphfix's installation:
an installed graphfix sits in a site-packages holding the newer onnxruntime, which would win over an isolated
release's (runtimes.py).

Importing onnxruntime costs a Python a third of a second, which is most of a small model's proof. The command line
therefore starts the installed release's process first thing (`start_early`, from graphfix.__main__, before the
command line itself is imported), when its arguments say a proof in that release will follow; the proof takes it
over (`take_early`), and an unused one is ended with the command (`close_early`). This module imports nothing of
graphfix's heavy stages, so that start costs milliseconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..process.children import end_child, finish_child, start_child

if TYPE_CHECKING:
    from .cases import Request

PACKAGE = Path(__file__).resolve().parent.parent
# The client loop and what it imports: standard library, numpy and onnxruntime beyond these (test_proof checks).
CARRIED = ("__init__.py", "errors.py", "signature.py", "proof/__init__.py", "proof/cases.py", "proof/client_loop.py",
           "proof/paths.py")


class RuntimeChild:
    """The proof's process in the onnxruntime release `release` names (this interpreter's when None), started before
    its request is known. `send` gives it the request, `answer` waits for its answer; `close` ends it however far it
    got (its carried files go with it), and answer does so itself."""

    def __init__(self, release: str | None):
        self.release = release
        if release is None:
            python = Path(sys.executable)
        else:
            from .runtimes import runtime_python

            python = runtime_python(release)
        self.python = python
        self._carried = tempfile.TemporaryDirectory(prefix="graphfix-carried-")
        carried = self._carried.name
        try:
            for name in CARRIED:
                target = Path(carried, "graphfix", name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(PACKAGE / name, target)
            script = (f"import sys; sys.path.insert(0, {carried!r}); from graphfix.proof.client_loop import serve; "
                      "sys.exit(serve())")
            # The child's temporary files (a non-UTF-8 model's alias directory) go inside `carried`, which is
            # removed however the child ended, even killed outright.
            self._proc: subprocess.Popen[str] | None = start_child(
                [str(python), "-I", "-c", script], env={**os.environ, "TMPDIR": carried, "TEMP": carried,
                                                        "TMP": carried}, stdin=subprocess.PIPE)
        except BaseException:
            self._carried.cleanup()
            raise
        self._sent = False

    def send(self, request: Request) -> None:
        """Give the child `request`, which it starts on at once (it must name the child's release)."""
        if request.release != self.release or self._sent or self._proc is None:
            raise ValueError(f"a proof child for onnxruntime {self.release or 'installed'} takes one request of it")
        assert self._proc.stdin is not None
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
        try:
            proc = finish_child(self._proc)
        finally:
            self._proc = None
            self.close()
        return answer_of(proc, self.release, self.python)

    def close(self) -> None:
        if self._proc is not None:
            end_child(self._proc)
            self._proc = None
        self._carried.cleanup()


_early: RuntimeChild | None = None


def start_early() -> None:
    """Start the installed release's proof process now, for the proof the command will run."""
    global _early
    if _early is None:
        _early = RuntimeChild(None)


def take_early(release: str | None) -> RuntimeChild | None:
    """The process start_early started, if it is for `release` and nothing took it yet."""
    global _early
    if release is not None or _early is None:
        return None
    child, _early = _early, None
    return child


def close_early() -> None:
    """End the early process if the command did not use it (it failed first, or proved nothing)."""
    child = take_early(None)
    if child is not None:
        child.close()


__all__ = ["CARRIED", "PACKAGE", "RuntimeChild", "close_early", "start_early", "take_early"]
