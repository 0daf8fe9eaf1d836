"""Isolated environments holding one exact onnxruntime release each, created with pip on first use and cached.

Deployments pin old runtimes (the seeds' Rust `ort` links onnxruntime 1.16.3), and a model that decodes in today's
onnxruntime proves nothing about them. Cache: $GRAPHFIX_CACHE or ~/.cache/graphfix, one venv per release and
CPython version (`onnxruntime-1.16.3-py3.11`), made with the interpreter interpreters.py finds for that release.

The proof runs there in an isolated interpreter (`python -I`: no PYTHONPATH, no user site, not the current
directory) that sees only that venv's packages plus a copy of the few graphfix modules the client loop needs
(`CARRIED`), never graphfix's own installation: an installed graphfix sits in a site-packages holding the newer
onnxruntime, which would otherwise win.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, ValidationFailedError, says_out_of_memory
from .cases import LoadRequest, Request
from .interpreters import find_interpreter

if TYPE_CHECKING:
    from ..targets import TargetRuntime

PACKAGE = Path(__file__).resolve().parent.parent
# The client loop and what it imports: standard library, numpy and onnxruntime beyond these (test_proof checks).
CARRIED = ("__init__.py", "errors.py", "signature.py", "proof/__init__.py", "proof/cases.py", "proof/client_loop.py")


def cache_dir() -> Path:
    return Path(os.environ.get("GRAPHFIX_CACHE") or Path.home() / ".cache" / "graphfix")


def _requirements(version: str) -> list[str]:
    # onnxruntime wheels before 1.19 were built against numpy 1.x and fail to import beside numpy 2.
    major, minor = (int(x) for x in version.split(".")[:2])
    return [f"onnxruntime=={version}"] + (["numpy<2"] if (major, minor) < (1, 19) else ["numpy"])


def venv_python(home: Path) -> Path | None:
    """The interpreter of the venv at `home`: bin/python on POSIX, Scripts/python.exe on Windows."""
    return next((p for p in (home / "bin" / "python", home / "Scripts" / "python.exe") if p.exists()), None)


def runtime_home(version: str) -> Path:
    """Where the venv of onnxruntime==version lives in the cache (made or not)."""
    return cache_dir() / f"onnxruntime-{version}-{find_interpreter(version).tag}"


def runtime_installed(version: str) -> bool:
    """Whether onnxruntime==version is in the cache already: its first use pays for a pip install."""
    return venv_python(runtime_home(version)) is not None


def runtime_python(version: str) -> Path:
    """The python of a venv holding exactly onnxruntime==version; made once, atomically, then reused."""
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise BadInputError(f"onnxruntime version must be X.Y.Z, got {version!r}")
    interpreter = find_interpreter(version)
    home = cache_dir() / f"onnxruntime-{version}-{interpreter.tag}"
    if (python := venv_python(home)) is not None:
        return python
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".onnxruntime-{version}-", dir=home.parent))
    try:
        # Made by the chosen interpreter itself (only the first use of a release pays for it).
        made = subprocess.run([str(interpreter.path), "-m", "venv", str(staging)], capture_output=True, text=True)
        staged_python = venv_python(staging)
        if made.returncode != 0 or staged_python is None:
            tail = (made.stderr.strip().splitlines() or ["no interpreter in it"])[-1]
            raise BadInputError(f"cannot make a venv with {interpreter.path}: {tail}")
        proc = subprocess.run([str(staged_python), "-m", "pip", "install", "--quiet",
                               "--disable-pip-version-check", *_requirements(version)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            reason = next((line for line in reversed(proc.stderr.splitlines()) if line.startswith("ERROR")),
                          "pip failed")
            raise BadInputError(f"cannot install onnxruntime=={version} for Python {interpreter.tag[2:]}: {reason}")
        # venv scripts hard-code their directory; the interpreter itself does not, so a rename is safe for python.
        try:
            staging.rename(home)
        except OSError:  # another process made it first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    made_python = venv_python(home)
    if made_python is None:
        raise BadInputError(f"the runtime cache {home} has no interpreter after it was made")
    return made_python


def _address_space_limit() -> int | None:
    try:
        import resource
    except ImportError:  # Windows: no rlimits, so no such limit
        return None

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def run_in_runtime(request: Request) -> dict[str, Any]:
    """client_loop.main(request) inside the onnxruntime release the request names (this interpreter's when None,
    still in a separate process: a model that crashes onnxruntime must not take graphfix with it). Its answer, or
    a BadInputError."""
    version = request.release
    python = runtime_python(version) if version else Path(sys.executable)
    with tempfile.TemporaryDirectory(prefix="graphfix-carried-") as carried:
        for name in CARRIED:
            target = Path(carried, "graphfix", name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PACKAGE / name, target)
        script = (f"import sys; sys.path.insert(0, {carried!r}); from graphfix.proof.client_loop import main; "
                  "sys.exit(main(sys.argv[1]))")
        proc = subprocess.run([str(python), "-I", "-c", script, request.to_json()], capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    where = f"onnxruntime {version}" if version else "the installed onnxruntime"
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"no output, exit {proc.returncode}"])[-1]
        if says_out_of_memory(proc.stderr):
            raise MemoryError(f"{where}: {tail}")
        if proc.returncode < 0 and (limit := _address_space_limit()):
            # Killed by a signal with nothing said, under an address-space limit: onnxruntime's allocations failing
            # inside C++ end that way (SIGSEGV, SIGABRT), and no bug of the model's kills the process silently.
            raise MemoryError(f"the proof's process died ({signal.Signals(-proc.returncode).name}) under an "
                              f"address-space limit of {limit // 2**20} MB")
        raise BadInputError(f"the decode loop failed to run in {where}: {tail}")
    answer: dict[str, Any] = json.loads(lines[-1])
    if "error" in answer:
        if says_out_of_memory(answer["error"]):  # onnxruntime's session could not allocate: the limit, not the model
            raise MemoryError(f"{where}: {answer['error']}")
        raise BadInputError(answer["error"])
    result: dict[str, Any] = answer["result"]
    return result


def load_in_onnxruntime(path: Path, target: TargetRuntime | None = None) -> str:
    """Raise ValidationFailedError unless that onnxruntime (this process's when None) can load the model; returns
    the version that loaded it."""
    try:
        answer = run_in_runtime(LoadRequest(str(Path(path).resolve()), target.release if target else None))
    except BadInputError as err:
        raise ValidationFailedError(str(err)) from None
    version: str = answer["onnxruntime"]
    return version


__all__ = ["cache_dir", "load_in_onnxruntime", "run_in_runtime", "runtime_home", "runtime_installed", "runtime_python"]
