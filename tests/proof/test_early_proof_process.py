"""The proof's process is started as the command line begins, when its arguments say a proof in the installed
onnxruntime follows, so that importing onnxruntime there overlaps importing the command line and reading the model
here (proof/child.py). The proof takes that process over; one that goes unused ends with the command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphfix.__main__ import _proof_follows

# Runs graphfix's main() and prints, as JSON on its last stderr line, each process it started and whether the
# command line had been imported by then.
TRACED = """
import json, sys
started = []
def hook(event, args):
    if event == "subprocess.Popen":
        started.append({"argv": [str(a) for a in args[1]], "cli_imported": "graphfix.cli" in sys.modules})
sys.addaudithook(hook)
sys.argv = ["graphfix", *sys.argv[1:]]
from graphfix.__main__ import main
try:
    main()
finally:
    sys.stderr.write("\\n" + json.dumps(started) + "\\n")
"""


def traced_graphfix(*args: str | Path, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str],
                                                                                    list[dict[str, object]]]:
    result = subprocess.run([sys.executable, "-c", TRACED, *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=300)
    return result, json.loads(result.stderr.strip().splitlines()[-1])


def test_a_repair_proves_in_the_one_process_started_before_the_command_line_was_imported(marian_legacy, tmp_path):
    result, started = traced_graphfix("repair", marian_legacy, tmp_path / "out.onnx")
    assert result.returncode == 0, result.stderr
    assert "proven in onnxruntime" in result.stdout
    [proof] = started  # the early process was taken over: no second one
    assert proof["cli_imported"] is False


def test_validate_runs_its_proof_in_the_early_process_too(marian_legacy):
    result, started = traced_graphfix("validate", marian_legacy)  # the unrepaired export: its proof fails
    assert result.returncode == 1, result.stderr
    assert "step 3" in result.stdout
    assert [p["cli_imported"] for p in started] == [False]


def test_an_unused_early_process_ends_with_the_command_and_leaves_nothing(tmp_path):
    """A file that is no model: refused before any proof, the process started for it is ended, its carried
    modules (in TMPDIR) removed."""
    bad = tmp_path / "notes.onnx"
    bad.write_text("not a model")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result, started = traced_graphfix("repair", bad, tmp_path / "out.onnx", env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith("error: ")
    assert len(started) == 1 and started[0]["cli_imported"] is False
    assert list(scratch.iterdir()) == []
    survivors = subprocess.run(["pgrep", "-f", str(scratch)], capture_output=True, text=True).stdout
    assert survivors == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.onnx", "tmp"]


def test_a_repair_without_proof_starts_no_process(marian_legacy, tmp_path):
    result, started = traced_graphfix("repair", "--no-validate", marian_legacy, tmp_path / "out.onnx")
    assert result.returncode == 0, result.stderr
    assert started == []


@pytest.mark.parametrize(("args", "follows"), [
    (["repair", "{model}", "out.onnx"], True),
    (["validate", "--json", "{model}"], True),
    (["repair", "--target-ort", "1.16", "{model}", "out.onnx"], True),  # proven in the installed release
    (["repair", "--no-validate", "{model}", "out.onnx"], False),
    (["repair", "--target-ort=1.16", "--validate-on-target", "{model}", "out.onnx"], False),
    (["validate", "--ort-version=1.16.3", "{model}"], False),
    (["repair", "--runtime-python", "/usr/bin/python3", "{model}", "out.onnx"], False),
    (["repair", "{folder}", "out"], False),  # a directory's decoders are proven by their own runs
    (["repair", "missing.onnx", "out.onnx"], False),
    (["check", "{model}"], False),
    (["repair", "--help"], False),
])
def test_the_early_start_follows_only_arguments_that_prove_in_the_installed_release(args, follows, marian_legacy):
    filled = [a.format(model=marian_legacy, folder=marian_legacy.parent) for a in args]
    assert _proof_follows(filled) is follows
