"""Isolated environments holding one exact onnxruntime release each, created with pip on first use and cached.

Deployments pin old runtimes (the seeds' Rust `ort` links onnxruntime 1.16.3), and a model that decodes in today's
onnxruntime proves nothing about them. Cache: $GRAPHFIX_CACHE or ~/.cache/graphfix, one venv per release and
CPython version (`onnxruntime-1.16.3-py3.11`), made with the interpreter interpreters.py finds for that release,
built in a hidden directory beside its final name and renamed there once complete (marked by `COMPLETE`).

The proof runs there in an isolated interpreter (`python -I`: no PYTHONPATH, no user site, not the current
directory) that sees only that venv's packages and graphfix's own folder (child.py's `BOOT`), never the
site-packages graphfix is installed in: it holds the newer onnxruntime, which would otherwise win.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, ValidationFailedError, raise_if_exhausted
from ..io.portable import owned_by_another
from ..process.children import run_child
from ..process.limits import address_space_limit, on_noexec_mount
from .cases import LoadRequest, Request
from .child import RuntimeChild, take_idle
from .interpreters import Interpreter, find_interpreter
from .runtime_isolation import (
    ignored_pip_settings,
    install_environment,
    is_verified,
    make_private,
    mark_text,
    pip_failure,
    pip_install_command,
    refuse_if_shared,
    site_packages,
    verify_runtime,
)

try:
    import fcntl
except ImportError:  # Windows: no flock locks
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ..targets import TargetRuntime


# Written last into a runtime's venv, before it is renamed into the cache: only a venv holding it is used. A venv
# without it (an older graphfix's, or one a crash left behind) is built again.
COMPLETE = ".graphfix-complete"
# Held locked (flock) by the process building a runtime, inside its hidden build directory: a build directory whose
# mark nobody holds was left by a killed install, and the next install removes it.
BUILDING = ".graphfix-building"
# A build directory without the mark (a killed older graphfix's) counts as abandoned once it is this old.
_UNMARKED_BUILD_SECONDS = 3600
_SET_CACHE = "set GRAPHFIX_CACHE to a directory of your own that graphfix may write to"


def cache_dir() -> Path:
    """$GRAPHFIX_CACHE, else $XDG_CACHE_HOME/graphfix, else ~/.cache/graphfix. Only this cache needs a home
    directory; without one (a service user, a uid with no passwd entry) the error says to set GRAPHFIX_CACHE."""
    if os.environ.get("GRAPHFIX_CACHE"):
        return Path(os.environ["GRAPHFIX_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "graphfix"
    try:
        return Path.home() / ".cache" / "graphfix"
    except (RuntimeError, KeyError):  # no HOME and no passwd entry for this uid
        raise BadInputError(f"no home directory for the onnxruntime cache; {_SET_CACHE}") from None


def _requirements(version: str) -> list[str]:
    # onnxruntime wheels before 1.19 were built against numpy 1.x and fail to import beside numpy 2.
    major, minor = (int(x) for x in version.split(".")[:2])
    return [f"onnxruntime=={version}"] + (["numpy<2"] if (major, minor) < (1, 19) else ["numpy"])


def _cache_error(path: Path, err: OSError) -> BadInputError:
    return BadInputError(f"cannot use the onnxruntime cache {path}: {err.strerror or err}; {_SET_CACHE}")


def _trusted(home: Path) -> bool:
    """A complete venv, owned by this user or root and writable by nobody else: graphfix runs its python, so nobody
    else may have put it there or may add to it."""
    try:
        info = home.stat()
        (home / COMPLETE).stat()
    except FileNotFoundError:
        return False
    except OSError as err:
        raise _cache_error(home, err) from None
    if owned_by_another(info, 0):
        raise BadInputError(f"the onnxruntime cache {home} belongs to uid {info.st_uid}, not to you; {_SET_CACHE}")
    for path in (home, *site_packages(home)):
        refuse_if_shared(path)
    return True


def _usable(home: Path, version: str) -> Path | None:
    """The python of the complete, verified runtime at `home`; None when there is none to use. A runtime whose mark
    predates verification is verified now: a broken one loses its mark, and is rebuilt."""
    python = venv_python(home) if _trusted(home) else None
    if python is None or is_verified(home / COMPLETE):
        return python
    try:
        (home / COMPLETE).write_text(mark_text(version, verify_runtime(python, version)))
    except BadInputError:
        (home / COMPLETE).unlink(missing_ok=True)
        return None
    return python


def venv_python(home: Path) -> Path | None:
    """The interpreter of the venv at `home`: bin/python on POSIX, Scripts/python.exe on Windows."""
    return next((p for p in (home / "bin" / "python", home / "Scripts" / "python.exe") if p.exists()), None)


def runtime_home(version: str) -> Path:
    """Where the venv of onnxruntime==version lives in the cache (made or not)."""
    return cache_dir() / f"onnxruntime-{version}-{find_interpreter(version).tag}"


def runtime_installed(version: str) -> bool:
    """Whether onnxruntime==version is in the cache already: its first use pays for a pip install."""
    return venv_python(runtime_home(version)) is not None


# Told where the venv is being made: `on_install` when this process makes it, `on_wait` when it waits for another
# process making it (a --jobs run, make -j, two terminals): the install happens once, the others wait for it.
InstallNotice = Callable[[str, Path], None]  # (release, where its venv goes)
# Told when an install starts where the caller gave no `on_install`: the CLI says so on stderr (it takes half a
# minute), and only then, so that a run refused before it needs the release says nothing of an install.
install_listener: InstallNotice | None = None


def runtime_python(version: str, *, on_install: InstallNotice | None = None,
                   on_wait: InstallNotice | None = None) -> Path:
    """The python of a venv holding exactly onnxruntime==version; made once, atomically, then reused. Concurrent
    callers (threads, processes) take the release's install lock in turn: the first installs, the others wait and
    then find it made."""
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise BadInputError(f"onnxruntime version must be X.Y.Z, got {version!r}")
    interpreter = find_interpreter(version)
    home = cache_dir() / f"onnxruntime-{version}-{interpreter.tag}"
    refuse_if_shared(home.parent)
    if (python := _usable(home, version)) is not None:
        return python
    try:
        home.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise_if_exhausted(err)
        raise _cache_error(home.parent, err) from None
    refuse_if_shared(home.parent)
    with _install_lock(version, home, on_wait):
        if (python := _usable(home, version)) is not None:
            return python  # made by the process this one waited for
        if (notice := on_install or install_listener) is not None:
            notice(version, home)
        return _make_runtime(home, version, interpreter)


@contextmanager
def _install_lock(version: str, home: Path, on_wait: InstallNotice | None) -> Iterator[None]:
    """An exclusive flock on `.lock-<venv name>` in the cache, held while the venv is made; the kernel drops it
    when its holder dies, however it dies. Where there are no flock locks (Windows), concurrent installs each build
    and the first rename wins (_install_runtime)."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(home.parent / f".lock-{home.name}", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise_if_exhausted(err)
        raise _cache_error(home.parent, err) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(version, home)
            fcntl.flock(fd, fcntl.LOCK_EX)  # a signal meanwhile raises here (the handler runs on EINTR)
        yield
    finally:
        os.close(fd)  # the lock goes with the descriptor


