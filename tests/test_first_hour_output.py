"""What a newcomer reads: check says what a file that is not a merged decoder is, names the commands that come next,
validate takes -q like the others, and the first use of an onnxruntime release is announced even in a pipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphfix.errors import BadInputError

ROOT = Path(__file__).resolve().parent.parent
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
    assert plain.stdout.splitlines()[-1] == f"next: graphfix repair {marian_legacy} OUT; graphfix explain GF101"
    targeted = cli("check", "--target-ort", "1.16.3", EXPORT.parent / "current-marian-opset21")
    assert targeted.stdout.splitlines()[-1] == (f"next: graphfix repair --target-ort 1.16 "
                                                f"{EXPORT.parent / 'current-marian-opset21'} OUT; graphfix explain GF101")
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
    assert verbose.exit_code == 1 and len(verbose.stdout.splitlines()) > 4
    assert "exclude each other" in cli("validate", "-q", "-v", marian_legacy).stderr


def test_the_first_use_of_a_runtime_is_announced_on_stderr_in_a_pipe(cli, marian_current, tmp_path, monkeypatch):
    from graphfix.proof import runtimes

    def offline(version: str) -> Path:  # the install itself is not this test's business: it fails at once
        raise BadInputError(f"cannot install onnxruntime=={version}: offline")

    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runtimes, "runtime_python", offline)
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
