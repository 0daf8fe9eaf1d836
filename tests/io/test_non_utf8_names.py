"""Names are bytes: a file or folder name holding bytes that are not UTF-8 (any a Linux filesystem allows) is
repaired, checked and validated like any other. onnxruntime and onnx.checker take paths as UTF-8 strings, so
graphfix opens such a model through an alias of UTF-8 names, its external data resolved beside it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import onnx
import pytest

from ..process.test_interruption_and_limits import graphfix_command, run_graphfix

MARIAN = Path(__file__).resolve().parents[2] / "sample_models" / "legacy" / "marian.onnx"


def bytes_path(directory: Path, *names: bytes) -> Path:
    return Path(os.fsdecode(os.path.join(os.fsencode(directory), *names)))


@pytest.fixture
def model_named_ff(tmp_path) -> Path:
    model = bytes_path(tmp_path, b"model\xff.onnx")
    shutil.copyfile(MARIAN, model)
    return model


def assert_one_clean_run(result, code: int = 0) -> None:
    assert result.returncode == code, result.stderr
    assert "error" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_model_whose_name_is_not_utf8_is_repaired_and_proven(model_named_ff, tmp_path):
    out = bytes_path(tmp_path, b"fixed\xfd.onnx")
    assert_one_clean_run(run_graphfix("repair", model_named_ff, out))
    again = run_graphfix("repair", model_named_ff, out, "--force")
    assert "proven in onnxruntime" in again.stdout and "fixed\\xfd.onnx" in again.stdout  # escaped, as `ls -b`
    assert_one_clean_run(run_graphfix("check", out))
    assert_one_clean_run(run_graphfix("validate", out))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".graphfix-")]


def test_a_model_whose_name_is_not_utf8_is_validated_not_refused(model_named_ff):
    result = run_graphfix("validate", model_named_ff)
    assert result.returncode == 1, result.stderr  # the unrepaired export fails the plain loop: a verdict, not an error
    assert "FAILED" in result.stdout and "cannot load" not in result.stderr


def test_a_folder_whose_name_is_not_utf8_holds_a_model_with_external_data(tmp_path):
    made = tmp_path / "export"
    made.mkdir()
    onnx.save(onnx.load(MARIAN), made / "decoder_model_merged.onnx", save_as_external_data=True,
              location="weights.bin", size_threshold=0)
    folder = bytes_path(tmp_path, b"export\xfe")
    made.rename(folder)
    out = folder / "fixed.onnx"
    result = run_graphfix("repair", folder / "decoder_model_merged.onnx", out)
    assert_one_clean_run(result)
    assert "proven in onnxruntime" in result.stdout
    assert_one_clean_run(run_graphfix("validate", out))
    assert_one_clean_run(run_graphfix("check", out))


def test_a_model_folder_whose_name_is_not_utf8_is_repaired_with_jobs_and_named_escaped(tmp_path):
    source = bytes_path(tmp_path, b"export\xfe")
    (source / "onnx").mkdir(parents=True)
    shutil.copyfile(MARIAN, source / "onnx" / "decoder_model_merged.onnx")
    (source / "config.json").write_text("{}\n")
    out = bytes_path(tmp_path, b"fixed\xfe")
    result = run_graphfix("repair", "--jobs", "2", source, out)
    assert_one_clean_run(result)
    assert "export\\xfe -> " in result.stdout and "fixed\\xfe" in result.stdout and "decodes in" in result.stdout
    assert_one_clean_run(run_graphfix("check", out / "onnx" / "decoder_model_merged.onnx"))


def proof_children_of(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == parent and b"client_loop" in cmdline.read():
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the proof's process through /proc")
def test_a_proof_process_killed_while_it_holds_an_alias_leaves_nothing_in_tmpdir(model_named_ff, tmp_path):
    """What the kernel's out-of-memory killer does to the proof's process: SIGKILL, so it removes nothing itself."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = [*graphfix_command(), "validate", str(model_named_ff)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(temporary)})
    killed = False
    deadline = time.monotonic() + 60
    while proc.poll() is None and not killed and time.monotonic() < deadline:
        if any(temporary.rglob("graphfix-alias-*")):
            for child in proof_children_of(proc.pid):
                os.kill(child, signal.SIGKILL)
                killed = True
        time.sleep(0.001)
    _, stderr = proc.communicate(timeout=60)
    assert killed, "the alias must exist while the proof runs"
    assert proc.returncode == 2 and len(stderr.splitlines()) == 1 and stderr.startswith("error: "), stderr
    assert list(temporary.iterdir()) == []
