"""Nothing half-written: interruption, size limits and concurrent writers, on the real `graphfix` process.

The promise under test: OUT only ever holds the old file or the complete new one (byte-identical to an
uninterrupted run), the input is never modified, Ctrl-C is one `error:` line and exit 130, a failed write is one
line and exit 2 with nothing left behind.

The model is a real exporter sample (legacy Marian) re-saved with 128 MB of unused padding initializers, so that a
run lasts long enough (about a second) to be hit while reading, writing and validating. Signals are sent at
fractions of an uninterrupted run's duration (measured here only to place them, never asserted) and at events
observed on disk: the hidden temp directory appearing, the staged model being complete (validation running), the
in-place backup appearing.

Known and accepted: SIGKILL leaves the hidden temp directory `.graphfix-*` behind (nothing can clean up after
SIGKILL); never anything under OUT's name. A Ctrl-C in the interpreter's own first ~25 ms, before any graphfix
code runs (Python's `site` setup), is Python's KeyboardInterrupt, not graphfix's line.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from ..conftest import ROOT, sha256

pytestmark = pytest.mark.slow  # signals and limits at many points of real runs: make test

SOURCE = ROOT / "sample_models" / "legacy" / "marian.onnx"
PADDING_TENSORS, PADDING_FLOATS = 8, 4_000_000  # 8 x 16 MB
INPUT_MODE = 0o640
OLD = b"old output from an earlier run\n"


def graphfix_command() -> list[str]:
    script = Path(sys.executable).with_name("graphfix")
    return [str(script)] if script.exists() else [sys.executable, "-m", "graphfix"]


def run_graphfix(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*graphfix_command(), *map(str, args)], capture_output=True, text=True, **kwargs)


class Big:
    """The padded model, the output of one uninterrupted repair of it, and how long that run took."""

    def __init__(self, directory: Path):
        model = onnx.load(SOURCE)
        for index in range(PADDING_TENSORS):
            values = np.full(PADDING_FLOATS, index + 0.5, dtype=np.float32)
            model.graph.initializer.append(numpy_helper.from_array(values, f"padding.{index}"))
        self.input = directory / "in" / "decoder_model_merged.onnx"
        self.input.parent.mkdir()
        onnx.save(model, self.input)
        self.input.chmod(INPUT_MODE)
        self.input_sha = sha256(self.input)
        self.reference = directory / "reference" / "decoder_model_merged.onnx"
        self.reference.parent.mkdir()
        started = time.monotonic()
        done = run_graphfix("repair", self.input, self.reference)
        self.seconds = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        self.reference_sha = sha256(self.reference)
        self.reference_size = self.reference.stat().st_size


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Big:
    made = Big(tmp_path_factory.mktemp("big"))
    yield made
    assert sha256(made.input) == made.input_sha  # no run of this module touched the input


def test_the_reference_output_is_a_complete_clean_repair(big, cli):
    assert big.reference_size > PADDING_TENSORS * PADDING_FLOATS * 4
    assert cli("check", big.reference).exit_code == 0
    assert big.reference.stat().st_mode & 0o777 == INPUT_MODE


# --- sending signals ------------------------------------------------------------------------------------------------


def temp_dirs(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".graphfix-")]


def staged_model_complete(big: Big, directory: Path) -> bool:
    # An in-place run also makes a hidden temp *file* (the backup being copied, `.graphfix-*`); its staged
    # model is the `.graphfix-*.onnx` file beside its staging dir (so the proof reads the data it keeps).
    staged = [f for d in temp_dirs(directory) if d.is_dir() for f in d.iterdir() if f.is_file()]
    staged += [f for f in temp_dirs(directory) if f.is_file() and f.name.endswith(".onnx")]
    try:
        return any(f.stat().st_size >= big.reference_size for f in staged)
    except FileNotFoundError:  # landed or removed meanwhile
        return False


def run_with_signal(args, sig: int, when) -> tuple[subprocess.CompletedProcess, bool]:
    """Start graphfix, send `sig` after `when` seconds or once `when()` holds; returns (result, sent while running)."""
    proc = subprocess.Popen([*graphfix_command(), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        if callable(when):
            while proc.poll() is None and not when():
                time.sleep(0.002)
        else:
            time.sleep(when)
        running = proc.poll() is None
        if running:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), running


def signal_points(big: Big, out_dir: Path, backup: Path | None = None) -> dict[str, object]:
    return {
        "early": big.seconds * 0.15,
        "midway": big.seconds * 0.5,
        "late": big.seconds * 0.85,
        "temp-dir-made": lambda: bool(temp_dirs(out_dir)),
        "staged-model-complete": lambda: staged_model_complete(big, out_dir),
        **({"backup-appeared": backup.exists} if backup is not None else {}),
    }


POINTS = ["early", "midway", "late", "temp-dir-made", "staged-model-complete"]
EVENTS = {"temp-dir-made", "staged-model-complete", "backup-appeared"}


def assert_the_message_matches_the_disk(result, output_changed: bool) -> None:
    if "nothing was written" in result.stderr:
        assert not output_changed, result.stderr
    if "already written in full" in result.stderr:
        assert output_changed, result.stderr


def assert_ctrl_c_reported(result, running: bool) -> bool:
    """True when the run was interrupted (one line, exit 130); False when it had finished (exit 0: a Ctrl-C after the
    command printed its outcome is ignored, also during interpreter shutdown)."""
    assert "Traceback" not in result.stderr
    if result.returncode == 0 and result.stderr == "":
        return False
    assert result.returncode == 130, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), result.stderr
    return True


@pytest.mark.parametrize("point", POINTS)
def test_ctrl_c_leaves_the_old_output_or_the_complete_new_one_and_prints_one_line(point, big, tmp_path):
    out = tmp_path / "decoder_model_merged.onnx"
    out.write_bytes(OLD)
    result, running = run_with_signal(["repair", "--force", big.input, out], signal.SIGINT, signal_points(big, tmp_path)[point])
    if point in EVENTS:
        assert running and result.returncode == 130, "the signal must land while graphfix runs"
    if not assert_ctrl_c_reported(result, running):
        assert sha256(out) == big.reference_sha  # it finished
    assert sha256(out) in {sha256_bytes(OLD), big.reference_sha}
    assert_the_message_matches_the_disk(result, sha256(out) == big.reference_sha)
    if point in EVENTS:  # caught before the rename: nothing was written
        assert out.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # the temp directory was cleaned up


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_leaves_the_old_output_or_the_complete_new_one_never_a_partial_file(point, big, tmp_path):
    out = tmp_path / "decoder_model_merged.onnx"
    out.write_bytes(OLD)
    result, running = run_with_signal(["repair", "--force", big.input, out], signal.SIGKILL, signal_points(big, tmp_path)[point])
    if point in EVENTS:
        assert running and result.returncode == -signal.SIGKILL
    assert result.returncode in (0, -signal.SIGKILL)
    assert sha256(out) in {sha256_bytes(OLD), big.reference_sha}
    leftovers = [p.name for p in tmp_path.iterdir() if p != out]
    assert all(name.startswith(".graphfix-") for name in leftovers), leftovers


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_ctrl_c_in_the_middle_of_a_check_batch_prints_one_line_and_exits_130():
    """Outside repair's own handler (here: between the files of a `check` batch) Ctrl-C is the same one line."""
    proc = subprocess.Popen([*graphfix_command(), "check", *[str(SOURCE)] * 400], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # click flushes every line: the batch is under way
        assert first.startswith(f"{SOURCE}: ") and first.rstrip().endswith(" findings")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert stderr == "error: interrupted\n"


# --- --in-place under signals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
@pytest.mark.parametrize("point", ["backup-appeared", "midway", "staged-model-complete"])
def test_interrupted_in_place_repair_keeps_the_input_or_the_new_model_with_a_complete_backup(point, sig, big,
                                                                                             tmp_path):
    model = tmp_path / "decoder_model_merged.onnx"
    shutil.copy2(big.input, model)
    backup = tmp_path / "decoder_model_merged.onnx.bak"
    result, running = run_with_signal(["repair", model, model, "--in-place"], sig,
                                      signal_points(big, tmp_path, backup)[point])
    if point in EVENTS:
        assert running, "the signal must land while graphfix runs"
    if sig == signal.SIGINT:
        assert_ctrl_c_reported(result, running)

    now = sha256(model)
    assert now in {big.input_sha, big.reference_sha}
    assert_the_message_matches_the_disk(result, now == big.reference_sha)
    if now == big.reference_sha:  # the new model landed: the backup is the complete original
        assert sha256(backup) == big.input_sha
    elif sig == signal.SIGINT:  # cleaned up: the input as it was, no backup, no temp directory
        assert sorted(p.name for p in tmp_path.iterdir()) == [model.name]
    else:  # SIGKILL: a backup may be left, but only a complete one
        assert not backup.exists() or sha256(backup) == big.input_sha, "a partial backup was left"
    assert all(p.name.startswith(".graphfix-") for p in tmp_path.iterdir() if p not in (model, backup))

    if backup.exists() and now == big.input_sha:  # SIGKILL before the new model landed: a stale backup
        again = run_graphfix("repair", model, model, "--in-place")
        assert again.returncode == 0, again.stderr  # recognised as a copy of the input, not an obstacle
        assert sha256(model) == big.reference_sha and sha256(backup) == big.input_sha
    elif backup.exists():  # the new model landed: a rerun has nothing to repair and leaves both as they are
        again = run_graphfix("repair", model, model, "--in-place")
        assert again.returncode == 0 and "nothing to repair" in again.stdout, again.stderr
        assert (sha256(model), sha256(backup)) == (big.reference_sha, big.input_sha)


# --- re-runs --------------------------------------------------------------------------------------------------------


def test_rerunning_over_an_existing_output_swaps_it_in_one_rename(big, tmp_path, repaired):
    """A Makefile batch re-runs over last run's outputs: a reader never sees a partial file under OUT's name, and
    one that opened the old OUT keeps reading it whole."""
    out = tmp_path / "decoder_model_merged.onnx"
    shutil.copyfile(repaired(SOURCE), out)  # last run's complete output (of a smaller model)
    old_bytes = out.read_bytes()
    observed: set[tuple[int, int]] = set()
    with open(out, "rb") as reader:
        proc = subprocess.Popen([*graphfix_command(), "repair", "--force", str(big.input), str(out)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:
            info = out.stat()  # OUT exists at every instant
            observed.add((info.st_ino, info.st_size))
            time.sleep(0.001)
        _, stderr = proc.communicate()
        assert proc.returncode == 0, stderr
        assert reader.read() == old_bytes
    assert {size for _, size in observed} <= {len(old_bytes), big.reference_size}
    assert len({inode for inode, _ in observed}) <= 2
    assert sha256(out) == big.reference_sha
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


# --- disk full: RLIMIT_FSIZE below the output's size ----------------------------------------------------------------


SMALL_LIMIT = 64 * 1024  # below every sample model's size
DATA_LIMIT = 512 * 1024  # above the external-data model file, below its data file


def limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def external_data_sample(directory: Path) -> Path:
    """The legacy Marian sample with a 1 MB padding initializer, re-saved with its weights in one external-data file
    bigger than the size limit (the model file itself stays under it, so the data copy is what fails)."""
    model = onnx.load(SOURCE)
    model.graph.initializer.append(numpy_helper.from_array(np.full(256 * 1024, 0.5, dtype=np.float32), "padding"))
    directory.mkdir()
    path = directory / "decoder_model_merged.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="decoder_model_merged.onnx_data", size_threshold=1024)
    assert path.stat().st_size < DATA_LIMIT < (directory / "decoder_model_merged.onnx_data").stat().st_size
    return path


def _needs_repair(tmp, repaired):
    return SOURCE, SMALL_LIMIT


def _nothing_to_repair(tmp, repaired):
    return repaired(SOURCE), SMALL_LIMIT  # copied as it is


def _external_data(tmp, repaired):
    return external_data_sample(tmp / "in"), DATA_LIMIT


@pytest.mark.parametrize("make_input", [_needs_repair, _nothing_to_repair, _external_data],
                         ids=["needs-repair", "nothing-to-repair", "external-data"])
def test_a_write_over_the_file_size_limit_is_one_error_line_exit_2_and_leaves_nothing(make_input, tmp_path,
                                                                                      repaired):
    src, limit = make_input(tmp_path, repaired)
    before = {p: sha256(p) for p in src.parent.iterdir() if p.is_file()}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "decoder_model_merged.onnx"
    result = run_graphfix("repair", src, out, preexec_fn=limit_file_size(limit))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "File too large" in lines[0] and str(out) in lines[0]
    assert list(out_dir.iterdir()) == []  # no OUT, no OUT_data, no temp directory
    assert {p: sha256(p) for p in src.parent.iterdir() if p.is_file()} == before


def test_an_in_place_repair_over_the_file_size_limit_keeps_the_input_and_leaves_no_backup(tmp_path):
    model = tmp_path / "decoder_model_merged.onnx"
    shutil.copyfile(SOURCE, model)
    digest = sha256(model)
    result = run_graphfix("repair", model, model, "--in-place", preexec_fn=limit_file_size(SMALL_LIMIT))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "File too large" in lines[0], result.stderr
    assert sha256(model) == digest
    assert [p.name for p in tmp_path.iterdir()] == [model.name]  # no partial .bak blocking the next run


# --- concurrent writers ---------------------------------------------------------------------------------------------


def run_concurrently(commands: list[list], watch: Path) -> tuple[list[subprocess.CompletedProcess], list[int]]:
    """Start every command at once; while they run, record the modes of the temp dirs and files they create."""
    procs = [subprocess.Popen([*graphfix_command(), *map(str, c)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    modes: list[int] = []
    while any(p.poll() is None for p in procs):
        for directory in temp_dirs(watch):
            try:
                modes.append(directory.stat().st_mode)
                modes.extend(f.stat().st_mode for f in directory.iterdir())
            except FileNotFoundError:  # renamed or cleaned up between listing and stat
                pass
        time.sleep(0.002)
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return results, modes


def assert_safe_temp_modes(modes: list[int]) -> None:
    assert modes, "no temp directory was seen while the runs wrote"
    for mode in modes:
        assert not mode & (stat.S_IWGRP | stat.S_IWOTH), oct(mode)
        if stat.S_ISDIR(mode):
            assert stat.S_IMODE(mode) == 0o700, oct(mode)


def test_two_repairs_into_one_directory_at_once_both_land_complete_with_the_input_mode(big, tmp_path):
    outs = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    results, modes = run_concurrently([["repair", big.input, out] for out in outs], tmp_path)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    for out in outs:
        assert sha256(out) == big.reference_sha
        assert stat.S_IMODE(out.stat().st_mode) == INPUT_MODE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]
    assert_safe_temp_modes(modes)


def test_two_repairs_of_the_same_output_at_once_end_with_one_complete_file(big, tmp_path):
    out = tmp_path / "decoder_model_merged.onnx"
    out.write_bytes(OLD)
    results, modes = run_concurrently([["repair", "--force", big.input, out]] * 2, tmp_path)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert sha256(out) == big.reference_sha
    assert stat.S_IMODE(out.stat().st_mode) == INPUT_MODE
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    assert_safe_temp_modes(modes)


# --- a directory repaired with --jobs -------------------------------------------------------------------------------


def model_directory(root: Path, big: Big) -> Path:
    """An onnx-community layout holding two merged decoders: the padded one (slow enough to be interrupted) and the
    plain legacy Marian sample under the quantized variant's name."""
    (root / "onnx").mkdir(parents=True)
    os.link(big.input, root / "onnx" / "decoder_model_merged.onnx")
    shutil.copyfile(SOURCE, root / "onnx" / "decoder_model_merged_quantized.onnx")
    (root / "config.json").write_text("{}\n")
    return root


def test_jobs_2_repairs_every_decoder_of_a_directory_like_single_repairs(big, tmp_path, repaired):
    source = model_directory(tmp_path / "model", big)
    out = tmp_path / "fixed"
    result = run_graphfix("repair", "--jobs", "2", source, out)
    assert result.returncode == 0, result.stderr
    assert sha256(out / "onnx" / "decoder_model_merged.onnx") == big.reference_sha
    assert sha256(out / "onnx" / "decoder_model_merged_quantized.onnx") == sha256(repaired(SOURCE))
    assert (out / "config.json").read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixed", "model"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
@pytest.mark.parametrize("fraction", [0.2, 0.6], ids=["workers-starting", "workers-repairing"])
def test_an_interrupted_jobs_batch_leaves_no_output_directory_or_a_complete_one(sig, fraction, big, tmp_path):
    """Ctrl-C in a terminal reaches the whole process group, workers included; so does the signal here."""
    source = model_directory(tmp_path / "model", big)
    out = tmp_path / "fixed"
    proc = subprocess.Popen([*graphfix_command(), "repair", "--jobs", "2", str(source), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while proc.poll() is None and not any(p.name.startswith(".") for p in tmp_path.iterdir()):
            time.sleep(0.002)  # until the staging directory exists: the batch is writing
        time.sleep(big.seconds * fraction)
        running = proc.poll() is None
        if running:
            os.killpg(proc.pid, sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert running, "the signal must land while the batch runs"
    if sig == signal.SIGINT and not assert_ctrl_c_reported(subprocess.CompletedProcess([], proc.returncode, "", stderr),
                                                           running):
        assert out.exists()  # it finished
    if out.exists():  # it landed whole
        assert sha256(out / "onnx" / "decoder_model_merged.onnx") == big.reference_sha
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("model", "fixed"))
    if sig == signal.SIGINT:
        assert leftovers == []
    else:
        assert all(name.startswith(".") for name in leftovers), leftovers
    assert sha256(source / "onnx" / "decoder_model_merged.onnx") == big.input_sha


# --- descriptor limits (memory limits: test_limits.py) -------------------------------------------------------------

RESOURCE_LINES = {"memory": "error: out of memory", "descriptors": "error: too many open files"}


def limit_resources(address_space: int | None = None, descriptors: int | None = None):
    def apply() -> None:
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        if descriptors is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (descriptors, descriptors))
    return apply


def small_model_directory(root: Path) -> Path:
    """Two merged decoders (the legacy Marian sample twice), so that --jobs 2 starts a pool of two workers."""
    (root / "onnx").mkdir(parents=True)
    for name in ("decoder_model_merged.onnx", "decoder_model_merged_quantized.onnx"):
        shutil.copyfile(SOURCE, root / "onnx" / name)
    (root / "config.json").write_text("{}\n")
    return root


def assert_one_resource_line(result, what: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(RESOURCE_LINES[what]), result.stderr


def test_a_repair_out_of_file_descriptors_is_one_line_exit_2_and_leaves_nothing(tmp_path):
    digest = sha256(SOURCE)
    out = tmp_path / "decoder_model_merged.onnx"
    result = run_graphfix("repair", SOURCE, out, preexec_fn=limit_resources(descriptors=5))
    assert_one_resource_line(result, "descriptors")
    assert list(tmp_path.iterdir()) == []
    assert sha256(SOURCE) == digest


def test_a_jobs_pool_out_of_file_descriptors_is_one_line_exit_2_and_leaves_no_staging_directory(tmp_path):
    source = small_model_directory(tmp_path / "model")
    before = {p: sha256(p) for p in source.rglob("*") if p.is_file()}
    result = run_graphfix("repair", "--jobs", "2", source, tmp_path / "fixed", preexec_fn=limit_resources(descriptors=8))
    assert_one_resource_line(result, "descriptors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert {p: sha256(p) for p in source.rglob("*") if p.is_file()} == before


def test_a_jobs_worker_killed_mid_repair_is_one_line_exit_2_and_leaves_no_staging_directory(tmp_path):
    """What the kernel's out-of-memory killer does to a worker: SIGKILL, no traceback, no goodbye."""
    said = "error: a --jobs worker process died (killed by SIGKILL"
    source = small_model_directory(tmp_path / "model")
    proc = subprocess.Popen([*graphfix_command(), "repair", "--jobs", "2", str(source), str(tmp_path / "fixed")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        worker = None
        while proc.poll() is None and worker is None:  # a worker that has opened a decoder: it is repairing
            worker = next((pid for pid in children(proc.pid)
                           if b"child_main" in cmdline(pid) and reads_from(pid, source)), None)
            time.sleep(0.002)
        assert worker is not None, "the pool must have started a worker"
        os.kill(worker, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def children(pid: int) -> list[int]:
    """Of every thread of `pid`: --jobs workers are started from the pool's threads."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def reads_from(pid: int, directory: Path) -> bool:
    try:
        return any(os.readlink(fd).startswith(str(directory)) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
