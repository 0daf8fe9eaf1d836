"""Limits, and errors classified by what they are: out of memory is said only when memory ran out (MemoryError,
ENOMEM, onnxruntime's own allocation failure, a proof killed under a limit), never because a word appears in a
file's name or an op's; a library that cannot load is named as such; and the library API leaves its caller's
process-wide state (thread and unraisable hooks, signal handlers) as it found it.

Two limit points stand for the address-space sweep: one too small to start graphfix, one that the repair itself
runs into while reading a model with 128 MB of weights. Between them the limit can also stop an import (one line
naming the library the loader could not map) or onnxruntime's load (one out-of-memory line); which one a given
megabyte figure hits shifts with every build of a library, so those are tested at the classifier instead.
"""

from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphfix
from graphfix.errors import BadInputError, import_failure, is_out_of_memory
from graphfix.process.limits import on_noexec_mount
from graphfix.proof import runtimes
from graphfix.proof.loadable import require_loadable

from ..conftest import ROOT, sha256

SOURCE = ROOT / "sample_models" / "legacy" / "marian.onnx"
MB = 2**20


def graphfix_under_limit(megabytes: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("graphfix")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "graphfix"]
    limit = megabytes * MB
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))


def assert_one_out_of_memory_line(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: out of memory"), result.stderr


def test_a_limit_too_small_to_start_graphfix_is_one_out_of_memory_line(tmp_path):
    """24 MB: above CPython's own floor (about 15 MB, docs/failure-modes.md), below what importing the CLI needs."""
    result = graphfix_under_limit(24, "repair", SOURCE, tmp_path / "out.onnx")
    assert_one_out_of_memory_line(result)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def heavy_model(tmp_path_factory) -> Path:
    """The legacy Marian sample with 128 MB of unused initializers: more than the repair can hold under 200 MB."""
    model = onnx.load(SOURCE)
    for index in range(8):
        values = np.full(4_000_000, index + 0.5, dtype=np.float32)
        model.graph.initializer.append(numpy_helper.from_array(values, f"padding.{index}"))
    path = tmp_path_factory.mktemp("heavy") / "decoder_model_merged.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.slow  # writes a 128 MB model
def test_a_limit_the_repair_runs_into_is_one_out_of_memory_line_and_leaves_nothing(heavy_model, tmp_path):
    digest = sha256(heavy_model)
    result = graphfix_under_limit(200, "repair", heavy_model, tmp_path / "out.onnx")
    assert_one_out_of_memory_line(result)
    assert list(tmp_path.iterdir()) == []  # no OUT, no staging directory
    assert sha256(heavy_model) == digest


# --- what counts as out of memory ---------------------------------------------------------------------------------


def unregistered_op_model(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Foo", ["x"], ["y"], name="n")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_file_named_bad_alloc_with_an_unregistered_op_is_reported_as_the_unregistered_op(tmp_path, cli):
    model = unregistered_op_model(tmp_path / "bad_alloc_test.onnx")
    with pytest.raises(BadInputError, match="No Op registered for Foo"):
        require_loadable(model)
    result = cli("validate", model)
    assert result.exit_code == 2
    assert "No Op registered for Foo" in result.stderr and "out of memory" not in result.stderr


def onnxruntime_error(tmp_path: Path, name: str) -> Exception:
    """onnxruntime's own exception for a model it refuses, as it words it."""
    model = unregistered_op_model(tmp_path / name)
    try:
        onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    except Exception as err:
        return err
    raise AssertionError("onnxruntime loaded a model with an unregistered op")


@pytest.mark.parametrize("name", ["bad_alloc_test.onnx", "std::bad_alloc.onnx", "x failed:std::bad_alloc.onnx",
                                  "Failed to allocate memory.onnx"])
def test_onnxruntime_refusing_a_model_is_not_out_of_memory_whatever_its_file_is_named(tmp_path, name):
    assert not is_out_of_memory(onnxruntime_error(tmp_path, name))


# onnxruntime's words when it could not allocate, as it raised them under `ulimit -v` (load) and from its arena (run)
ORT_ALLOCATION_FAILURES = [
    "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Load model from /m/decoder_model_merged.onnx failed:Failed to load "
    "model with error: std::bad_alloc",
    "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
    "Name:'/model/MatMul' Status Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* "
    "onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, "
    "onnxruntime::WaitNotificationFn) Failed to allocate memory for requested buffer of size 4000000000\n",
]


@pytest.mark.parametrize("text", ORT_ALLOCATION_FAILURES, ids=["load", "run"])
def test_onnxruntime_failing_to_allocate_is_out_of_memory(text):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    assert is_out_of_memory(Fail(text))
    assert not is_out_of_memory(RuntimeError(text))  # the same words from anything but onnxruntime are not


def test_a_node_named_like_an_allocation_failure_is_not_out_of_memory():
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    text = ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Reshape node. "
            "Name:'Status Message: std::bad_alloc' Status Message: the input tensor cannot be reshaped")
    assert not is_out_of_memory(Fail(text))


def test_memory_error_and_enomem_are_out_of_memory_and_other_errors_are_not():
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(OSError(12, "Cannot allocate memory"))
    assert not is_out_of_memory(OSError(2, "No such file or directory: bad_alloc"))
    assert not is_out_of_memory(ImportError("libfoo.so: cannot allocate memory"))


def test_a_library_the_loader_cannot_map_is_named_as_an_import_failure():
    """numpy wraps its extension's failure in a page of advice; the line names the extension and the loader."""
    try:
        try:
            raise ImportError("libgfortran.so.5: failed to map segment from shared object", name="_multiarray_umath")
        except ImportError as inner:
            raise ImportError("IMPORTANT: PLEASE READ THIS FOR ADVICE ON HOW TO SOLVE THIS ISSUE!") from inner
    except ImportError as err:
        said = import_failure(err)
    assert said == "cannot import _multiarray_umath: libgfortran.so.5: failed to map segment from shared object"


def test_a_proof_killed_by_sigkill_under_an_address_space_limit_is_out_of_memory(monkeypatch):
    monkeypatch.setattr(runtimes, "address_space_limit", lambda: 512 * MB)
    killed = subprocess.CompletedProcess([], -signal.SIGKILL, "", "")
    assert isinstance(runtimes._child_failure(killed, "the installed onnxruntime", None), MemoryError)
    monkeypatch.setattr(runtimes, "address_space_limit", lambda: None)
    failure = runtimes._child_failure(killed, "the installed onnxruntime", None)
    assert isinstance(failure, BadInputError) and "SIGKILL" in str(failure)
    crashed = subprocess.CompletedProcess([], -signal.SIGSEGV, "", "")
    assert "died of SIGSEGV" in str(runtimes._child_failure(crashed, "the installed onnxruntime", None))


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) for a noexec mount")
def test_a_runtime_on_a_noexec_mount_is_named_as_such(tmp_path):
    """A user namespace mounts a noexec tmpfs; a cached runtime there is reported as the noexec cache it is, from
    the mount's flags (the loader's own words, `failed to map segment`, decide nothing)."""
    mount = tmp_path / "noexec"
    mount.mkdir()
    script = ("import sys, subprocess\n"
              "from pathlib import Path\n"
              "from graphfix.proof import runtimes\n"
              "from graphfix.process.limits import on_noexec_mount\n"
              "python = Path(sys.argv[1], 'onnxruntime-1.16.3-py3.11', 'bin', 'python')\n"
              "python.parent.mkdir(parents=True)\n"
              "failed = subprocess.CompletedProcess([], 1, '', 'ImportError: libonnxruntime.so: failed to map segment "
              "from shared object')\n"
              "print(on_noexec_mount(python.parent), runtimes._child_failure(failed, 'onnxruntime 1.16.3', python))\n")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o noexec tmpfs "$1" && "{sys.executable}" '
                           f'-c "$2" "$1"', "sh", str(mount), script], capture_output=True, text=True, timeout=60)
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"no user namespaces here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True the onnxruntime cache ")
    assert "is on a filesystem mounted noexec" in done.stdout
    assert not on_noexec_mount(tmp_path)


