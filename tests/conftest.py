"""Shared fixtures. The main tests run on the committed samples, made by the real Optimum exporters
(sample_models/make_samples.py); edge cases are built with onnx.helper in the tests that need them."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from graphfix.cli import app

# Every pass run by the tests, in this process or in a graphfix subprocess, is held to "no finding, no change" and
# "findings, a change" (passes/contract.py), which the hot path leaves to --debug.
os.environ["GRAPHFIX_CHECK_PASSES"] = "1"
# Output is read as in a pipe, WIDTH columns: pytest-xdist's workers are started with COLUMNS=80 and LINES=24, and a
# developer's shell may export them; the tests about $COLUMNS set it themselves.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

ROOT = Path(__file__).resolve().parent.parent
# The suite's own onnxruntime cache, never the developer's ~/.cache/graphfix nor a GRAPHFIX_CACHE of their shell: a
# test's outcome must not depend on what a user happens to have cached. GRAPHFIX_TEST_CACHE names a cache to share
# between checkouts (each release costs a pip install once); tests about the cache itself make their own in tmp.
os.environ["GRAPHFIX_CACHE"] = os.environ.get("GRAPHFIX_TEST_CACHE") or str(ROOT / "build" / "test-runtime-cache")


def _one_thread_sessions() -> None:
    """The tests' own onnxruntime sessions run on one thread, as graphfix's proof runs a small model: onnxruntime's
    default pool (a thread per core, spinning between runs) would only take CPU from the other pytest-xdist worker."""
    import onnxruntime

    default = onnxruntime.InferenceSession

    class OneThreadSession(default):
        def __init__(self, path_or_bytes, sess_options=None, providers=None, *args, **kwargs):
            if sess_options is None:
                sess_options = onnxruntime.SessionOptions()
                sess_options.intra_op_num_threads = 1
            super().__init__(path_or_bytes, sess_options, providers, *args, **kwargs)

    onnxruntime.InferenceSession = OneThreadSession


_one_thread_sessions()

SAMPLES = sorted((ROOT / "sample_models" / "legacy").glob("*.onnx")) + sorted((ROOT / "sample_models" / "current").glob("*.onnx"))
FIXED_SHAPE_SAMPLES = sorted((ROOT / "sample_models" / "fixed-shape").glob("*.onnx"))
SAMPLE_IDS = [f"{p.parent.name}-{p.stem}" for p in SAMPLES]
assert SAMPLES, "sample_models/ is empty: run `make samples`"


# --- the toy merged decoder, built with onnx.helper -----------------------------------------------------------------

TOY_KV = ["batch", 2, "enc_len", 4]


def toy_value(name, elem=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape if shape is not None else TOY_KV)


def toy_decoder(dummy_nodes, dummy_output="dummy", *, swap=False, flag="use_cache_branch", layers=(0,),
             extra_initializers=(), branch_initializers=(), present_names=None):
    """The one toy merged decoder of the pass tests (test_passes, test_pass_contract): one layer (or `layers`), whose
    cache branch returns `dummy_output` for present.0.encoder.key."""
    present_names = present_names or [f"present.{layer}.encoder.key" for layer in layers]
    past_inputs = [toy_value(f"past_key_values.{layer}.encoder.key") for layer in layers]
    outputs = [toy_value(name) for name in present_names]
    with_past = helper.make_graph(
        # The Add reads the past, which is what marks this branch as the cache branch.
        list(dummy_nodes) + [helper.make_node("Add", ["past_key_values.0.encoder.key"] * 2, ["touch"])],
        "with_past", [], [toy_value(dummy_output if i == 0 else f"d{i}") for i in range(len(outputs))],
        initializer=list(branch_initializers))
    for i in range(1, len(outputs)):
        with_past.node.append(helper.make_node("Constant", [], [f"d{i}"], value=numpy_helper.from_array(
            np.zeros((0, 2, 1, 4), np.float32))))
    no_past = helper.make_graph(
        [helper.make_node("Identity", ["encoder_hidden_states"], [f"real{i}"]) for i in range(len(outputs))],
        "no_past", [], [toy_value(f"real{i}") for i in range(len(outputs))])
    then_branch, else_branch = (no_past, with_past) if swap else (with_past, no_past)
    condition = helper.make_node("Not", [flag], ["not_flag"]) if swap else None
    if_node = helper.make_node("If", ["not_flag" if swap else flag], present_names, name="my_if",
                               then_branch=then_branch, else_branch=else_branch)
    graph = helper.make_graph(
        ([condition] if condition else []) + [if_node], "decoder",
        [toy_value(flag, TensorProto.BOOL, [1]), toy_value("encoder_hidden_states")] + past_inputs, outputs,
        initializer=list(extra_initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])



def proof_process_command(statements: str) -> list[str]:
    """The proof process's command line (child.py), running `statements` once graphfix's folder is its package."""
    import sys

    from graphfix.proof.child import boot_command

    command = boot_command(sys.executable)
    command[-1] = command[-1].split("from graphfix.proof.client_loop import serve")[0] + statements
    return command


def session_members(sid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process of session `sid`, zombies excepted."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append((int(entry.name), cmdline))
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# The fast tier (make test-fast) runs the per-sample tests on one sample of each exporter generation; make test on all.
FAST_SAMPLES = {"legacy-marian", "current-t5"}


def fast_tier_samples(paths: list[Path]) -> list:
    """`paths` as pytest params named parent-stem, the exporter samples outside FAST_SAMPLES marked slow (fixed-shape,
    deep and variant files, each a family of its own, stay in the fast tier)."""
    return [pytest.param(path, id=f"{path.parent.name}-{path.stem}",
                         marks=pytest.mark.slow if path in SAMPLES and f"{path.parent.name}-{path.stem}" not in
                         FAST_SAMPLES else ()) for path in paths]


@pytest.fixture(params=fast_tier_samples(SAMPLES))
def sample(request) -> Path:
    """Every committed merged decoder, exactly as its exporter wrote it."""
    return request.param


@pytest.fixture
def marian_legacy() -> Path:
    return ROOT / "sample_models" / "legacy" / "marian.onnx"


@pytest.fixture
def marian_current() -> Path:
    return ROOT / "sample_models" / "current" / "marian.onnx"


def shared_dir(tmp_path_factory) -> Path:
    """The run's temporary directory, shared by its pytest-xdist workers (each has its own basetemp below it); a
    plain run's own basetemp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Held by one process of the run at a time: what one worker makes, the others wait for and reuse."""
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The wheel of this tree, built once per run by pip from a copy of the sources, as any installer builds it
    (pip fetches the build backend); every test that installs or inspects the wheel shares it, whichever worker."""
    import shutil
    import subprocess
    import sys

    dist = shared_dir(tmp_path_factory) / "wheel-dist"
    with locked(shared_dir(tmp_path_factory) / "wheel.lock"):
        if not dist.is_dir():
            source = tmp_path_factory.mktemp("wheel-source")
            shutil.copytree(ROOT / "graphfix", source / "graphfix", ignore=shutil.ignore_patterns("__pycache__"))
            for name in ("pyproject.toml", "README.md", "LICENSE"):
                shutil.copy(ROOT / name, source / name)
            staging = tmp_path_factory.mktemp("dist")
            proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                                   "--disable-pip-version-check", "-w", str(staging), str(source)],
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, proc.stderr[-2000:]
            staging.rename(dist)  # whole or absent: a worker never finds half a wheel
    return next(dist.glob("graphfix-*.whl"))


@pytest.fixture(scope="session")
def repaired(tmp_path_factory):
    """Repair each sample once per run (with validation), whichever worker asks first, and hand out the output."""
    from graphfix import repair

    directory = shared_dir(tmp_path_factory) / "repaired"
    directory.mkdir(exist_ok=True)

    def get(source: Path) -> Path:
        out = directory / f"{source.parent.name}-{source.name}"
        with locked(directory / f"{out.name}.lock"):
            if not out.exists():
                repair(source, out)  # lands whole or not at all
        return out

    return get


@pytest.fixture
def cli():
    """Run the CLI in-process. `validator=` replaces the decode proof of repair (the library's seam for tests)."""
    runner = CliRunner()

    def invoke(*args: str, validator=None):
        return runner.invoke(app, [str(a) for a in args], obj={"validator": validator} if validator else None)

    return invoke


# The line repair and check print after their summary: which onnxruntime releases load the output.
RELEASE_LINE = re.compile(r"^(the output|its models|as it is, it|as they are, they) (loads?|: no) ")


def result_lines(stdout: str) -> list[str]:
    """A command's output lines up to its summary (the release line and the `next:` hint after it left out)."""
    lines = stdout.splitlines()
    while lines and lines[-1].startswith("next: graphfix "):
        lines = lines[:-1]
    return lines[:-1] if lines and RELEASE_LINE.match(lines[-1]) else lines


def drain_pty(primary: int) -> bytes:
    """Everything written to a pseudo-terminal whose other side is closed, then the primary side closed (Linux reads
    EIO, not EOF, once the last writer is gone)."""
    drawn = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(primary)
    return drawn


# The longest modules, started first: under pytest-xdist (make test) a worker that starts one of them last runs it
# alone while the other idles. Longest first, as a timeline of make test measured them; --dist loadfile runs each
# module whole on one worker, and --no-loadscope-reorder keeps this order (xdist would put the modules with the most
# tests first).
LONGEST_FIRST = (
    "tests/package/test_python_versions.py",
    "tests/process/test_termination.py",
    "tests/process/test_interruption_and_limits.py",
    "tests/end_to_end/test_fuzz.py",
    "tests/cli/test_json_and_hook.py",
    "tests/end_to_end/test_repair_samples.py",
    "tests/targets/test_target_runtime.py",
    "tests/package/test_installed_wheel.py",
    "tests/cli/test_output.py",
    "tests/batch/test_tree_repair.py",
    "tests/docs/test_docs.py",
    "tests/proof/test_runtime_isolation.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)
