"""Every termination is an interruption: SIGTERM (`timeout`, `make`, `docker stop`, systemd, a cancelled CI job) and
SIGHUP (a dropped ssh session) end a run like Ctrl-C does: one `error: interrupted by SIG...` line, exit 128+n, the
input intact, no staging copy beside OUT, nothing in TMPDIR, and no process of the run left:
not the proof's child, not a --jobs worker or the pool's resource tracker, not ensurepip or pip installing a runtime.

The signal goes to graphfix's own process only (what `docker stop` and `kill PID` do), so the children are
graphfix's to end. Each run starts a session of its own, so that every process it leaves is found by session id.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import session_members, sha256
from .test_interruption_and_limits import (
    OLD,
    SOURCE,
    Big,
    graphfix_command,
    run_graphfix,
    signal_points,
    staged_model_complete,
    temp_dirs,
)

pytestmark = pytest.mark.slow  # signals at many points of real runs: make test

SIGNALS = [signal.SIGTERM, signal.SIGHUP]


@pytest.fixture(scope="module")
def padded(tmp_path_factory) -> Big:
    """The padded model of test_interruption_and_limits (a run long enough to be hit) and its reference output."""
    made = Big(tmp_path_factory.mktemp("padded"))
    yield made
    assert sha256(made.input) == made.input_sha
SIGNAL_IDS = ["sigterm", "sighup"]


def descendants_matching(pid: int, words: bytes) -> bool:
    return any(words in cmd.encode() for _, cmd in session_members(pid))


class Run:
    """graphfix in a session of its own, with a signal sent to its process alone once `when` holds."""

    def __init__(self, args: list, env: dict[str, str] | None = None, tmpdir: Path | None = None):
        environment = {**os.environ, **(env or {})}
        if tmpdir is not None:
            environment["TMPDIR"] = str(tmpdir)
        self.proc = subprocess.Popen([*graphfix_command(), *map(str, args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True, env=environment)

    def signal_when(self, sig: int, when, timeout: float = 120, group: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        if callable(when):
            while self.proc.poll() is None and not when() and time.monotonic() < deadline:
                time.sleep(0.002)
        else:
            time.sleep(when)
        running = self.proc.poll() is None
        if running and group:  # what `timeout`, systemd and CI runners do: every process of the job at once
            os.killpg(self.proc.pid, sig)
        elif running:
            self.proc.send_signal(sig)
        return running

    def finish(self) -> subprocess.CompletedProcess:
        try:
            stdout, stderr = self.proc.communicate(timeout=120)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.survivors = self._survivors()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, stdout, stderr)

    def _survivors(self) -> list[tuple[int, str]]:
        """What of the session is still alive a moment after graphfix exited (a dying child takes a few ms)."""
        for _ in range(100):
            left = session_members(self.proc.pid)
            if not left:
                return []
            time.sleep(0.01)
        for pid, _ in left:  # the test must not leave them either
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


def assert_interrupted_by(result: subprocess.CompletedProcess, sig: int) -> None:
    assert result.returncode == 128 + sig, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: interrupted by {signal.Signals(sig).name}"), result.stderr


def nothing_left_in(tmpdir: Path) -> None:
    # onnxruntime's own `.ses` included: the proof's process writes it into a folder of its own
    assert list(tmpdir.iterdir()) == [], "the run left files in TMPDIR"


# --- one file ---------------------------------------------------------------------------------------------------


FILE_POINTS = ["staging", "copy", "proof", "landing"]


def proof_running(pid: int, staged_in: tuple[Big, Path] | None = None):
    """The proof's process exists; with `staged_in` (the model, the output's folder), the staged output is complete
    too, so the proof has its request: the process itself starts with graphfix, before any file is written."""
    if staged_in is None:
        return lambda: descendants_matching(pid, b"client_loop")
    return lambda: staged_model_complete(*staged_in) and descendants_matching(pid, b"client_loop")


@pytest.mark.parametrize("point", FILE_POINTS)
@pytest.mark.parametrize("sig", SIGNALS, ids=SIGNAL_IDS)
def test_a_terminated_repair_leaves_the_old_output_no_debris_and_no_process(sig, point, padded, tmp_path):
    out_dir, tmpdir = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir(), tmpdir.mkdir()
    out = out_dir / "decoder_model_merged.onnx"
    out.write_bytes(OLD)
    run = Run(["repair", "--force", padded.input, out], tmpdir=tmpdir)
    when = {"staging": lambda: bool(temp_dirs(out_dir)),
            "copy": lambda: bool(temp_dirs(out_dir)) and any(f.stat().st_size > 0 for d in temp_dirs(out_dir)
                                                              if d.is_dir() for f in d.iterdir()),
            "proof": proof_running(run.proc.pid, (padded, out_dir)),
            "landing": padded.seconds * 0.98}[point]
    running = run.signal_when(sig, when)
    result = run.finish()
    assert run.survivors == [], f"processes outlived graphfix: {run.survivors}"
    assert "Traceback" not in result.stderr and "leaked" not in result.stderr
    if point != "landing":
        assert running, "the signal must land while graphfix runs"
    if running and result.returncode != 0:
        assert_interrupted_by(result, sig)
    assert sha256(out) in {sha256_of(OLD), padded.reference_sha}
    if point in ("staging", "proof"):
        assert out.read_bytes() == OLD and "nothing was written" in result.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == [out.name], "the staging copy was left beside OUT"
    nothing_left_in(tmpdir)
    assert sha256(padded.input) == padded.input_sha


def sha256_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# --- the whole process group at once ---------------------------------------------------------------------------


def test_sigterm_to_the_process_group_during_the_proof_is_one_line_and_leaves_nothing(padded, tmp_path):
    """The proof child gets SIGTERM too, at the same moment as graphfix: its death must read as the interruption,
    not as a failed proof or a crash, and nothing of it may be left."""
    out_dir, tmpdir = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir(), tmpdir.mkdir()
    out = out_dir / "decoder_model_merged.onnx"
    out.write_bytes(OLD)
    run = Run(["repair", "--force", padded.input, out], tmpdir=tmpdir)
    running = run.signal_when(signal.SIGTERM, proof_running(run.proc.pid, (padded, out_dir)), group=True)
    result = run.finish()
    assert running and run.survivors == [], f"processes outlived graphfix: {run.survivors}"
    assert_interrupted_by(result, signal.SIGTERM)
    assert "nothing was written" in result.stderr and result.stdout == ""
    assert out.read_bytes() == OLD
    assert sorted(p.name for p in out_dir.iterdir()) == [out.name], "the staging copy was left beside OUT"
    nothing_left_in(tmpdir)
    assert sha256(padded.input) == padded.input_sha


def test_sigterm_to_the_process_group_of_a_jobs_2_directory_repair_is_one_line_and_leaves_nothing(padded, tmp_path):
    """Pool workers, their proof children and the resource tracker all get SIGTERM with graphfix."""
    source = model_directory(tmp_path / "model", padded)
    out, tmpdir = tmp_path / "fixed", tmp_path / "tmp"
    tmpdir.mkdir()
    run = Run(["repair", "--jobs", 2, source, out], tmpdir=tmpdir)
    running = run.signal_when(signal.SIGTERM, proof_running(run.proc.pid), group=True)
    result = run.finish()
    assert running and run.survivors == [], f"processes outlived graphfix: {run.survivors}"
    assert "leaked" not in result.stderr and "Traceback" not in result.stderr
    assert_interrupted_by(result, signal.SIGTERM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "tmp"], "OUT or its staging directory was left"
    nothing_left_in(tmpdir)
    assert sha256(source / "onnx" / "decoder_model_merged.onnx") == padded.input_sha


def test_timeout_s_term_ends_a_repair_in_one_line_and_leaves_nothing(padded, tmp_path):
    """coreutils `timeout` as a CI step uses it: the signal reaches graphfix's group; timeout exits 124."""
    timeout = shutil.which("timeout")
    assert timeout is not None, "coreutils timeout is part of the test image"
    warm = tmp_path / "warm" / "fixed.onnx"
    warm.parent.mkdir()
    started = time.monotonic()
    assert run_graphfix("repair", padded.input, warm).returncode == 0  # the module's first run was a cold one
    warm_seconds = time.monotonic() - started
    shutil.rmtree(warm.parent)
    out = tmp_path / "fixed.onnx"
    deadline = warm_seconds / 2
    for _ in range(8):
        result = subprocess.run([timeout, "-s", "TERM", f"{deadline:.2f}", *graphfix_command(),
                                 "repair", str(padded.input), str(out)], capture_output=True, text=True, timeout=300)
        if result.returncode == 0:  # faster than the warm run: an earlier deadline
            out.unlink()
            deadline *= 0.7
        elif result.returncode == 124 and not result.stderr:
            # Inside the interpreter's own start, before graphfix's handler exists (SIGTERM's default action ends it
            # silently), which a busy machine can stretch to a quarter second: nothing written; a later deadline.
            assert sorted(p.name for p in tmp_path.iterdir()) == [], "OUT or its staging copy was left"
            deadline *= 1.5
        else:
            break
    assert result.returncode == 124, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted by SIGTERM"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "OUT or its staging copy was left"
    assert sha256(padded.input) == padded.input_sha


