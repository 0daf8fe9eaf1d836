"""graphfix behaves like a package: the API lists itself and is typed at the top level, the version is written once,
`make demo` installs no test or lint tools, and `graphfix.check` takes a model directory as the CLI does."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess

import pytest

import graphfix
from graphfix import CheckResult, check

from ..conftest import ROOT

EXPORT = ROOT / "sample_models" / "exports" / "current-marian-opset21"


def test_dir_of_graphfix_lists_the_api_and_not_its_imports():
    listed = dir(graphfix)

    assert set(graphfix.__all__) == {"__version__", *graphfix._EXPORTS}
    assert set(graphfix.__all__) <= set(listed)
    assert "describe" in listed and "repair" in listed and "check" in listed
    assert not {"Any", "import_module", "TYPE_CHECKING", "annotations"} & set(listed)


def test_type_checkers_see_every_export_from_the_module_that_defines_it():
    """The TYPE_CHECKING imports of graphfix/__init__.py are what mypy users see instead of `Any`: exactly the lazy
    exports, each from the module the lazy import uses."""
    tree = ast.parse((ROOT / "graphfix" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING")
    typed = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names}

    assert typed == graphfix._EXPORTS


def test_the_version_is_written_once():
    project = (ROOT / "pyproject.toml").read_text().split("[project]", 1)[1].split("\n[", 1)[0]  # tomllib: 3.11+

    assert not re.search(r"^version\s*=", project, re.M) and re.search(r'^dynamic = \["version"\]', project, re.M)
    assert re.search(rf"^## {re.escape(graphfix.__version__)}\b", (ROOT / "CHANGELOG.md").read_text(), re.M)


def test_make_demo_installs_no_test_or_lint_tools():
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is needed to read the Makefile's recipes")
    dry = subprocess.run([make, "-n", "-B", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert dry.returncode == 0, dry.stderr
    installs = [line for line in dry.stdout.splitlines() if "pip install" in line]
    assert installs and not any("[test]" in line or "[dev]" in line or "ruff" in line for line in installs), installs


def test_check_accepts_a_model_directory_like_the_cli():
    result = check(EXPORT)

    assert isinstance(result, CheckResult) and not result.ok
    assert [m.path.name for m in result.models] == ["decoder_model_merged.onnx"]
    assert {f.code for f in result.findings} == {"GF101"}
    assert result.to_dict()["models"][0]["findings"]


def test_the_readme_installs_from_what_exists_and_its_hook_pins_a_commit_of_this_repository():
    readme = (ROOT / "README.md").read_text()
    pages = [readme, (ROOT / "docs" / "commands.md").read_text(), (ROOT / "pyproject.toml").read_text()]
    assert not any("OWNER" in page for page in pages)  # no placeholder or invented URL
    assert "pip install ./graphfix" in readme and f"graphfix-{graphfix.__version__}-py3-none-any.whl" in readme
    snippet = next(body for body in re.findall(r"^```yaml\n(.*?)^```", readme, re.M | re.S) if "graphfix-check" in body)
    rev = re.search(r"^\s*rev: ([0-9a-f]{40})$", snippet, re.M)
    assert rev and re.search(r'args: \[--target-ort, "1\.16"\]', snippet)
    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True)
    if shallow.returncode != 0 or shallow.stdout.strip() == "true":
        pytest.skip("a shallow or git-less checkout does not hold the pinned commit")
    hooks = subprocess.run(["git", "show", f"{rev[1]}:.pre-commit-hooks.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert hooks.returncode == 0 and "id: graphfix-check" in hooks.stdout, hooks.stderr