# --- the library leaves its caller's process as it found it -------------------------------------------------------


def process_wide_state() -> tuple[object, ...]:
    handlers = tuple(signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGXFSZ))
    return threading.excepthook, sys.unraisablehook, sys.excepthook, handlers


def test_the_library_api_leaves_hooks_and_signal_handlers_untouched_during_and_after_a_run(tmp_path):
    """Sampled from the progress callback too, so that a hook swapped for the duration of a run is seen."""
    before = process_wide_state()
    seen: list[tuple[object, ...]] = []
    graphfix.repair(SOURCE, tmp_path / "out.onnx", on_step=lambda step: seen.append(process_wide_state()))
    graphfix.check(tmp_path / "out.onnx")
    graphfix.describe(tmp_path / "out.onnx")
    assert seen and all(state == before for state in seen)
    assert process_wide_state() == before


def test_a_jobs_batch_leaves_hooks_and_signal_handlers_untouched_during_and_after_it(tmp_path):
    before = process_wide_state()
    seen: list[tuple[object, ...]] = []
    directory = tmp_path / "export" / "onnx"
    directory.mkdir(parents=True)
    for name in ("decoder_model_merged.onnx", "decoder_model_merged_quantized.onnx"):
        shutil.copyfile(SOURCE, directory / name)
    graphfix.repair_directory(tmp_path / "export", tmp_path / "fixed", jobs=2,
                              on_progress=lambda *_: seen.append(process_wide_state()))
    assert seen and all(state == before for state in seen)
    assert process_wide_state() == before


@pytest.mark.parametrize("arguments", [{"batches": ()}, {"source_lengths": ()}, {"steps": 1}, {"batches": (0,)}],
                         ids=["no-batch", "no-source-length", "one-step", "batch-0"])
def test_a_proof_that_would_prove_nothing_is_a_value_error(marian_legacy, arguments):
    with pytest.raises(ValueError, match="a proof needs"):
        graphfix.validate(marian_legacy, **arguments)