def install_in_progress(home: Path) -> bool:
    """Whether another process holds the install lock of the venv at `home` right now (for saying so: the run then
    waits for it in runtime_python)."""
    if fcntl is None:  # without flock no install is locked
        return False
    try:
        fd = os.open(home.parent / f".lock-{home.name}", os.O_RDONLY)
    except OSError:  # no lock file: nobody has started installing it
        return False
    return _held_by_another(fd)


def _held_by_another(fd: int) -> bool:
    """Whether a live process holds the flock of the open file `fd`; closed here, with a lock just taken."""
    assert fcntl is not None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _make_runtime(home: Path, version: str, interpreter: Interpreter) -> Path:
    try:
        _remove_abandoned_builds(home.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".onnxruntime-{version}-", dir=home.parent))
    except OSError as err:
        raise _cache_error(home.parent, err) from None
    building = None
    try:
        building = _hold_build_mark(staging)
        _build_runtime(staging, version, interpreter)
        _install_runtime(staging, home)
        (home / BUILDING).unlink(missing_ok=True)
    except OSError as err:
        raise_if_exhausted(err)
        raise _cache_error(home.parent, err) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if building is not None:
            os.close(building)
    made_python = venv_python(home)
    if made_python is None:
        raise BadInputError(f"the runtime cache {home} has no interpreter after it was made")
    return made_python


