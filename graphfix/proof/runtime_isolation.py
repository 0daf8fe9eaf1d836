"""What keeps the runtime cache (runtimes.py) the user's alone and the same whatever their environment.

graphfix runs the python of a cached venv in every later proof, so the cache must be one nobody else can write to
(created 0700, refused when found writable by group or others), and what was installed there must not depend on the
shell it was first installed from: pip runs `--isolated` in an environment without PYTHONPATH, PYTHONHOME, user
site-packages, PIP_* variables or the user's pip.conf (a numpy pip sees on PYTHONPATH would otherwise count as
installed, leaving a venv without it); only the settings that say where packages come from are passed on. A venv
counts as complete only once its own python has imported onnxruntime and numpy at the expected versions; the
completion mark records that, and a venv whose mark does not (an older graphfix's) is verified again, and rebuilt
when broken.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from ..errors import BadInputError, one_line
from ..io.portable import writable_by_others
from ..process.children import run_child

VERIFIED = "verified"
_PYTHON_STATE = ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONSTARTUP", "PYTHONSAFEPATH", "PYTHONNOUSERSITE",
                 "VIRTUAL_ENV", "__PYVENV_LAUNCHER__")
_SET_CACHE = "set GRAPHFIX_CACHE to a directory of your own that graphfix may write to"
VERIFY_SECONDS = 120.0  # importing onnxruntime from a cold disk: seconds; a hung import is a broken runtime


# The pip settings that say where packages come from (an index or mirror, a wheel folder, a proxy and the CA that
# signs it, a timeout): forwarded as options, or a user behind a mirror could not install at all. Every other PIP_*
# (PIP_TARGET, PIP_USER, PIP_PREFIX, PIP_NO_DEPS, ...) would change what is installed or where, and is ignored.
_SOURCE_OPTIONS = {"PIP_INDEX_URL": "--index-url", "PIP_EXTRA_INDEX_URL": "--extra-index-url",
                   "PIP_FIND_LINKS": "--find-links", "PIP_CERT": "--cert", "PIP_CLIENT_CERT": "--client-cert",
                   "PIP_TRUSTED_HOST": "--trusted-host", "PIP_PROXY": "--proxy", "PIP_DEFAULT_TIMEOUT": "--timeout",
                   "PIP_TIMEOUT": "--timeout", "PIP_RETRIES": "--retries"}
_MANY = frozenset({"PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST"})  # space-separated lists


def ignored_pip_settings() -> list[str]:
    """The PIP_* variables of the user's environment that an install ignores (said when it fails)."""
    return sorted(k for k in os.environ if k.startswith("PIP_") and k not in _SOURCE_OPTIONS)


def _source_options() -> list[str]:
    options: list[str] = []
    for variable, option in _SOURCE_OPTIONS.items():
        value = os.environ.get(variable, "").strip()
        for item in (value.split() if variable in _MANY else [value] if value else []):
            options += [option, item]
    return options


def install_environment(temp: Path) -> dict[str, str]:
    """os.environ without what steers Python or pip from outside (PYTHONPATH and the like, every PIP_*), user
    site-packages off; temp files in `temp`. pip itself runs --isolated (pip_install_command): no PIP_* variable
    and no user pip.conf, the machine's own pip.conf only (an administrator's CA or mirror)."""
    env = {k: v for k, v in os.environ.items() if k not in _PYTHON_STATE and not k.startswith("PIP_")}
    return {**env, "PYTHONNOUSERSITE": "1", "TMPDIR": str(temp), "TEMP": str(temp), "TMP": str(temp)}


def pip_install_command(python: Path, requirements: list[str]) -> list[str]:
    """--no-compile: byte-compiling every file of onnxruntime's dependencies (sympy's thousands) took most of an
    install's time; verify_runtime's import compiles what a proof imports."""
    return [str(python), "-I", "-m", "pip", "install", "--isolated", "--quiet", "--disable-pip-version-check",
            "--no-input", "--no-compile", *_source_options(), *requirements]


def pip_failure(stderr: str) -> str:
    """pip's reason whole, as one line: every line it wrote but its upgrade notices (an invalid pip.conf, a network
    error and a resolver conflict all say why on lines of their own, not only on ERROR lines)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("[notice]")]
    return one_line(" ".join(lines), limit=None) or "pip failed without a word"


def mark_text(version: str, numpy_version: str) -> str:
    return f"onnxruntime=={version} numpy=={numpy_version} {VERIFIED}\n"


def verify_runtime(python: Path, version: str) -> str:
    """The numpy version of the venv whose `python` imports onnxruntime==version and numpy; BadInputError saying
    what it lacks otherwise. The import writes their bytecode, whatever PYTHONDONTWRITEBYTECODE says: the proof's
    process in it writes none (child.boot_command)."""
    script = "import json, numpy, onnxruntime; print(json.dumps([onnxruntime.__version__, numpy.__version__]))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = run_child([str(python), "-I", "-c", script], env, timeout=VERIFY_SECONDS)
    try:
        found, numpy_version = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise BadInputError(f"the runtime {python.parent.parent} does not import onnxruntime and numpy: "
                            f"{one_line(reason)}") from None
    if found != version:
        raise BadInputError(f"the runtime {python.parent.parent} holds onnxruntime {found}, not {version}")
    return str(numpy_version)


def is_verified(mark: Path) -> bool:
    """Whether the completion mark at `mark` records a verified runtime (this graphfix's, not an older one's)."""
    try:
        return mark.read_text(encoding="utf-8").rstrip().endswith(VERIFIED)
    except (OSError, UnicodeDecodeError):
        return False


def refuse_if_shared(path: Path) -> None:
    """Refuse a cache directory (or a runtime, or its site-packages) that group or others may write to: anyone could
    put a .pth file or a module there that every later proof runs."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as err:
        raise BadInputError(f"cannot use the onnxruntime cache {path}: {err.strerror or err}; {_SET_CACHE}") from None
    if writable_by_others(info):
        mode = stat.S_IMODE(info.st_mode)
        raise BadInputError(f"the onnxruntime cache {path} is writable by others (mode {mode:o}): anyone could put "
                            f"code there that every proof runs; chmod go-w {path}, or {_SET_CACHE}")


def site_packages(home: Path) -> list[Path]:
    return [*home.glob("lib/python3*/site-packages"), *home.glob("Lib/site-packages")]


def make_private(home: Path) -> None:
    """A new runtime writable by this user alone, whatever the umask it was built under."""
    home.chmod(0o700)
    for path in site_packages(home):
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o022)


__all__ = ["install_environment", "is_verified", "make_private", "mark_text", "pip_failure", "pip_install_command",
           "refuse_if_shared", "site_packages", "verify_runtime"]
