"""The proof's process (proof/child.py): started as the command line begins when its arguments say a proof in the
installed onnxruntime follows, so that importing onnxruntime there overlaps importing the command line and reading
the model here; kept for the process's next proof once it answered; ended with its owner, leaving nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphfix import BadInputError, repair, validate
from graphfix.__main__ import _proof_follows
from graphfix.proof import child

from ..conftest import session_members

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
    """graphfix run as TRACED, leading a session of its own: no process of it is left once it ended."""
    proc = subprocess.Popen([sys.executable, "-c", TRACED, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    stdout, stderr = proc.communicate(timeout=300)
    assert session_members(proc.pid) == []
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
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
    """A file that is no model: refused before any proof, the process started for it is ended (traced_graphfix
    asserts that none is left), having written nothing."""
    bad = tmp_path / "notes.onnx"
    bad.write_text("not a model")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result, started = traced_graphfix("repair", bad, tmp_path / "out.onnx", env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 2
    assert result.stderr.splitlines()[0].startswith("error: ")
    assert len(started) == 1 and started[0]["cli_imported"] is False
    assert list(scratch.iterdir()) == []
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


# --- kept for the next proof ----------------------------------------------------------------------------------------


@pytest.fixture
def started(monkeypatch):
    """The proof processes started from here on (their pids), none idle to begin with."""
    child.close_idle()
    pids: list[int] = []
    real = child.start_child

    def counted(*args, **kwargs):
        proc = real(*args, **kwargs)
        pids.append(proc.pid)
        return proc

    monkeypatch.setattr(child, "start_child", counted)
    yield pids
    child.close_idle()


def test_a_process_proves_one_model_after_another_in_one_proof_process(marian_legacy, tmp_path, started):
    first = repair(marian_legacy, tmp_path / "a.onnx")
    second = repair(marian_legacy, tmp_path / "b.onnx")
    assert first.validation.ok and second.validation.ok
    assert first.validation.to_dict()["cases"] == second.validation.to_dict()["cases"]  # the same proof, twice
    assert len(started) == 1


@pytest.mark.slow  # onnxruntime 1.16.3 installed into the suite's cache on first use
def test_proofs_in_another_release_share_that_releases_process_not_the_installed_ones(marian_legacy, repaired,
                                                                                     started):
    from graphfix.proof.runtimes import runtime_python

    runtime_python("1.16.3")
    fixed = repaired(marian_legacy)
    releases = [validate(fixed, ort_version=v).onnxruntime for v in ("1.16.3", None, "1.16.3", None)]
    assert releases[0] == releases[2] == "1.16.3" and releases[1] == releases[3] != "1.16.3"
    assert len(started) == 2


@pytest.mark.slow  # onnxruntime 1.16.3 installed into the suite's cache on first use
def test_an_idle_process_is_not_taken_once_its_release_resolves_to_another_interpreter(marian_legacy, repaired,
                                                                                       started, monkeypatch,
                                                                                       tmp_path):
    fixed = repaired(marian_legacy)  # its own proof, where this run had not repaired it before
    started.clear()
    validate(fixed, ort_version="1.16.3")
    [pid] = started
    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "another-cache"))  # 1.16.3 is not installed there
    assert child.take_idle("1.16.3") is None
    assert _gone(pid)


def test_a_proof_process_that_answered_with_a_failure_is_not_kept(started):
    """onnxruntime refuses this real converter output: the process that said so is ended, not kept."""
    from ..conftest import ROOT

    with pytest.raises(BadInputError, match="outer scope value"):
        validate(ROOT / "sample_models" / "variants" / "marian-fp16-converter.onnx")
    assert len(started) == 1 and child.take_idle(None) is None
    assert _gone(started[0])


def test_an_idle_proof_process_that_died_is_replaced(marian_legacy, tmp_path, started):
    repair(marian_legacy, tmp_path / "a.onnx")
    os.kill(started[0], signal.SIGKILL)
    assert repair(marian_legacy, tmp_path / "b.onnx").validation.ok
    assert len(started) == 2


KEEPS_ONE = """
import sys
from graphfix import repair
from graphfix.proof import child
repair(sys.argv[1], sys.argv[2])
idle = child.take_idle(None)
child._keep_idle(idle)
print(idle._proc.pid, flush=True)
if sys.argv[3] == "wait":
    sys.stdin.readline()
