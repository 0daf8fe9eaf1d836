"""Shared fixtures. The main tests run on the committed samples, made by the real Optimum exporters
(sample_models/make_samples.py); edge cases are built with onnx.helper in the tests that need them."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graphfix.cli import app

# Every pass run by the tests, in this process or in a graphfix subprocess, is held to "no finding, no change" and
# "findings, a change" (passes/contract.py), which the hot path leaves to --debug.
os.environ["GRAPHFIX_CHECK_PASSES"] = "1"

ROOT = Path(__file__).resolve().parent.parent
# The suite's own onnxruntime cache, never the developer's ~/.cache/graphfix nor a GRAPHFIX_CACHE of their shell: a
# test's outcome must not depend on what a user happens to have cached. GRAPHFIX_TEST_CACHE names a cache to share
# between checkouts (each release costs a pip install once); tests about the cache itself make their own in tmp.
os.environ["GRAPHFIX_CACHE"] = os.environ.get("GRAPHFIX_TEST_CACHE") or str(ROOT / "build" / "test-runtime-cache")
SAMPLES = sorted((ROOT / "sample_models" / "legacy").glob("*.onnx")) + sorted((ROOT / "sample_models" / "current").glob("*.onnx"))
FIXED_SHAPE_SAMPLES = sorted((ROOT / "sample_models" / "fixed-shape").glob("*.onnx"))
SAMPLE_IDS = [f"{p.parent.name}-{p.stem}" for p in SAMPLES]
assert SAMPLES, "sample_models/ is empty: run `make samples`"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(params=SAMPLES, ids=SAMPLE_IDS)
def sample(request) -> Path:
    """Every committed merged decoder, exactly as its exporter wrote it."""
    return request.param


@pytest.fixture
def marian_legacy() -> Path:
    return ROOT / "sample_models" / "legacy" / "marian.onnx"


@pytest.fixture
def marian_current() -> Path:
    return ROOT / "sample_models" / "current" / "marian.onnx"


@pytest.fixture(scope="session")
def repaired_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("repaired")


@pytest.fixture(scope="session")
def repaired(repaired_dir):
    """Repair each sample once per session (with validation) and hand out the output path."""
    from graphfix import repair

    cache: dict[Path, Path] = {}

    def get(source: Path) -> Path:
        if source not in cache:
            out = repaired_dir / f"{source.parent.name}-{source.name}"
            repair(source, out)
            cache[source] = out
        return cache[source]

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
