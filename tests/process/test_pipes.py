"""A closed stdout is a reader that has read enough (`graphfix check A B C | head -1`, `explain | head -1`,
`repair ... | grep -q`): the command ends quietly with the exit code of the work done, never "unexpected", never a
failure for an output that landed. A full stdout (`> /dev/full`) is one `error:` line.

The reader here closes its end before graphfix prints anything, so that the first result line already meets a
closed pipe whatever the machine's speed (a pipe's buffer would otherwise swallow a short output whole)."""

from __future__ import annotations

import subprocess

import pytest

from ..conftest import sha256
from .test_interruption_and_limits import SOURCE, graphfix_command


def run_with_closed_stdout(*args) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([*graphfix_command(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    proc.stdout.close()  # no reader left: the child's first write is EPIPE
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)


@pytest.mark.parametrize(("args", "code"), [
    (["check", SOURCE, SOURCE, SOURCE], 1),  # the first file's findings: what the reader saw
    (["explain"], 0),
    (["explain", "GF101"], 0),
    (["check", "--json", SOURCE], 1),
], ids=["check-batch", "explain", "explain-code", "check-json"])
def test_a_reader_that_stops_reading_ends_the_command_quietly(args, code):
    result = run_with_closed_stdout(*args)
    assert (result.returncode, result.stderr) == (code, "")


def test_a_repair_whose_summary_nobody_reads_still_succeeds_and_lands(tmp_path):
    out = tmp_path / "fixed.onnx"
    result = run_with_closed_stdout("repair", "--no-validate", SOURCE, out)
    assert (result.returncode, result.stderr) == (0, "")
    assert subprocess.run([*graphfix_command(), "check", out], capture_output=True).returncode == 0


@pytest.mark.parametrize("args", [["check", SOURCE], ["explain"], ["repair", "--no-validate", SOURCE, "OUT"]],
                         ids=["check", "explain", "repair"])
def test_a_full_stdout_is_one_error_line(args, tmp_path):
    args = [tmp_path / "fixed.onnx" if a == "OUT" else a for a in args]
    with open("/dev/full", "w") as full:
        result = subprocess.run([*graphfix_command(), *map(str, args)], stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot write to stdout: No space left on device"), result.stderr
    if args[0] == "repair":  # what landed is named, and it is complete
        assert lines[0].endswith(f"already written in full: {tmp_path / 'fixed.onnx'}")
        assert sha256(tmp_path / "fixed.onnx")
