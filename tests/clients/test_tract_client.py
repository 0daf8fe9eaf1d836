"""tract (Python bindings, CPU) as a plain client of the split pair `graphfix split` writes: the encoder, then
decoder_model.onnx at step 1 and decoder_with_past_model.onnx fed its own presents afterwards, matches full recompute
(decoder_model.onnx over the whole prefix) and PyTorch for the text models. tract takes no merged decoder, repaired
or not: its If analysis unifies both branches' output shapes, and present.N.decoder.* is decoder_sequence_length
long in the no-cache branch but past + decoder_sequence_length in the cache branch. On Whisper, tract panics inside
its matmul packing running decoder_model.onnx at one decoder token, Optimum's own split file as much as graphfix's,
so no Whisper client on tract can take its first step. Every client runs in a subprocess (tract_client.py): a panic
aborts the process, which the tests see as a failed subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import MAX_NEW_TOKENS, MERGED, assert_scores_match, loop_source, model_config

TRACT_VERSION = "0.23.9"
CLIENT = Path(__file__).resolve().parent / "tract_client.py"
TEXT_ARCHS = ["marian", "m2m100", "pegasus"]
PANIC = "panicked at core/src/ops/matmul/optimized.rs"

# The smallest reproduction of the Whisper panic: Whisper's no-past decoder at one decoder token, all-zero inputs.
REPRO = """import sys, numpy as np, tract
model = tract.onnx().load(sys.argv[1]).into_model().into_runnable()
model.run([np.zeros((1, int(sys.argv[2])), np.int64), np.zeros((1, 1500, 32), np.float32)])
print('ran')"""


def run_client(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLIENT), *args], capture_output=True, text=True, timeout=600)


def tract_loop(arch: str, export: Path, decoders: Path) -> subprocess.CompletedProcess:
    config = model_config(export)
    return run_client(json.dumps({
        "encoder": str(export / "encoder_model.onnx"), "decoder": str(decoders / "decoder_model.onnx"),
        "decoderWithPast": str(decoders / "decoder_with_past_model.onnx"), "source": loop_source(arch, export),
        "startToken": config["decoder_start_token_id"], "eosToken": config["eos_token_id"],
        "maxNewTokens": MAX_NEW_TOKENS}))


def test_the_pinned_tract_is_the_one_measured():
    import tract

    assert tract.version() == TRACT_VERSION


@pytest.mark.parametrize("arch", TEXT_ARCHS)
def test_tract_plain_loop_on_the_graphfix_split_pair_matches_full_recompute_and_pytorch(
        arch, exports, split_export, pytorch_reference):
    done = tract_loop(arch, exports / arch, split_export(arch))

    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["tract"] == TRACT_VERSION
    assert answer["past_lengths"] == list(range(MAX_NEW_TOKENS))
    assert_scores_match(answer["logits"], np.array(answer["full_recompute"]))
    expected = pytorch_reference(arch)
    assert answer["tokens"] == expected.tokens[0]
    assert_scores_match(answer["logits"], expected.logits[0])


@pytest.mark.parametrize("repaired", [False, True], ids=["optimum", "graphfix-repaired"])
@pytest.mark.parametrize("arch", TEXT_ARCHS + ["whisper"])
def test_tract_refuses_every_merged_decoder_because_the_branches_present_lengths_differ(
        arch, repaired, exports, repaired_export):
    merged = (repaired_export(arch) if repaired else exports / arch) / MERGED
    done = run_client("--load", str(merged))

    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    error = json.loads(done.stdout.splitlines()[-1])["error"]
    assert 'Failed analyse for node #' in error and '"optimum::if" If' in error, error
    assert ("Impossible to unify Add([Sym(decoder_sequence_length), Sym(past_decoder_sequence_length)]) "
            "with Sym(decoder_sequence_length)") in error, error


@pytest.mark.parametrize("decoders", ["graphfix-split", "optimum-split"])
def test_tract_panics_on_whisper_s_no_past_decoder_at_the_first_step(decoders, exports, split_export):
    export = exports / "whisper"
    done = tract_loop("whisper", export, split_export("whisper") if decoders == "graphfix-split" else export)

    assert done.returncode == -signal.SIGABRT, done.stdout + done.stderr[-3000:]
    assert done.stdout == ""  # it died before any step's answer
    assert PANIC in done.stderr and "b_packing" in done.stderr, done.stderr[:3000]


@pytest.mark.parametrize("decoders", ["graphfix-split", "optimum-split"])
def test_tract_runs_whisper_s_no_past_decoder_only_at_two_decoder_tokens(decoders, exports, split_export):
    """The minimal reproduction (REPRO, quoted in README.md, Runtimes): one decoder token panics in matmul packing, two run,
    three fail to broadcast against a length of 2 that tract fixed while optimising; onnxruntime runs all three
    (`graphfix split` proved the pair with full recompute over 8 tokens before writing it)."""
    decoder = (split_export("whisper") if decoders == "graphfix-split" else exports / "whisper") / "decoder_model.onnx"

    def repro(length: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", REPRO, str(decoder), str(length)], capture_output=True,
                              text=True, timeout=600)

    one, two, three = repro(1), repro(2), repro(3)
    assert one.returncode == -signal.SIGABRT and PANIC in one.stderr, one.stderr[:3000]
    assert two.returncode == 0 and two.stdout.strip() == "ran", two.stderr[:3000]
    assert three.returncode == 1, three.stderr[:3000]
    assert '"/model/decoder/layers.0/self_attn/Add" Add' in three.stderr
    assert "Can not broadcast 3 against 2" in three.stderr

    import onnxruntime as ort

    session = ort.InferenceSession(str(decoder), providers=["CPUExecutionProvider"])
    for length in (1, 2, 3):
        logits = session.run(["logits"], {"input_ids": np.zeros((1, length), np.int64),
                                          "encoder_hidden_states": np.zeros((1, 1500, 32), np.float32)})[0]
        assert logits.shape == (1, length, model_config(exports / "whisper")["vocab_size"])
