"""What a newcomer reads: check says what a file that is not a merged decoder is, names the commands that come next,
validate takes -q like the others, and the first use of an onnxruntime release is announced even in a pipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphfix.errors import BadInputError
from graphfix.proof import cases

from ..conftest import drain_pty

ROOT = Path(__file__).resolve().parents[2]
EXPORT = ROOT / "sample_models" / "exports" / "current-marian"


def test_check_on_an_encoder_says_what_it_is_instead_of_unreadable(cli):
    result = cli("check", EXPORT / "encoder_model.onnx")
    assert result.exit_code == 2  # documented: not a merged decoder is refused; --ignore-other-models skips it
    assert "unreadable" not in result.stdout
    assert result.stdout.startswith("checked 1 file: 1 not a merged decoder;")
    assert "not a merged decoder (an encoder, " in result.stderr and "nothing to repair" in result.stderr
    split = cli("check", EXPORT / "decoder_with_past_model.onnx")
    assert "(a decoder with past, as split exports have it, " in split.stderr
    skipped = cli("check", EXPORT / "encoder_model.onnx", "--ignore-other-models")
    assert skipped.exit_code == 0 and "skipped (not a merged decoder (an encoder" in skipped.stdout


def test_check_with_findings_names_the_repair_and_the_explanation_that_come_next(cli, marian_legacy):
    plain = cli("check", marian_legacy)
    assert plain.exit_code == 1
    assert plain.stdout.splitlines()[-2:] == [f"next: graphfix repair {marian_legacy} OUT",
                                              "next: graphfix explain GF101"]
    targeted = cli("check", "--target-ort", "1.16.3", EXPORT.parent / "current-marian-opset21")
    assert targeted.stdout.splitlines()[-2:] == [
        f"next: graphfix repair --target-ort 1.16 {EXPORT.parent / 'current-marian-opset21'} OUT",
        "next: graphfix explain GF101"]
    assert "next:" not in cli("check", "-q", marian_legacy).stdout
    repaired = cli("check", EXPORT / "decoder_model.onnx", "--ignore-other-models")
    assert "next:" not in repaired.stdout


def test_validate_takes_quiet_and_verbose_like_the_other_commands(cli, marian_legacy):
    quiet = cli("validate", "-q", marian_legacy)
    assert quiet.exit_code == 1
    assert quiet.stdout.splitlines() == [line for line in quiet.stdout.splitlines() if line]  # no blank lines
    assert len(quiet.stdout.splitlines()) == 1
    assert quiet.stdout.startswith(f"{marian_legacy}: FAILED: batch 1, source length 5, step 3")
    verbose = cli("validate", "-v", marian_legacy)
    assert verbose.exit_code == 1 and len(verbose.stdout.splitlines()) == 2 + len(cases.BATCHES)  # a line a case
    assert "exclude each other" in cli("validate", "-q", "-v", marian_legacy).stderr


def test_the_first_use_of_a_runtime_is_announced_on_stderr_in_a_pipe(cli, marian_current, tmp_path, monkeypatch):
    from graphfix.proof import runtimes

    def offline(staging: Path, version: str, interpreter: object) -> None:  # the install itself is not this
        raise BadInputError(f"cannot install onnxruntime=={version}: offline")  # test's business: it fails at once

    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runtimes, "_build_runtime", offline)
    home = runtimes.runtime_home("1.16.3")
    for args in (["validate", marian_current, "--ort-version", "1.16"],
                 ["repair", marian_current, tmp_path / "out.onnx", "--target-ort", "1.16"],
                 ["split", marian_current, tmp_path / "split", "--ort-version", "1.16"]):
        result = cli(*args)
        lines = result.stderr.splitlines()
        assert lines[0] == f"installing onnxruntime 1.16.3 into {home} (first use)", (args, result.stderr)
        assert lines[-1].startswith("error: ") and "offline" in lines[-1], (args, result.stderr)


@pytest.mark.parametrize("args", [["--skip-target-load"], []])
def test_a_runtime_in_the_cache_or_not_needed_is_not_announced(cli, marian_current, tmp_path, monkeypatch, args):
    from graphfix.proof import runtimes

    if not args:  # in the cache: pretend it is, whatever this machine holds
        monkeypatch.setattr(runtimes, "runtime_installed", lambda version: True)
    else:
        monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))
    result = cli("repair", marian_current, tmp_path / "out.onnx", "--target-ort", "1.16", "--no-validate", *args)
    assert "installing onnxruntime" not in result.stderr


def test_the_bar_advances_through_each_step_and_a_single_file_bar_fills(cli, marian_legacy, tmp_path, monkeypatch):
    from graphfix.cli import commands, progress

    seen: list[tuple[str, float, float | None]] = []

    class Recorded(progress.FileProgress):
        def __call__(self, name: str, step: str, nbytes: int = 0) -> None:
            super().__call__(name, step, nbytes)
            task = self._progress.tasks[0]
            seen.append((step, task.completed, task.total))

    monkeypatch.setattr(commands, "progress_wanted", lambda **_: True)
    monkeypatch.setattr(progress, "FileProgress", Recorded)
    result = cli("repair", marian_legacy, tmp_path / "out.onnx")
    assert result.exit_code == 0, result.stderr
    steps = [step for step, _, _ in seen]
    assert steps[:4] == ["reading", "repairing", "writing", "validating"] and steps[-1] == "done", steps
    completed = [done for _, done, _ in seen]
    assert completed == sorted(completed) and len(set(completed)) >= 4  # it moves at every step, never back
    assert completed[-1] == seen[-1][2] == marian_legacy.stat().st_size  # full at the end


def _export_with_onnx_folder(root: Path, decoder: Path) -> Path:
    """The onnx-community layout, whose `onnx/decoder_model_merged.onnx` is the name a wide table used to cut."""
    import shutil

    (root / "onnx").mkdir(parents=True)
    shutil.copy(decoder, root / "onnx" / "decoder_model_merged.onnx")
    shutil.copy(EXPORT / "config.json", root / "config.json")
    return root


def test_finding_lines_fit_80_columns_wrapping_between_words(cli, tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copytree(EXPORT.parent / "current-marian-opset21", "m")
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("check", "--target-ort", "1.16", "m")
    lines = result.stdout.splitlines()
    assert result.exit_code == 1 and max(map(len, lines)) <= 80, lines
    at = next(i for i, line in enumerate(lines) if line.startswith("  GF101 x4   present.{0,1}.encoder.{key,value}: "))
    assert lines[at + 1] == " " * 13 + "Identity(past)"  # the rest of the line, under its pattern, the word whole
    assert "..." not in result.stdout
    monkeypatch.delenv("COLUMNS")
    assert any(len(line) > 80 and "-> Identity(past)" in line for line in cli("check", "m").stdout.splitlines())


def test_the_directory_table_stacks_its_rows_in_80_columns_without_cutting_names(cli, marian_legacy, tmp_path,
                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    _export_with_onnx_folder(tmp_path / "m", marian_legacy)
    monkeypatch.setenv("COLUMNS", "80")
    result = cli("repair", "--no-validate", "m", "o")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    table = lines[lines.index("m -> o"):next(i for i, line in enumerate(lines) if line.startswith("repaired "))]
    assert max(map(len, table)) <= 80, table
    assert "onnx/decoder_model_merged.onnx" in table and "  findings  GF101x4 GF103 GF104x4" in table, table
    assert not any("…" in line or "..." in line for line in table)
    monkeypatch.setenv("COLUMNS", "200")  # wide enough: the table as it was, one row per model
    wide = cli("repair", "--no-validate", "m", "o2").stdout.splitlines()
    assert any(line.split()[:2] == ["onnx/decoder_model_merged.onnx", "GF101x4"] for line in wide), wide


def test_on_an_80_column_terminal_the_table_stacks(marian_legacy, tmp_path):
    import os
    import pty
    import subprocess
    import sys

    source = _export_with_onnx_folder(tmp_path / "m", marian_legacy)
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "COLUMNS")} | {"TERM": "xterm", "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "graphfix", "repair", "--no-validate", str(source),
                           str(tmp_path / "out")], stdout=secondary, stderr=subprocess.DEVNULL, env=env, timeout=120)
    os.close(secondary)
    drawn = drain_pty(primary)
    lines = drawn.decode().replace("\r\n", "\n").splitlines()
    assert proc.returncode == 0
    assert "onnx/decoder_model_merged.onnx" in lines and "…" not in drawn.decode(), lines
    title = lines.index(f"{source} -> {tmp_path / 'out'}")  # paths: as long as they are
    table = lines[title + 1:next(i for i, line in enumerate(lines) if line.startswith("repaired "))]
    assert max(map(len, lines[:title] + table)) <= 80, lines


@pytest.mark.parametrize("command, option", [("repair", "--target-ort"), ("check", "--target-ort"),
                                             ("split", "--target-ort"), ("split", "--ort-version"),
                                             ("validate", "--ort-version")])
def test_every_option_naming_a_release_takes_X_Y(cli, tmp_path, command, option):
    missing = tmp_path / "missing.onnx"
    outputs = [tmp_path / "out"] if command in ("repair", "split") else []
    taken = cli(command, option, "1.16", missing, *outputs)
    assert taken.exit_code == 2 and "no such file" in taken.stderr, taken.stderr  # the release was fine
    refused = cli(command, option, "1.16.x", missing, *outputs)
    assert refused.exit_code == 2 and "unknown onnxruntime release" in refused.stderr, refused.stderr


def test_a_long_onnxruntime_reason_keeps_the_part_that_says_what_to_change():
    from graphfix.proof.client_loop import ort_reason

    node = "/model/decoder/layers.11/encoder_attn/" + "k_proj/" * 12 + "MatMul"
    tensor = node.replace("MatMul", "MatMul_output_0")
    message = (f"[ONNXRuntimeError] : 1 : FAIL : Load model from /models/m/decoder_model_merged.onnx failed:"
               f"Type Error: Type (tensor(float16)) of output arg ({tensor}) of node ({node}) does not match "
               f"expected type (tensor(float)).")
    reason = ort_reason(RuntimeError(message))
    assert len(reason) > 300 and reason.endswith("does not match expected type (tensor(float)).")
    assert "Load model from" not in reason
