"""Isolated environments holding one exact onnxruntime release each, created with pip on first use and cached.

Deployments pin old runtimes (the seeds' Rust `ort` links onnxruntime 1.16.3), and a model that decodes in today's
onnxruntime proves nothing about them. Cache: $GRAPHFIX_CACHE or ~/.cache/graphfix, one venv per version.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import BadInputError


def cache_dir() -> Path:
    return Path(os.environ.get("GRAPHFIX_CACHE") or Path.home() / ".cache" / "graphfix")


def _requirements(version: str) -> list[str]:
    # onnxruntime wheels before 1.19 were built against numpy 1.x and fail to import beside numpy 2.
    major, minor = (int(x) for x in version.split(".")[:2])
    return [f"onnxruntime=={version}"] + (["numpy<2"] if (major, minor) < (1, 19) else ["numpy"])


def runtime_python(version: str) -> Path:
    """The python of a venv holding exactly onnxruntime==version; made once, atomically, then reused."""
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise BadInputError(f"onnxruntime version must be X.Y.Z, got {version!r}")
    home = cache_dir() / f"onnxruntime-{version}"
    python = home / "bin" / "python"
    if python.exists():
        return python
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".onnxruntime-{version}-", dir=home.parent))
    try:
        import venv  # only the first use of a release pays for it

        venv.EnvBuilder(with_pip=True, symlinks=True).create(staging)
        proc = subprocess.run([str(staging / "bin" / "python"), "-m", "pip", "install", "--quiet",
                               "--disable-pip-version-check", *_requirements(version)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            reason = next((line for line in reversed(proc.stderr.splitlines()) if line.startswith("ERROR")),
                          "pip failed")
            raise BadInputError(f"cannot install onnxruntime=={version}: {reason}")
        # venv scripts hard-code their directory; the interpreter itself does not, so a rename is safe for python.
        try:
            staging.rename(home)
        except OSError:  # another process made it first
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return python


def full_release(target: str | None) -> str | None:
    """`1.16` -> the newest 1.16.x, the release whose wheel a proof on that target installs."""
    from .ort_targets import LATEST_PATCH, ort_limits

    if target is None:
        return None
    ort_limits(target)  # refuses releases the table does not know
    return target if target.count(".") == 2 else LATEST_PATCH[tuple(int(x) for x in target.split("."))]


_LOAD = "import sys, onnxruntime as o\ntry:\n o.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n" \
        "except Exception as e:\n print(' '.join(str(e).split())[:300]); sys.exit(1)"


def load_in_onnxruntime(path: Path, release: str | None = None) -> None:
    """Raise ValidationFailedError unless that onnxruntime (this process's when None) can load the model."""
    from .errors import ValidationFailedError

    python = runtime_python(release) if release else Path(sys.executable)
    proc = subprocess.run([str(python), "-c", _LOAD, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        version = release or "installed"
        raise ValidationFailedError(f"onnxruntime {version} cannot load the output: {proc.stdout.strip()}")


__all__ = ["cache_dir", "full_release", "load_in_onnxruntime", "runtime_python"]
