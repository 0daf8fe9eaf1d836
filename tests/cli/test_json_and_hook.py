"""The `--json` documents (schema "graphfix/1", every key documented in docs/json-schema.md) and the pre-commit hook, run by
pre-commit itself in a temporary git repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

EXPORT = ROOT / "sample_models" / "exports" / "current-marian"

# The schema, as docs/json-schema.md documents it: key -> type (a dict is a nested object, a list a
# list of such objects, a tuple several allowed types). Keys must match exactly: an undocumented key fails here.
OPTIONAL_STR = (str, type(None))
FINDING = {"code": str, "message": str, "tensor": OPTIONAL_STR, "node": OPTIONAL_STR, "fix": str, "before": OPTIONAL_STR,
           "after": OPTIONAL_STR, "pass": OPTIONAL_STR}
CASE = {"batch": int, "source_length": int, "steps": int, "max_abs_diff": float, "tokens_agree": int,
        "tokens_total": int, "failure": OPTIONAL_STR, "failed_step": (int, type(None)),
        "original_differs": (float, int, type(None))}
COMPARISON = {"max_abs_diff": (float, int, type(None)), "failure": OPTIONAL_STR}
PAIR_COMPARISON = {"max_abs_diff": (float, int), "tokens_agree": int, "tokens_total": int, "failure": OPTIONAL_STR}
VALIDATION = {"model": str, "ok": bool, "onnxruntime": str, "tolerance": float, "max_abs_diff": (float, int),
              "first_failure": OPTIONAL_STR, "cases": [CASE], "original": (COMPARISON, type(None)),
              "encoder": OPTIONAL_STR, "pair": (PAIR_COMPARISON, type(None))}
REPAIR = {"input": str, "output": str, "changed": bool, "changes": [FINDING], "backup": OPTIONAL_STR,
          "validation": (VALIDATION, type(None)), "loaded_on": OPTIONAL_STR,
          "versions": {"before": str, "after": str}, "oldest_onnxruntime": OPTIONAL_STR, "written": bool}
HEADER = {"schema": str, "command": str, "ok": bool}
RELEASE_FLOOR = {"release": OPTIONAL_STR, "refused_by": OPTIONAL_STR, "measured": bool}
TENSOR = {"name": str, "dtype": str, "shape": list, "dims": [str]}
DESCRIBE = {"path": str, "needs_repair": bool, "loads_on": RELEASE_FLOOR, "findings": [FINDING], "tokens": dict,
            "warnings": [str],
            "models": [{"path": str, "kind": str, "versions": str, "loads_on": RELEASE_FLOOR, "inputs": [TENSOR],
                        "outputs": [TENSOR]}],
            "steps": [{"steps": str, "then": str, "feeds": [{"input": str, "dtype": str, "shape": str,
                                                            "value": str}]}]}
REPAIR_DIRECTORY = {"input": str, "output": str, "changed": bool, "linked": [str], "copied": [str], "retargeted": [str],
                    "oldest_onnxruntime": OPTIONAL_STR,
                    "models": [{"path": str, "seconds": (float, int), "encoder": OPTIONAL_STR, **REPAIR}]}
DOCUMENTS = {
    "repair file": {**HEADER, **REPAIR},
    "repair directory": {**HEADER, **REPAIR_DIRECTORY},
    "repair tree": {**HEADER, "input": str, "output": str, "exit_code": int,
                    "summary": {"models": int, "repaired": int, "nothing_to_repair": int, "failed": int},
                    "models": [{"folder": str, "input": str, "output": str, "outcome": str, "ok": bool,
                                "findings": int, "oldest_onnxruntime": OPTIONAL_STR, "seconds": (float, int),
                                "error": OPTIONAL_STR, "exit_code": int,
                                "result": (REPAIR_DIRECTORY, type(None))}]},
    "check": {**HEADER, "exit_code": int, "error": OPTIONAL_STR,
              "results": [{"path": str, "ok": bool, "error": OPTIONAL_STR, "skipped": OPTIONAL_STR,
                                     "findings": [FINDING], "models": list, "oldest_onnxruntime": OPTIONAL_STR}]},
    "describe": {**HEADER, **DESCRIBE},
    "validate file": {**HEADER, **VALIDATION},
    "validate directory": {**HEADER, "models": [VALIDATION]},
    "split": {**HEADER, "input": str, "decoder": str, "decoder_with_past": str, "changes": [FINDING],
              "validation": (VALIDATION, type(None))},
    "error": {**HEADER, "error": str, "exit_code": int, "validation": (VALIDATION, type(None))},
}


def conforms(value, schema, where="$") -> None:
    if isinstance(schema, tuple):
        errors = []
        for option in schema:
            try:
                return conforms(value, option, where)
            except AssertionError as err:
                errors.append(str(err))
        raise AssertionError(" / ".join(errors))
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        assert set(value) == set(schema), f"{where}: keys {sorted(value)} != documented {sorted(schema)}"
        for key, sub in schema.items():
            conforms(value[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        for i, item in enumerate(value):
            conforms(item, schema[0], f"{where}[{i}]")
    else:
        assert isinstance(value, schema) and not (schema is int and isinstance(value, bool)), \
            f"{where}: {value!r} is not {schema.__name__}"


def document(result) -> dict:
    """stdout must be exactly one JSON document: nothing before or after it."""
    parsed = json.loads(result.stdout)
    assert parsed["schema"] == "graphfix/1"
    return parsed


def model_dir(tmp_path: Path, decoder: Path) -> Path:
    root = tmp_path / "model"
    (root / "onnx").mkdir(parents=True)
    shutil.copy(decoder, root / "onnx" / "decoder_model_merged.onnx")
    shutil.copy(EXPORT / "config.json", root / "config.json")
    return root


def test_every_command_prints_one_document_of_the_documented_schema(marian_legacy, repaired, tmp_path, cli):
    runs = {
        "repair file": cli("repair", marian_legacy, tmp_path / "fixed.onnx", "--json"),
        "repair directory": cli("repair", model_dir(tmp_path, marian_legacy), tmp_path / "out", "--json", "-j", "2"),
        "check": cli("check", marian_legacy, repaired(marian_legacy), EXPORT / "encoder_model.onnx",
                     "--ignore-other-models", "--json"),
        "validate file": cli("validate", marian_legacy, "--json"),
        "describe": cli("describe", model_dir(tmp_path / "described", marian_legacy), "--json"),
        "validate directory": cli("validate", tmp_path / "out", "--json"),
        "split": cli("split", marian_legacy, tmp_path / "split", "--json"),
        "error": cli("repair", tmp_path / "missing.onnx", tmp_path / "x.onnx", "--json"),
    }
    exit_codes = {"check": 1, "validate file": 1, "error": 2}
    unreadable = cli("check", marian_legacy, tmp_path / "missing.onnx", "--json")  # exit 2: says why, as any failure
    conforms(document(unreadable), {**DOCUMENTS["check"], "validation": type(None)})  # and the failure row's key
    assert unreadable.exit_code == 2 and document(unreadable)["exit_code"] == 2
    assert "missing.onnx" in document(unreadable)["error"]
    for kind, result in runs.items():
        assert result.exit_code == exit_codes.get(kind, 0), (kind, result.stderr)
        parsed = document(result)
        conforms(parsed, DOCUMENTS[kind], kind)
        assert parsed["command"] == kind.split()[0] if kind != "error" else parsed["command"] == "repair"
    checked = document(runs["check"])["results"]
    assert [r["ok"] for r in checked] == [False, True, True] and checked[2]["skipped"].startswith("not a merged")
    assert document(runs["error"])["exit_code"] == 2 and "no such file" in document(runs["error"])["error"]
    assert runs["error"].stderr.startswith("error: no such file")
    directory = document(runs["repair directory"])
    assert directory["models"][0]["path"] == "onnx/decoder_model_merged.onnx"
    assert directory["models"][0]["output"] == str(tmp_path / "out" / "onnx" / "decoder_model_merged.onnx")
    assert directory["linked"] == [] and directory["copied"] == ["config.json"]  # linked only with --link-data


def test_validate_of_a_model_that_fails_is_one_document_naming_the_first_failure(marian_legacy, cli):
    result = cli("validate", marian_legacy, "--json")
    parsed = document(result)
    assert result.exit_code == 1 and parsed["ok"] is False
    assert parsed["first_failure"].startswith("batch 1, source length 5: step 3: the present->past loop fails")
    assert [case["steps"] for case in parsed["cases"]] == [2, 2]  # every case dies at the next step


def test_the_json_schema_page_documents_every_key_of_the_schema():
    section = (ROOT / "docs" / "json-schema.md").read_text()
    documented = set(re.findall(r"`([a-z_]+)`", section))

    def keys(schema) -> set[str]:
        if isinstance(schema, tuple):
            return set().union(*(keys(s) for s in schema))
        if isinstance(schema, list):
            return keys(schema[0])
        if isinstance(schema, dict):
            return set(schema).union(*(keys(s) for s in schema.values()))
        return set()

    missing = set().union(*(keys(d) for d in DOCUMENTS.values())) - documented
    assert not missing, f"docs/json-schema.md does not document {sorted(missing)}"
    assert '"graphfix/1"' in section


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=graphfix-test", "-c", "user.email=test@graphfix.invalid",
                    "-c", "commit.gpgsign=false", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.slow  # pre-commit builds its hook environment
def test_the_pre_commit_hook_fails_on_a_broken_decoder_and_passes_once_it_is_repaired(marian_legacy, repaired,
                                                                                    tmp_path):
    """pre-commit itself installs the hook from this repository, named in the model repository's
    .pre-commit-config.yaml (pip: the test needs PyPI or a warm pip cache), and runs it on every *.onnx there, the
    encoder included."""
    if shutil.which("git") is None:
        pytest.fail("git is needed to test the pre-commit hook")
    # A snapshot of this checkout (tracked and new files) as a repository pre-commit can install from at a fixed
    # commit, so the second run reuses the hook environment of the first (PRE_COMMIT_HOME).
    hook_repo = tmp_path / "graphfix-repo"
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file() and not name.startswith(("sample_models/", "tests/", "bench/")):
            (hook_repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, hook_repo / name)
    _git(hook_repo, "init", "-q")
    _git(hook_repo, "add", "-A")
    _git(hook_repo, "commit", "-q", "-m", "snapshot")
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=hook_repo, check=True, capture_output=True,
                         text=True).stdout.strip()

    project = tmp_path / "translator"
    (project / "models" / "en-de").mkdir(parents=True)
    shutil.copy(marian_legacy, project / "models" / "en-de" / "decoder_model_merged.onnx")
    shutil.copy(EXPORT / "encoder_model.onnx", project / "models" / "en-de" / "encoder_model.onnx")
    (project / "README.md").write_text("models\n")
    (project / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {hook_repo}\n  rev: {rev}\n  hooks:\n  - id: graphfix-check\n")
    _git(project, "init", "-q")
    _git(project, "add", "-A")
    # PIP_COMPILE=0 (pip's --no-compile): the hook's environment is byte-compiled on first import, not all of it,
    # and that bytecode is written whatever PYTHONDONTWRITEBYTECODE says, as a user's Python writes it.
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
           "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "PRE_COMMIT_COLOR": "never", "PIP_COMPILE": "0"}
    pre_commit = [sys.executable, "-m", "pre_commit", "run", "--all-files"]

    broken = subprocess.run(pre_commit, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "graphfix check (ONNX merged decoders)" in broken.stdout and "Failed" in broken.stdout
    assert "models/en-de/decoder_model_merged.onnx: 9 findings" in broken.stdout
    assert "  GF101 x4   present.{0,1}.encoder.{key,value}: dummy (0, 4, 1, 8) -> Identity(past)" in broken.stdout
    assert "models/en-de/encoder_model.onnx: skipped" in broken.stdout

    shutil.copy(repaired(marian_legacy), project / "models" / "en-de" / "decoder_model_merged.onnx")
    _git(project, "add", "-A")
    fixed = subprocess.run(pre_commit, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "graphfix check (ONNX merged decoders)" in fixed.stdout and "Passed" in fixed.stdout
