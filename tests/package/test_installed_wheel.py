"""graphfix as users install it: the built wheel in a fresh venv, its `graphfix` command run from outside the
source tree. A bug that only shows there has shipped once: the on-target proof ran in the installed onnxruntime
(1.32) instead of the release it named, because the isolated runtime was given site-packages on its path."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import onnx
import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.slow  # the wheel installed into fresh venvs: make test

SEEDS_RUNTIME = "1.16.3"


@pytest.fixture(scope="module")
def installed(tmp_path_factory, built_wheel) -> Path:
    """The `graphfix` command of a fresh venv holding the wheel built from this tree and its dependencies."""
    home = tmp_path_factory.mktemp("installed")
    venv.EnvBuilder(with_pip=True).create(home / "venv")
    # --no-compile: the same files, byte-compiled on first import instead of all of them (sympy's) ahead of time.
    subprocess.run([str(home / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile",
                    "--disable-pip-version-check", str(built_wheel)], check=True, capture_output=True)
    return home / "venv" / "bin" / "graphfix"


def run(installed: Path, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Bytecode written on first import, as a user's Python does (the wheel is installed --no-compile).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")}
    return subprocess.run([str(installed), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


def test_the_installed_command_repairs_and_proves_on_onnxruntime_1_16_3(installed, tmp_path):
    out = tmp_path / "fixed.onnx"
    repaired = run(installed, "repair", ROOT / "sample_models" / "legacy" / "marian.onnx", out, cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    proof = run(installed, "validate", out, "--ort-version", SEEDS_RUNTIME, "--json", cwd=tmp_path)
    assert proof.returncode == 0, proof.stderr
    import json

    document = json.loads(proof.stdout)
    assert document["ok"] and document["onnxruntime"] == SEEDS_RUNTIME
    text = run(installed, "validate", out, "--ort-version", SEEDS_RUNTIME, cwd=tmp_path)
    assert f"(onnxruntime {SEEDS_RUNTIME}, tolerance" in text.stdout


def test_the_installed_proof_on_1_16_3_refuses_what_1_16_3_cannot_load(installed, tmp_path):
    """IR 10 (what onnx >= 1.16 stamps on save) loads in the newest onnxruntime, not in 1.16.3."""
    model = onnx.load(ROOT / "sample_models" / "current" / "marian.onnx")
    model.ir_version = 10
    stamped = tmp_path / "ir10.onnx"
    onnx.save(model, stamped)
    fixed = tmp_path / "fixed.onnx"
    assert run(installed, "repair", stamped, fixed, cwd=tmp_path).returncode == 0  # the newest onnxruntime loads it
    refused = run(installed, "validate", fixed, "--ort-version", SEEDS_RUNTIME, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert f"onnxruntime {SEEDS_RUNTIME} cannot load fixed.onnx" in refused.stderr and "IR version" in refused.stderr


def test_the_installed_command_retargets_with_its_packaged_runtime_tables(installed, tmp_path):
    """The contrib-op table is package data: an install that lost it would fail every --target-ort run."""
    result = run(installed, "repair", ROOT / "sample_models" / "variants" / "marian-o2.onnx", tmp_path / "o.onnx",
                 "--target-ort", "1.16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "GF304 x7" in result.stdout and "loads in onnxruntime 1.16.3" in result.stdout
