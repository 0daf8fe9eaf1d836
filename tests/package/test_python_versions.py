"""graphfix installed from its wheel under each CPython this machine has beside the one running the tests (pyenv's
3.10, 3.12, 3.13; CI has them in ~/.pyenv/versions): the core paths - repair of a file, of a directory with external
data, check, validate, split - give the same exit codes and bytes as here. And from 3.13, where onnxruntime 1.16.3
has no wheel, an empty runtime cache still ends in a proof inside 1.16.3 (installed for a 3.8-3.11 found here).

A version is skipped only when its interpreter is absent from the machine. The venvs are made once per module."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from graphfix.proof.interpreters import probe

from ..conftest import ROOT

pytestmark = pytest.mark.slow  # the wheel under every CPython found: make test

VERSIONS = ["3.10", "3.12", "3.13"]
LEGACY_MARIAN = ROOT / "sample_models" / "legacy" / "marian.onnx"
EXPORT = ROOT / "sample_models" / "exports" / "current-marian-opset21"


def interpreter(version: str) -> Path | None:
    """CPython `version` from pyenv's versions, else python3.Y on PATH; None when this machine has neither."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for path in [*sorted(root.glob(f"{version}.*/bin/python{version}"), reverse=True), shutil.which(f"python{version}")]:
        if path and probe(path) == tuple(int(x) for x in version.split(".")):
            return Path(path)
    return None


@pytest.fixture(scope="module")
def wheel(built_wheel) -> Path:
    return built_wheel


@pytest.fixture(scope="module")
def installs(wheel, tmp_path_factory):
    """version -> the `graphfix` command of a venv of that CPython holding the wheel; made on first use."""
    made: dict[str, Path] = {}

    def get(version: str) -> Path:
        if version not in made:
            python = interpreter(version)
            if python is None:
                pytest.skip(f"no CPython {version} on this machine")
            home = tmp_path_factory.mktemp(f"py{version}")
            # Without pip of its own: uv installs into it, from its cache in about 1 s where pip takes 13 s (the
            # wheel as a user's pip installs it is tests/package/test_installed_wheel.py). Like pip --no-compile,
            # uv leaves byte-compiling to the first import.
            subprocess.run([str(python), "-m", "venv", "--without-pip", str(home)], check=True, capture_output=True)
            proc = subprocess.run([sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python",
                                   str(home / "bin" / "python"), str(wheel)], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr[-2000:]
            made[version] = home / "bin" / "graphfix"
        return made[version]

    return get


def run(command: Path | str, *args: object, cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    # Bytecode written (installed --no-compile): under PYTHONDONTWRITEBYTECODE every command would compile onnx,
    # numpy and typer again.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "GRAPHFIX_PYTHON", "PYTHONDONTWRITEBYTECODE")}
    env["GRAPHFIX_CACHE"] = str(cache)
    return subprocess.run([str(command), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=900)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def core_paths(command: Path | str, work: Path, export: Path) -> dict[str, object]:
    """Exit codes and written bytes of repair (file, directory with external data), check, validate and split."""
    out = work / "out"
    out.mkdir()
    cache = work / "cache"
    outcome: dict[str, object] = {
        "repair": run(command, "repair", LEGACY_MARIAN, out / "fixed.onnx", cwd=work, cache=cache).returncode,
        "directory": run(command, "repair", export, out / "export", cwd=work, cache=cache).returncode,
        "check original": run(command, "check", LEGACY_MARIAN, cwd=work, cache=cache).returncode,
        "check repaired": run(command, "check", out / "fixed.onnx", cwd=work, cache=cache).returncode,
        "validate": run(command, "validate", out / "fixed.onnx", cwd=work, cache=cache).returncode,
        "split": run(command, "split", LEGACY_MARIAN, out / "split", cwd=work, cache=cache).returncode,
    }
    outcome["bytes"] = tree(out)
    return outcome


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """The real Optimum export with its encoder's weights in external data (onnx's own converter)."""
    source = tmp_path_factory.mktemp("export") / "opus-mt"
    shutil.copytree(EXPORT, source)
    onnx.save(onnx.load(source / "encoder_model.onnx"), source / "encoder_model.onnx", save_as_external_data=True,
              all_tensors_to_one_file=True, location="encoder_model.onnx_data", size_threshold=0)
    return source


@pytest.fixture(scope="module")
def here(export, tmp_path_factory) -> dict[str, object]:
    """The core paths in the interpreter running the tests, the reference the others are held to."""
    return core_paths(Path(sys.executable).parent / "graphfix", tmp_path_factory.mktemp("here"), export)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_core_paths_give_the_same_exit_codes_and_bytes_under_each_cpython(version, installs, export, here,
                                                                               tmp_path):
    assert here["repair"] == 0 and here["directory"] == 0 and here["check original"] == 1
    outcome = core_paths(installs(version), tmp_path, export)
    assert {k: v for k, v in outcome.items() if k != "bytes"} == {k: v for k, v in here.items() if k != "bytes"}
    assert outcome["bytes"] == here["bytes"]


def test_from_3_13_an_empty_cache_proves_the_target_in_onnxruntime_1_16_3(installs, tmp_path):
    """1.16.3 has no wheel for 3.13: the runtime is made for a CPython 3.8-3.11 found on this machine."""
    cache = tmp_path / "cache"
    out = tmp_path / "fixed.onnx"
    result = run(installs("3.13"), "repair", LEGACY_MARIAN, out, "--target-ort", "1.16", "--validate-on-target",
                 cwd=tmp_path, cache=cache)
    assert result.returncode == 0, result.stderr
    assert re.search(r"proven in onnxruntime 1\.16\.3 \(", result.stdout), result.stdout
    runtimes = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert len(runtimes) == 1 and re.fullmatch(r"onnxruntime-1\.16\.3-py3\.(8|9|10|11)", runtimes[0]), runtimes
    assert out.exists()
