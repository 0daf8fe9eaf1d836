"""The Python API: `from graphfix import ...` names, typed results, documented errors, py.typed in the wheel and
`graphfix --version`."""

from __future__ import annotations

import importlib.metadata
import inspect
import shutil
import subprocess
import sys
import zipfile

import pytest

import graphfix
from graphfix import (
    BadInputError,
    CheckResult,
    DirectoryRepairResult,
    GraphfixError,
    NotAMergedDecoderError,
    RepairRefusedError,
    RepairResult,
    SplitResult,
    ValidationFailedError,
    ValidationResult,
    check,
    repair,
    repair_directory,
    split,
    validate,
    validate_split,
)

from ..conftest import ROOT


def test_every_exported_name_resolves_and_nothing_else_does():
    for name in graphfix.__all__:
        assert getattr(graphfix, name) is not None
    with pytest.raises(AttributeError):
        graphfix.not_a_thing  # noqa: B018


def test_api_functions_are_annotated_with_their_result_types():
    expected = {repair: "RepairResult", check: "CheckResult", validate: "ValidationResult",
                repair_directory: "DirectoryRepairResult", split: "SplitResult", validate_split: "ValidationResult"}
    for function, result in expected.items():
        signature = inspect.signature(function)
        assert signature.return_annotation == result, function.__name__
        assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values()
                   if p.kind is not inspect.Parameter.VAR_KEYWORD), function.__name__
        assert function.__doc__


def test_errors_form_the_documented_hierarchy_with_exit_codes():
    assert issubclass(NotAMergedDecoderError, BadInputError) and issubclass(BadInputError, GraphfixError)
    assert issubclass(RepairRefusedError, GraphfixError) and issubclass(ValidationFailedError, GraphfixError)
    assert [e.exit_code for e in (BadInputError, NotAMergedDecoderError, RepairRefusedError)] == [2, 2, 2]
    assert ValidationFailedError.exit_code == 1
    assert ValidationFailedError("x", validation="v").validation == "v"


def test_results_are_typed_objects_with_the_json_form(marian_legacy, tmp_path):
    repaired = repair(marian_legacy, tmp_path / "fixed.onnx")
    assert isinstance(repaired, RepairResult) and isinstance(repaired.validation, ValidationResult)
    assert repaired.to_dict()["changes"][0]["code"] == "GF101"
    checked = check(tmp_path / "fixed.onnx")
    assert isinstance(checked, CheckResult) and checked.ok
    pair = split(marian_legacy, tmp_path / "split")
    assert isinstance(pair, SplitResult) and pair.decoder.is_file() and pair.validation.ok
    (tmp_path / "model").mkdir()
    shutil.copy(marian_legacy, tmp_path / "model" / "decoder_model_merged.onnx")
    directory = repair_directory(tmp_path / "model", tmp_path / "model-fixed")
    assert isinstance(directory, DirectoryRepairResult) and directory.changed
    assert directory.models[0].result.output == tmp_path / "model-fixed" / "decoder_model_merged.onnx"


def test_library_errors_are_raised_never_printed_or_exited(tmp_path, capsys):
    with pytest.raises(BadInputError, match="no such file"):
        repair(tmp_path / "missing.onnx", tmp_path / "out.onnx")
    with pytest.raises(BadInputError, match="no merged decoder in directory"):
        repair_directory(tmp_path, tmp_path / "out")
    assert capsys.readouterr() == ("", "")


def test_version_is_the_installed_distributions(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"graphfix {importlib.metadata.version('graphfix')}\n"
    assert graphfix.__version__ == importlib.metadata.version("graphfix")


@pytest.mark.parametrize("module", ["graphfix", "graphfix.cli"])
def test_python_dash_m_runs_the_same_command(module):
    run = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (0, f"graphfix {graphfix.__version__}\n", "")


@pytest.mark.slow
def test_the_wheel_ships_py_typed_and_every_module(built_wheel):
    wheel = zipfile.ZipFile(built_wheel)
    names = set(wheel.namelist())
    assert "graphfix/py.typed" in names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "graphfix").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    entry_points = wheel.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "graphfix = graphfix.__main__:main" in entry_points
    metadata = wheel.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Requires-Dist: rich" in metadata
    assert f"Version: {graphfix.__version__}\n" in metadata  # read from graphfix/__init__.py, written nowhere else
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    assert any(n.endswith("licenses/LICENSE") for n in names)
    for classifier in ("Operating System :: POSIX :: Linux", "Operating System :: MacOS",
                       "Operating System :: Microsoft :: Windows", "Programming Language :: Python :: 3.10",
                       "Programming Language :: Python :: 3.13", "Typing :: Typed"):
        assert f"Classifier: {classifier}" in metadata
    assert "OWNER" not in metadata  # no invented URL: the repository has no public home yet
    assert "Provides-Extra: dev" in metadata