"""


def _gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_the_idle_proof_process_ends_with_the_library_caller_and_leaves_nothing(marian_legacy, tmp_path):
    result = subprocess.run([sys.executable, "-c", KEEPS_ONE, marian_legacy, tmp_path / "out.onnx", "exit"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _gone(int(result.stdout))


def test_the_idle_proof_process_outlives_no_owner_killed_outright(marian_legacy, tmp_path):
    """SIGKILL leaves graphfix no moment to end it: it ends itself once its stdin closes."""
    owner = subprocess.Popen([sys.executable, "-c", KEEPS_ONE, marian_legacy, tmp_path / "out.onnx", "wait"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    pid = int(owner.stdout.readline())
    assert not _gone(pid, seconds=0.2)  # idle while its owner lives
    owner.kill()
    owner.wait()
    assert _gone(pid)


def test_no_early_process_under_an_address_space_limit(marian_legacy):
    """There, importing the command line may exhaust the limit and leave too little to end the process cleanly."""
    import resource

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.RLIM_INFINITY))

    code = "import sys; from graphfix.__main__ import _proof_follows; print(_proof_follows(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "repair", str(marian_legacy), "out.onnx"]
    assert subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip() == "True"
    assert subprocess.run(argv, capture_output=True, text=True, check=True,
                          preexec_fn=limited).stdout.strip() == "False"


FORKS = """
import os, sys
from graphfix import validate
from graphfix.proof import child
validate(sys.argv[1])
idle = child.take_idle(None)
child._keep_idle(idle)
pid = os.fork()
if pid == 0:  # a library caller's forked copy, ending as a normal Python does: atexit, finalizers
    sys.exit(0)
os.waitpid(pid, 0)
print(idle._alive(), validate(sys.argv[1]).ok, child.take_idle(None) is idle)
"""


def test_a_forked_copy_of_a_library_caller_leaves_the_callers_proof_process_alone(marian_legacy, repaired):
    result = subprocess.run([sys.executable, "-c", FORKS, repaired(marian_legacy)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True"]  # its process alive and reused


def test_a_proof_process_graphfix_kills_leaves_nothing_in_tmpdir(tmp_path, monkeypatch):
    """Its temporary files (onnxruntime's `.ses` telemetry file where that release writes one, a non-UTF-8 path's
    alias) are in a directory of its own, which a SIGKILL leaves behind and graphfix then removes."""
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read from TMPDIR again, here and in the process
    proof = child.RuntimeChild(None)
    deadline = time.monotonic() + 30
    while not (folders := list(tmp_path.glob(f"graphfix-proof-{proof.pid}-*"))) and time.monotonic() < deadline:
        time.sleep(0.01)
    [folder] = folders
    (folder / "alias.onnx").write_bytes(b"left by the process")  # whether or not onnxruntime wrote its .ses
    assert proof._proc.poll() is None  # alive, waiting for a request: close kills it
    proof.close()
    assert list(tmp_path.iterdir()) == []


def test_an_idle_proof_process_ends_by_itself_and_is_never_taken_near_its_end(marian_legacy, started, monkeypatch):
    """A library caller's process keeps no proof process for long between its repairs; one that is about to end
    by itself is not given a proof but replaced."""
    monkeypatch.setattr(child, "IDLE_SECONDS", 1.0)
    assert validate(marian_legacy).onnxruntime
    [first] = started
    time.sleep(0.6)  # past half its idle time: replaced, not taken
    assert validate(marian_legacy).onnxruntime and len(started) == 2
    assert _gone(first, seconds=0.1)
    kept = child._idle[None]
    assert kept.pid == started[1]
    deadline = time.monotonic() + 10
    while kept._proc.poll() is None and time.monotonic() < deadline:  # ends by itself, idle
        time.sleep(0.05)
    assert kept._proc.poll() == 0
    assert child.take_idle(None) is None


def test_a_proof_process_that_waited_too_long_for_its_request_is_replaced_not_found_dead(marian_legacy, repaired,
                                                                                        monkeypatch):
    """Started before the repair writes; a big model's write can outlast its idle time, so it ends by itself."""
    from graphfix.proof.cases import ProofRequest

    monkeypatch.setattr(child, "IDLE_SECONDS", 1.0)
    proof = child.RuntimeChild(None)
    first = proof.pid
    assert proof._proc is not None
    proof._proc.wait(timeout=30)  # ended by itself, idle
    model = str(repaired(marian_legacy))
    answer = proof.answer(ProofRequest(model=model, model_with_past=model, tolerance=1e-4, steps=3, batches=(1,),
                                       source_lengths=(5,)))
    assert answer["cases"][0]["failure"] is None
    assert proof.pid != first
    proof.close()
