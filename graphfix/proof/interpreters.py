"""Which CPython can hold a given onnxruntime release, and where to find one on this machine.

onnxruntime publishes binary wheels only, for a window of CPython versions per release: 1.16.3 has none for 3.12 or
3.13, which are Ubuntu 24.04's and Homebrew's defaults. A proof on an old release therefore often needs another
interpreter than the one graphfix runs in. It is taken from GRAPHFIX_PYTHON (or the commands' --runtime-python),
else this interpreter when it fits, else the newest fitting one found as `python3.Y` on PATH, in pyenv's versions
directory or through the Windows `py` launcher.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInputError
from ..process.children import run_child

Version = tuple[int, int]

# onnxruntime (major, minor) -> (oldest, newest) CPython with a wheel of its newest patch, measured for
# manylinux x86_64 with `pip index versions onnxruntime --python-version 3.Y --only-binary=:all:` for 3.8-3.14
# (2026-12-04). Other platforms' windows are the same or narrower (macOS arm64 wheels start later).
_CPYTHONS: dict[Version, tuple[Version, Version]] = {
    (1, 14): ((3, 8), (3, 10)),
    (1, 15): ((3, 8), (3, 11)),
    (1, 16): ((3, 8), (3, 11)),
    **{(1, minor): ((3, 8), (3, 12)) for minor in (17, 18, 19)},
    **{(1, minor): ((3, 10), (3, 13)) for minor in (20, 21, 22, 23)},
    **{(1, minor): ((3, 11), (3, 14)) for minor in range(24, 33)},
}
_NEWEST_MEASURED: Version = (3, 14)  # a release that has wheels for it is taken to have them for later CPythons too
ENVIRONMENT = "GRAPHFIX_PYTHON"
# A CPython answers its version in well under a second; one that has not in this long never will (a wrapper waiting
# on a prompt, a hung network mount), and the probe ends it and everything it started.
PROBE_SECONDS = 10.0


@dataclass(frozen=True)
class Interpreter:
    path: Path
    version: Version

    @property
    def tag(self) -> str:
        """`py3.11`: the runtime cache keeps one venv per release and interpreter version."""
        return f"py{self.version[0]}.{self.version[1]}"


def _release_key(release: str) -> Version:
    major, minor = (int(x) for x in release.split(".")[:2])
    return major, minor


def supported_range(release: str) -> tuple[Version, Version] | None:
    """(oldest, newest) CPython that onnxruntime `release` has wheels for; None for a release not measured."""
    return _CPYTHONS.get(_release_key(release))


def has_wheel(release: str, version: Version) -> bool:
    """Whether onnxruntime `release` has a wheel for CPython `version` (assumed for releases not measured: pip
    then says)."""
    window = supported_range(release)
    if window is None:
        return True
    oldest, newest = window
    return oldest <= version <= newest or (newest == _NEWEST_MEASURED and version > newest)


def describe(release: str) -> str:
    """`CPython 3.8-3.11`: the versions onnxruntime `release` has wheels for, as a user reads them."""
    window = supported_range(release)
    if window is None:
        return "the CPython versions on its PyPI page"
    (a, b), (c, d) = window
    return f"CPython {a}.{b}-{c}.{d}" + (" and later" if window[1] == _NEWEST_MEASURED else "")


def probe(path: str | os.PathLike[str]) -> Version | None:
    """The (major, minor) of the CPython at `path`; None when it is not one that runs (a pyenv shim of a version
    not active here exits non-zero)."""
    try:
        proc = run_child([os.fspath(path), "-I", "-c", "import sys; print(*sys.version_info[:2])"],
                         timeout=PROBE_SECONDS)
    except (OSError, subprocess.TimeoutExpired):  # its whole process group is gone by then
        return None
    match = re.fullmatch(r"(\d+) (\d+)", proc.stdout.strip())
    if proc.returncode != 0 or match is None:
        return None
    return int(match[1]), int(match[2])


def _pyenv_versions() -> Path:
    return Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"


def _candidates(minor: Version) -> list[Path]:
    """Where CPython `minor` may be: `python3.Y` on PATH, pyenv's versions (bin/ on POSIX, the root on pyenv-win),
    the Windows `py -3.Y` launcher."""
    name = f"python{minor[0]}.{minor[1]}"
    found: list[Path] = []
    if on_path := shutil.which(name):
        found.append(Path(on_path))
    for home in sorted(_pyenv_versions().glob(f"{minor[0]}.{minor[1]}.*"), reverse=True):
        found += [p for p in (home / "bin" / name, home / "python.exe") if p.exists()]
    if (launcher := shutil.which("py")) is not None:
        try:
            proc = run_child([launcher, f"-{minor[0]}.{minor[1]}", "-c", "import sys; print(sys.executable)"],
                             timeout=PROBE_SECONDS)
        except (OSError, subprocess.TimeoutExpired):
            return found
        if proc.returncode == 0 and proc.stdout.strip():
            found.append(Path(proc.stdout.strip()))
    return found


def _named(release: str, path: str) -> Interpreter:
    version = probe(path)
    if version is None:
        raise BadInputError(f"the runtime interpreter {path} ({ENVIRONMENT} or --runtime-python) does not run as "
                            "a Python")
    if not has_wheel(release, version):
        raise BadInputError(f"onnxruntime {release} has wheels for {describe(release)} only, and the runtime "
                            f"interpreter {path} is {version[0]}.{version[1]}: name one of those")
    return Interpreter(Path(path), version)


def find_interpreter(release: str, named: str | None = None) -> Interpreter:
    """The CPython a venv holding onnxruntime `release` is made with: `named` (else $GRAPHFIX_PYTHON) when given,
    else this one when the release has a wheel for it, else the newest fitting one found on this machine; or a
    BadInputError saying which versions the release supports and how to name one."""
    named = named or os.environ.get(ENVIRONMENT) or None
    if named:
        return _named(release, named)
    current: Version = (sys.version_info[0], sys.version_info[1])
    if has_wheel(release, current):
        return Interpreter(Path(sys.executable), current)
    window = supported_range(release)
    assert window is not None  # has_wheel is True for releases not measured
    for minor in range(window[1][1], window[0][1] - 1, -1):
        for path in _candidates((3, minor)):
            if probe(path) == (3, minor):
                return Interpreter(path, (3, minor))
    raise BadInputError(f"onnxruntime {release} has wheels for {describe(release)} only, this is Python "
                        f"{current[0]}.{current[1]}, and no such python3.Y was found on PATH, in pyenv or through "
                        f"the py launcher: install one, or name it with --runtime-python PATH or {ENVIRONMENT}=PATH")


__all__ = ["ENVIRONMENT", "Interpreter", "describe", "find_interpreter", "has_wheel", "probe", "supported_range"]
