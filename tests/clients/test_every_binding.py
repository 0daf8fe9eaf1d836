"""Every example client of examples/ (examples/<lang>/run, the contract of examples/README.md), in every onnxruntime
release it binds, on the repaired export of every sample family: it prints the ids that examples/python prints and
that graphfix's no-cache full recompute gives, and it fails, with onnxruntime's own error, on the unrepaired export.

The examples are discovered, not listed: a new examples/<lang>/run (and its `releases` file) is tested by this
module as it lands. The exports are committed (sample_models/exports/, made by `make client-samples` with the real
exporters), so nothing here needs torch: `make test-examples` runs it in the test venv; `make test-clients` runs it
first. Each example builds itself and finds its runtime on first use (cargo, Maven, go, cc, npm, pip), so the first
run of each is slow.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..end_to_end.test_examples import full_recompute_tokens, generation_config
from .conftest import ROOT

EXAMPLES = ROOT / "examples"
EXPORTS = ROOT / "sample_models" / "exports"
RELEASES = ("1.16.3", "current")  # what `run --ort` accepts; an example without a `releases` file binds both
# The families of sample_models/exports/ made for the clients: Marian by both Optimum generations, T5 (its decoder
# KV are `EncDecAttention`, no decoder_attention_heads in its config) and M2M100 (forced_bos_token_id).
FAMILIES = {"legacy-marian": "legacy-marian", "current-marian": "current-marian-opset21", "current-t5": "current-t5",
            "current-m2m100": "current-m2m100"}
# graphfix repair's --target-ort for each release the examples bind.
TARGETS = {"1.16.3": ["--target-ort", "1.16"], "current": []}
# What onnxruntime says when it cannot run the original: refused at load (1.16.3 and IR 10 / opset 21), or the
# dummy encoder KV fed back at step 3 (Reshape / MatMul / Concat / broadcast errors inside the If).
RUNTIME_ERROR = re.compile(r"Non-zero status code returned while running|Unsupported model IR version|"
                           r"opset|Reshape|MatMul|Concat|broadcast", re.I)
DEFAULT_SOURCE_IDS = [17, 42, 8, 61, 33, 5]  # what every example encodes when given no ids
MAX_NEW_TOKENS = 32  # every example's default --max-new-tokens
TIMEOUT = 1800  # a first run builds the example (cargo, Maven, go, cc) or installs its runtime


@dataclass(frozen=True)
class Binding:
    language: str  # the example's folder name
    release: str   # 1.16.3 or current

    @property
    def run(self) -> Path:
        return EXAMPLES / self.language / "run"

    def __str__(self) -> str:
        return f"{self.language}-{self.release}"


def releases_of(example: Path) -> list[str]:
    """The releases an example binds: its `releases` file (one per line), else both."""
    declared = example / "releases"
    if not declared.is_file():
        return list(RELEASES)
    names = declared.read_text(encoding="utf-8").split()
    assert names and set(names) <= set(RELEASES), f"{declared}: expected some of {RELEASES}, got {names}"
    return names


def bindings() -> list[Binding]:
    return [Binding(run.parent.name, release) for run in sorted(EXAMPLES.glob("*/run"))
            for release in releases_of(run.parent)]


BINDINGS = bindings()
CASES = [(binding, family) for binding in BINDINGS for family in FAMILIES]
CASE_IDS = [f"{binding}-{family}" for binding, family in CASES]


def run_example(binding: Binding, model_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`examples/<lang>/run --ort RELEASE [ARGS] MODEL_DIR`, as a user types it: default source ids and length
    unless ARGS say otherwise."""
    return subprocess.run([str(binding.run), "--ort", binding.release, *args, str(model_dir)], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=ROOT)


def printed_sequence(done: subprocess.CompletedProcess[str]) -> list[int]:
    """The contract's answer: the last line of stdout, ids separated by spaces."""
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-4000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"nothing on stdout:\n{done.stderr[-4000:]}"
    return [int(token) for token in lines[-1].split()]


@pytest.fixture(scope="session")
def repaired(tmp_path_factory):
    """`repaired(family, release)`: the family's export repaired for that release by the graphfix CLI, as a user
    does it; made once per session."""
    root = tmp_path_factory.mktemp("repaired-for-clients")
    made: dict[tuple[str, str], Path] = {}
    graphfix = Path(sys.executable).parent / "graphfix"

    def get(family: str, release: str) -> Path:
        if (family, release) not in made:
            out = root / f"{family}-for-{release}"
            done = subprocess.run([str(graphfix), "repair", *TARGETS[release], str(EXPORTS / FAMILIES[family]),
                                   str(out)], capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"graphfix repair {family} for {release}:\n{done.stdout}{done.stderr}"
            made[family, release] = out
        return made[family, release]

    return get


@pytest.fixture(scope="session")
def references(repaired):
    """`references(family, release)`: (examples/python's ids, the full recompute's ids) on the repaired export."""
    made: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def get(family: str, release: str) -> tuple[list[int], list[int]]:
        if (family, release) not in made:
            folder = repaired(family, release)
            python = printed_sequence(run_example(Binding("python", release), folder))
            made[family, release] = python, full_recompute_tokens(folder, DEFAULT_SOURCE_IDS, MAX_NEW_TOKENS)
        return made[family, release]

    return get


def test_every_example_declares_the_contracts_releases():
    assert {binding.language for binding in BINDINGS} >= {"python", "javascript"}
    for run in EXAMPLES.glob("*/run"):
        assert run.stat().st_mode & 0o111, f"{run} is not executable"
        assert releases_of(run.parent)


@pytest.mark.parametrize(("binding", "family"), CASES, ids=CASE_IDS)
def test_the_example_decodes_the_repaired_export_like_python_and_full_recompute(binding, family, repaired,
                                                                                references):
    folder = repaired(family, binding.release)
    python, recompute = references(family, binding.release)
    assert len(recompute) > 3, recompute  # the sample feeds the cache back more than once

    printed = printed_sequence(run_example(binding, folder))

    assert printed == recompute
    assert printed == python
    forced = generation_config(folder).get("forced_bos_token_id")
    if forced is not None:  # M2M100's target language, whatever its logits prefer
        assert printed[1] == forced


@pytest.mark.parametrize(("binding", "family"), CASES, ids=CASE_IDS)
def test_the_example_fails_with_onnxruntimes_error_on_the_unrepaired_export(binding, family):
    done = run_example(binding, EXPORTS / FAMILIES[family])

    assert done.returncode != 0, f"decoded the unrepaired export: {done.stdout[-500:]}"
    assert RUNTIME_ERROR.search(done.stderr), done.stderr[-4000:]


@pytest.mark.parametrize("binding", BINDINGS, ids=map(str, BINDINGS))
def test_the_example_encodes_the_given_source_ids_and_stops_at_max_new_tokens(binding, repaired):
    folder = repaired("current-t5", binding.release)  # the sample whose ids depend on the source (make_samples.py)
    source_ids = [60, 61, 62, 63]
    expected = full_recompute_tokens(folder, source_ids, 5)
    assert expected != full_recompute_tokens(folder, DEFAULT_SOURCE_IDS, 5)  # so the ids given are the ids used

    done = subprocess.run([str(binding.run), "--ort", binding.release, "--max-new-tokens", "5", str(folder),
                           *map(str, source_ids)], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)

    assert printed_sequence(done) == expected