def _hold_build_mark(staging: Path) -> int | None:
    """The build directory's mark, locked for as long as this process lives (the kernel drops the lock when it
    dies, however it dies); None where there are no flock locks (Windows), where no build is ever swept."""
    if fcntl is None:
        return None
    fd = os.open(staging / BUILDING, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _abandoned(build: Path) -> bool:
    """A hidden build directory no live process is building in: its mark unlocked, or no mark and old."""
    try:
        fd = os.open(build / BUILDING, os.O_RDONLY)
    except FileNotFoundError:  # just made (its mark comes next), or a killed older graphfix's
        try:
            return build.lstat().st_mtime < time.time() - _UNMARKED_BUILD_SECONDS
        except OSError:
            return False
    except OSError:
        return False
    return not _held_by_another(fd)  # held: an install in progress


def _remove_abandoned_builds(cache: Path) -> None:
    """Remove what killed installs left in the cache (hidden `.onnxruntime-X-*` build directories), never a build
    in progress. The cache is shared by concurrent runs: a directory another run removes first is simply gone."""
    if fcntl is None:  # without flock no build is marked, so none can be told abandoned
        return
    for entry in cache.iterdir():
        if entry.name.startswith(".onnxruntime-") and entry.is_dir() and not entry.is_symlink() and _abandoned(entry):
            shutil.rmtree(entry, ignore_errors=True)


def _build_runtime(staging: Path, version: str, interpreter: Interpreter) -> None:
    """The venv (made by the chosen interpreter itself), its onnxruntime and the completion mark, in `staging`. An
    interruption kills venv's ensurepip and pip (run_child kills their process group) and the caller removes the
    half-built venv, their temp files with it: their TMPDIR is inside it (ensurepip unpacks its wheels there, and
    a killed one cannot clean up)."""
    temp = staging / ".tmp"
    temp.mkdir()
    env = install_environment(temp)
    made = run_child([str(interpreter.path), "-I", "-m", "venv", str(staging)], env)
    staged_python = venv_python(staging)
    if made.returncode != 0 or staged_python is None:
        tail = (made.stderr.strip().splitlines() or ["no interpreter in it"])[-1]
        raise BadInputError(f"cannot make a venv with {interpreter.path}: {tail}")
    proc = run_child(pip_install_command(staged_python, _requirements(version)), env)
    shutil.rmtree(temp, ignore_errors=True)
    if proc.returncode != 0:
        ignored = ignored_pip_settings()
        said = f" (pip ran isolated, ignoring {', '.join(ignored)})" if ignored else ""
        raise BadInputError(f"cannot install onnxruntime=={version} for Python {interpreter.tag[2:]}: "
                            f"{pip_failure(proc.stderr)}{said}")
    make_private(staging)
    (staging / COMPLETE).write_text(mark_text(version, verify_runtime(staged_python, version)))


def _install_runtime(staging: Path, home: Path) -> None:
    """Rename the complete venv into place. venv scripts hard-code their directory; the interpreter itself does
    not, so a rename is safe for python. An incomplete venv under the name is moved aside first."""
    if home.exists() and not (home / COMPLETE).exists():
        stale = Path(tempfile.mkdtemp(prefix=f".{home.name}-stale-", dir=home.parent))
        try:
            home.rename(stale / home.name)
        finally:
            shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.rename(home)
    except OSError:  # another process made it first
        if not (home / COMPLETE).exists():
            raise


def start_if_installed(release: str | None) -> RuntimeChild | None:
    """A proof process in `release` started now, while other work goes on; None when that release still has to be
    installed (which is said, and done, only once the proof needs it)."""
    idle = take_idle(release)
    if idle is not None:
        return idle
    return RuntimeChild(release) if release is None or runtime_installed(release) else None


def run_in_runtime(request: Request) -> dict[str, Any]:
    """client_loop.main(request) inside the onnxruntime release the request names (this interpreter's when None,
    still in a separate process: a model that crashes onnxruntime must not take graphfix with it). Its answer, or
    a BadInputError."""
    return (take_idle(request.release) or RuntimeChild(request.release)).answer(request)


def answer_of(proc: subprocess.CompletedProcess[str], version: str | None, python: Path) -> dict[str, Any]:
    lines = proc.stdout.strip().splitlines()
    where = f"onnxruntime {version}" if version else "the installed onnxruntime"
    if proc.returncode != 0 or not lines:
        raise _child_failure(proc, where, python if version else None)
    answer: dict[str, Any] = json.loads(lines[-1])
    if answer.get("out_of_memory"):
        raise MemoryError(f"{where}: {answer['error']}")
    if "error" in answer:
        if version and on_noexec_mount(python.parent):
            raise _noexec_error(python.parent.parent)
        raise BadInputError(answer["error"])
    result: dict[str, Any] = answer["result"]
    return result


def _child_failure(proc: subprocess.CompletedProcess[str], where: str, cached: Path | None) -> Exception:
    """What ended the proof's process, named from its exit status: killed by SIGKILL under an address-space limit
    (what the kernel does for memory) is out of memory; a runtime on a noexec mount is that; anything else is the
    signal or exit status, with the last line the process wrote."""
    tail = (proc.stderr.strip().splitlines() or [f"no output, exit {proc.returncode}"])[-1]
    killed = hasattr(signal, "SIGKILL") and proc.returncode == -signal.SIGKILL  # what the kernel does for memory
    if killed and (limit := address_space_limit()) is not None:
        return MemoryError(f"the proof's process was killed under the address-space limit of {limit // 2**20} MB")
    if cached is not None and on_noexec_mount(cached.parent):
        return _noexec_error(cached.parent.parent)
    if proc.returncode < 0:
        return BadInputError(f"the decode loop's process in {where} died of "
                             f"{signal.Signals(-proc.returncode).name}: {tail}")
    return BadInputError(f"the decode loop failed to run in {where}: {tail}")


def _noexec_error(home: Path) -> BadInputError:
    return BadInputError(f"the onnxruntime cache {home} is on a filesystem mounted noexec, where onnxruntime's "
                         f"library cannot be loaded; {_SET_CACHE}")


def load_in_onnxruntime(path: Path, target: TargetRuntime | None = None) -> str:
    """Raise ValidationFailedError unless that onnxruntime (this process's when None) can load the model; returns
    the version that loaded it."""
    try:
        answer = run_in_runtime(LoadRequest(str(Path(path).resolve()), target.release if target else None))
    except BadInputError as err:
        raise ValidationFailedError(str(err)) from None
    version: str = answer["onnxruntime"]
    return version


__all__ = ["RuntimeChild", "answer_of", "cache_dir", "install_in_progress", "load_in_onnxruntime", "run_in_runtime",
           "runtime_home", "runtime_installed", "runtime_python", "start_if_installed"]
