"""The seeds deploy with Rust `ort` on onnxruntime 1.16.3: the proof must hold in that very runtime, not only in
the newest one. The runtime is installed once with pip into graphfix's cache (about 20 s)."""

from __future__ import annotations

import pytest

from graphfix import BadInputError, validate
from graphfix.ort_runtimes import runtime_python

SEEDS_RUNTIME = "1.16.3"


@pytest.fixture(scope="session")
def seeds_runtime():
    runtime_python(SEEDS_RUNTIME)
    return SEEDS_RUNTIME


def test_repaired_sample_decodes_like_full_recompute_in_onnxruntime_1_16_3(sample, repaired, seeds_runtime):
    result = validate(repaired(sample), original=sample, ort_version=seeds_runtime)
    assert result.onnxruntime == SEEDS_RUNTIME
    assert result.ok, result.first_failure
    assert result.max_abs_diff < 1e-4


def test_original_sample_fails_the_plain_loop_in_onnxruntime_1_16_3(sample, seeds_runtime):
    result = validate(sample, ort_version=seeds_runtime)
    assert result.onnxruntime == SEEDS_RUNTIME
    assert not result.ok and "fails in onnxruntime" in result.first_failure


def test_a_malformed_runtime_version_is_refused():
    with pytest.raises(BadInputError, match="X.Y.Z"):
        runtime_python("1.16")


def test_cli_validate_names_the_runtime_it_ran_in(marian_legacy, repaired, seeds_runtime, cli):
    result = cli("validate", repaired(marian_legacy), "--ort-version", seeds_runtime)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"onnxruntime {SEEDS_RUNTIME}" in result.stdout
