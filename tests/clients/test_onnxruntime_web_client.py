"""onnxruntime-web (WASM backend, in node) as a plain client of graphfix's repaired merged decoder
(js/web_plain_loop.mjs): cached steps equal full recompute in the same session and, for text models, PyTorch's
greedy tokens and logits; on the unrepaired decoder it dies at step 3, fed the cache branch's dummy encoder KV,
exactly like onnxruntime-node."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import MAX_NEW_TOKENS, MERGED, RUNTIME_ARCHS, assert_scores_match, loop_source, model_config
from .plain_loop import speech_source

ONNXRUNTIME_WEB_VERSION = "1.30.0"


@pytest.fixture(scope="module")
def web_loop(node, tmp_path_factory):
    features = tmp_path_factory.mktemp("web") / "input_features.f32"

    def run(arch, model_dir):
        source = loop_source(arch, model_dir)
        if "numMelBins" in source:  # too long for a command line: a raw float32 file of plain_loop.speech_source
            array = speech_source(source["numMelBins"])["input_features"]
            array.astype("<f4").tofile(features)
            source = {"inputFeatures": str(features), "dims": list(array.shape)}
        return node("web_plain_loop.mjs", {
            "encoder": str(model_dir / "encoder_model.onnx"), "decoder": str(model_dir / MERGED),
            "config": str(model_dir / "config.json"), "maxNewTokens": MAX_NEW_TOKENS, "source": source})

    return run


@pytest.mark.parametrize("arch", RUNTIME_ARCHS)
def test_onnxruntime_web_plain_loop_on_the_repaired_merged_decoder_matches_full_recompute_and_pytorch(
        arch, repaired_export, web_loop, pytorch_reference, pytorch_whisper_reference):
    answer = web_loop(arch, repaired_export(arch))

    assert "error" not in answer, answer
    assert answer["version"] == ONNXRUNTIME_WEB_VERSION
    assert answer["pastLengths"] == list(range(MAX_NEW_TOKENS))
    assert_scores_match(answer["logits"], np.array(answer["fullRecompute"]))
    expected = pytorch_whisper_reference() if arch == "whisper" else pytorch_reference(arch)
    assert answer["tokens"] == expected.tokens[0]
    assert_scores_match(answer["logits"], expected.logits[0])


@pytest.mark.parametrize("arch", RUNTIME_ARCHS)
def test_onnxruntime_web_plain_loop_on_the_unrepaired_decoder_fails_when_the_dummy_is_fed_back(
        arch, exports, web_loop):
    answer = web_loop(arch, exports / arch)

    # Step 1 (no-cache branch) returns real encoder KV; step 2 (cache branch) returns the dummies; step 3 feeds them.
    assert answer.get("failedStep") == 3, {k: v for k, v in answer.items() if k not in ("logits", "fullRecompute")}
    assert "encoder_attn" in answer["error"], answer["error"]
    assert len(answer["logits"]) == 2
    assert model_config(exports / arch)["decoder_start_token_id"] == answer["tokens"][0]