# --- --in-place ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", ["backup-appeared", "staged-model-complete"])
@pytest.mark.parametrize("sig", SIGNALS, ids=SIGNAL_IDS)
def test_a_terminated_in_place_repair_keeps_the_input_and_leaves_no_backup_in_the_way(sig, point, padded, tmp_path):
    model = tmp_path / "decoder_model_merged.onnx"
    shutil.copy2(padded.input, model)
    backup = tmp_path / "decoder_model_merged.onnx.bak"
    run = Run(["repair", model, model, "--in-place"])
    running = run.signal_when(sig, signal_points(padded, tmp_path, backup)[point])
    result = run.finish()
    assert running and run.survivors == [], run.survivors
    assert_interrupted_by(result, sig)
    assert sha256(model) == padded.input_sha
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.name], "a backup or staging file was left"
    again = run_graphfix("repair", model, model, "--in-place")
    assert again.returncode == 0, again.stderr
    assert sha256(model) == padded.reference_sha and sha256(backup) == padded.input_sha


# --- a directory, --jobs 2 ---------------------------------------------------------------------------------------


def model_directory(root: Path, padded: Big) -> Path:
    (root / "onnx").mkdir(parents=True)
    os.link(padded.input, root / "onnx" / "decoder_model_merged.onnx")
    shutil.copyfile(SOURCE, root / "onnx" / "decoder_model_merged_quantized.onnx")
    (root / "config.json").write_text("{}\n")
    return root


