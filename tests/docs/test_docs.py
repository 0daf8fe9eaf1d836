"""The documentation is run, not just read (Polygraphy's habit): every `console` block of README.md and docs/ is
executed on the samples, `graphfix check` lines of the CI snippets too; the findings page is generated from
graphfix's own explanations; the README stays a front door of at most 200 lines whose links resolve."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
EXIT = re.compile(r"#.*\bexit (\d+)")
EXPORT = ROOT / "sample_models" / "exports" / "current-marian-opset21"


def console_commands(page: Path) -> list[tuple[str, int]]:
    """(command, expected exit code) of each `$ ` line of the page's console blocks, in order; a trailing comment
    `# exit N` says the command is meant to exit N (a check that finds something), else 0."""
    commands = []
    for language, body in FENCE.findall(page.read_text(encoding="utf-8")):
        if language != "console":
            continue
        for line in body.splitlines():
            if line.startswith("$ "):
                expected = EXIT.search(line)
                commands.append((line[2:], int(expected[1]) if expected else 0))
    return commands


def ci_commands(page: Path) -> list[str]:
    """The `graphfix` steps of the page's YAML (CI) snippets: a CI job runs them, so the tests do."""
    return [line.split("run:", 1)[1].strip() for language, body in FENCE.findall(page.read_text(encoding="utf-8"))
            if language == "yaml" for line in body.splitlines() if re.match(r"\s*- run: graphfix ", line)]


def workspace(root: Path) -> Path:
    """The names the documentation uses: a legacy Marian merged decoder, and the opset-21 Marian export under the
    names of the seed case and of a product's model directories."""
    root.mkdir()
    shutil.copy(ROOT / "sample_models" / "legacy" / "marian.onnx", root / "decoder_model_merged.onnx")
    for name in ("export", "opus-mt-en-zh", "opus-mt-en-de"):
        shutil.copytree(EXPORT, root / name)
    return root


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


DOCUMENTED = [page for page in PAGES if console_commands(page) or ci_commands(page)]


@pytest.mark.slow  # every command of the docs, run
@pytest.mark.parametrize("page", DOCUMENTED, ids=[p.name for p in DOCUMENTED])
def test_every_command_shown_in_the_page_runs_as_documented(page, tmp_path):
    cwd = workspace(tmp_path / "work")
    for command, expected in console_commands(page):
        done = run(command, cwd)
        assert done.returncode == expected, f"{page.name}: `{command}` exited {done.returncode}:\n{done.stderr}"
    for command in ci_commands(page):
        done = run(command, cwd)
        assert done.returncode in (0, 1), f"{page.name}: `{command}` exited {done.returncode}:\n{done.stderr}"


def test_the_readme_shows_the_seed_recipe_and_runs_it():
    commands = [command for command, _ in console_commands(ROOT / "README.md")]

    assert "graphfix repair --target-ort 1.16 export/ fixed/" in commands
    assert any(c.startswith("graphfix describe fixed/") for c in commands)


def test_the_readme_is_a_front_door_of_at_most_200_lines():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_screen = "\n".join(readme.splitlines()[:40])

    assert len(readme.splitlines()) <= 200
    assert "pip install" in first_screen and "--target-ort 1.16" in first_screen
    for message in ("dimension with value zero", "MatMul dimension mismatch", "cannot broadcast",
                    "Unsupported model IR version: 10", "till opset 19"):
        assert message in readme, message


def test_every_relative_link_of_the_docs_resolves():
    for page in PAGES + [ROOT / "CHANGELOG.md"]:
        prose = FENCE.sub("", page.read_text(encoding="utf-8"))  # code (Go's `NewEmptyTensor[float32](shape)`) links nothing
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", prose):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_the_findings_page_is_generated_from_explains_data():
    generator = runpy.run_path(str(ROOT / "scripts" / "make_findings_doc.py"))

    assert (ROOT / "docs" / "findings.md").read_text(encoding="utf-8") == generator["findings_page"](), \
        "docs/findings.md is stale: run scripts/make_findings_doc.py"