@pytest.mark.parametrize("jobs", [1, 2], ids=["jobs-1", "jobs-2"])
@pytest.mark.parametrize("sig", SIGNALS, ids=SIGNAL_IDS)
def test_a_terminated_directory_repair_ends_every_worker_and_leaves_no_output(sig, jobs, padded, tmp_path):
    source = model_directory(tmp_path / "model", padded)
    out, tmpdir = tmp_path / "fixed", tmp_path / "tmp"
    tmpdir.mkdir()
    run = Run(["repair", "--jobs", jobs, source, out], tmpdir=tmpdir)
    running = run.signal_when(sig, proof_running(run.proc.pid))  # the workers are repairing and proving
    result = run.finish()
    assert running and run.survivors == [], f"processes outlived graphfix: {run.survivors}"
    assert "leaked" not in result.stderr, "the resource tracker found semaphores the pool never released"
    assert_interrupted_by(result, sig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "tmp"], "OUT or its staging directory was left"
    nothing_left_in(tmpdir)
    assert sha256(source / "onnx" / "decoder_model_merged.onnx") == padded.input_sha


# --- the first use of a --target-ort release ------------------------------------------------------------------


@pytest.mark.parametrize("installer", [b"ensurepip", b"pip install"], ids=["ensurepip", "pip"])
@pytest.mark.parametrize("sig", SIGNALS, ids=SIGNAL_IDS)
def test_a_terminated_runtime_install_ends_pip_and_leaves_no_runtime_in_the_cache(sig, installer, tmp_path):
    """A fresh cache, so that the release is installed now: the signal lands while ensurepip (offline, seconds) or
    pip (the download) runs. Nothing of the half-built venv may stay where a later run would look."""
    cache, out, tmpdir = tmp_path / "cache", tmp_path / "fixed.onnx", tmp_path / "tmp"
    tmpdir.mkdir()
    run = Run(["repair", "--target-ort", "1.16", SOURCE, out], env={"GRAPHFIX_CACHE": str(cache)}, tmpdir=tmpdir)
    running = run.signal_when(sig, lambda: descendants_matching(run.proc.pid, installer), timeout=300)
    result = run.finish()
    if not running or result.returncode == 0:
        pytest.fail(f"the install finished before the signal: {result.stderr}")
    assert run.survivors == [], f"processes outlived graphfix: {run.survivors}"
    installing, *rest = result.stderr.splitlines(keepends=True)
    assert installing.startswith("installing onnxruntime 1.16.3 into "), result.stderr  # said before it starts
    assert_interrupted_by(subprocess.CompletedProcess(result.args, result.returncode, result.stdout, "".join(rest)),
                          sig)
    assert not out.exists()
    assert cache_entries(cache) == [], "a half-built runtime was left in the cache"
    assert [p.name for p in tmpdir.iterdir() if p.name != ".ses"] == [], "ensurepip's or pip's temp files were left"


def cache_entries(cache: Path) -> list[str]:
    """What a runtime cache holds, but the install locks (`.lock-<venv>`: kept, as flock files are, for the next
    install of that release to take)."""
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith(".lock-"))


def test_a_runtime_without_its_completion_mark_is_never_used(tmp_path, monkeypatch):
    """What a crash in the middle of an older graphfix's rename, or a hand-made venv, would leave: not trusted."""
    from graphfix.proof import interpreters, runtimes

    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path))
    monkeypatch.setattr(runtimes, "find_interpreter",
                        lambda release: interpreters.Interpreter(Path(sys.executable), (3, 11)))
    half = tmp_path / "onnxruntime-1.16.3-py3.11"
    (half / "bin").mkdir(parents=True)
    (half / "bin" / "python").write_text("#!/bin/sh\nexit 1\n")
    built = []

    def build(staging, version, interpreter):
        built.append(version)
        (staging / "bin").mkdir()
        (staging / "bin" / "python").write_text("")
        (staging / runtimes.COMPLETE).write_text("")

    monkeypatch.setattr(runtimes, "_build_runtime", build)
    python = runtimes.runtime_python("1.16.3")
    assert built == ["1.16.3"] and python == half / "bin" / "python"
    assert (half / runtimes.COMPLETE).exists() and (half / "bin" / "python").read_text() == ""  # the new one
    assert cache_entries(tmp_path) == [half.name]


BUILD_THEN_WAIT = """
import sys, time
from pathlib import Path
from graphfix.proof import interpreters, runtimes
runtimes.find_interpreter = lambda release: interpreters.Interpreter(Path(sys.executable), (3, 11))
def build(staging, version, interpreter):
    (staging / "pip-was-here").write_text("")
    time.sleep(300)
runtimes._build_runtime = build
runtimes.runtime_python("1.16.3")
"""


def start_install(cache: Path) -> tuple[subprocess.Popen, Path]:
    """A runtime install (its build replaced by a wait) in a process of its own, once its build directory exists."""
    before = set(cache.iterdir()) if cache.exists() else set()
    proc = subprocess.Popen([sys.executable, "-c", BUILD_THEN_WAIT], env={**os.environ, "GRAPHFIX_CACHE": str(cache)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        made = [p for p in (set(cache.iterdir()) if cache.exists() else set()) - before
                if (p / "pip-was-here").exists()]
        if made:
            return proc, made[0]
        assert proc.poll() is None, "the install ended before its build started"
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("the install never started its build")


def test_the_next_install_removes_what_a_killed_install_left_but_never_a_build_in_progress(tmp_path, monkeypatch):
    from graphfix.proof import interpreters, runtimes

    killed, killed_build = start_install(tmp_path)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed_build.is_dir(), "SIGKILL gives no chance to clean up: the build directory stays"
    live, live_build = start_install(tmp_path)
    old_unmarked = tmp_path / ".onnxruntime-1.16.3-k1ll3d"  # what a killed install of an older graphfix left
    old_unmarked.mkdir()
    os.utime(old_unmarked, (time.time() - 7200, time.time() - 7200))
    just_made = tmp_path / ".onnxruntime-1.16.3-n3wb1e"  # made this instant: its mark comes next
    just_made.mkdir()
    try:
        monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path))
        monkeypatch.setattr(runtimes, "find_interpreter",
                            lambda release: interpreters.Interpreter(Path(sys.executable), (3, 12)))

        def build(staging, version, interpreter):
            (staging / "bin").mkdir()
            (staging / "bin" / "python").write_text("")
            (staging / runtimes.COMPLETE).write_text("")

        monkeypatch.setattr(runtimes, "_build_runtime", build)
        runtimes.runtime_python("1.16.3")
        assert not killed_build.exists() and not old_unmarked.exists(), "a killed install's build was left"
        assert live_build.is_dir() and just_made.is_dir(), "a build in progress was removed"
        assert live.poll() is None
        assert cache_entries(tmp_path) == sorted(
            [live_build.name, just_made.name, "onnxruntime-1.16.3-py3.12"])
        assert sorted(p.name for p in (tmp_path / "onnxruntime-1.16.3-py3.12").iterdir()) == [
            runtimes.COMPLETE, "bin"]
    finally:
        live.kill()
        live.wait()


def test_the_proof_process_of_a_graphfix_killed_outright_ends_by_itself_and_leaves_nothing(padded, tmp_path):
    """SIGKILL gives graphfix no moment to end its proof's process: that process finishes its proof, finds no
    reader for its answer, and ends, having made nothing that outlives it."""
    out, tmpdir = tmp_path / "out.onnx", tmp_path / "tmp"
    tmpdir.mkdir()
    run = Run(["repair", padded.input, out], tmpdir=tmpdir)
    assert run.signal_when(signal.SIGKILL, proof_running(run.proc.pid, (padded, tmp_path)))
    run.proc.wait()
    deadline = time.monotonic() + 60
    while session_members(run.proc.pid) and time.monotonic() < deadline:  # the proof runs on to its end
        time.sleep(0.05)
    assert session_members(run.proc.pid) == []
    nothing_left_in(tmpdir)
    assert not out.exists()
