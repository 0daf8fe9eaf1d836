"""JavaScript clients on onnxruntime-node: transformers.js, and a plain present->past loop (the stand-in for the
seeds' Rust/C#/Java clients), generate on a repaired export exactly what the PyTorch model generates; the same
plain loop dies on the unrepaired export at the first step that is fed the cache branch's dummy encoder KV."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import ARCHS, GENERATION, MAX_NEW_TOKENS, MERGED, SOURCE_IDS, TRANSFORMERS_JS_ARCHS, assert_scores_match


def _plain_loop(node, arch, model_dir):
    return node("plain_loop.mjs", {
        "encoder": str(model_dir / "encoder_model.onnx"), "decoder": str(model_dir / MERGED),
        "config": str(model_dir / "config.json"), "inputIds": SOURCE_IDS[arch], "maxNewTokens": MAX_NEW_TOKENS,
        "minNewTokens": MAX_NEW_TOKENS})


@pytest.mark.parametrize("arch", TRANSFORMERS_JS_ARCHS)
def test_transformers_js_on_the_repaired_onnx_community_layout_generates_the_pytorch_tokens(
        arch, repaired_onnx_community, pytorch_reference, node):
    model_dir = repaired_onnx_community(arch)
    answer = node("transformers_js_generate.mjs", {"modelDir": str(model_dir), "inputIds": SOURCE_IDS[arch],
                                                   "generation": GENERATION})

    assert answer["sessions"] == ["model", "decoder_model_merged"]  # onnx/encoder_model + onnx/decoder_model_merged
    expected = pytorch_reference(arch)
    assert answer["tokens"] == expected.tokens[0]
    assert_scores_match([[-np.inf if v is None else v for v in step] for step in answer["scores"]], expected.scores[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_present_to_past_loop_on_the_repaired_decoder_generates_the_pytorch_tokens(
        arch, repaired_export, pytorch_reference, node):
    answer = _plain_loop(node, arch, repaired_export(arch))

    assert "error" not in answer, answer
    expected = pytorch_reference(arch)
    assert answer["tokens"] == expected.tokens[0]
    assert_scores_match(answer["logits"], expected.logits[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_present_to_past_loop_on_the_unrepaired_decoder_fails_when_the_dummy_is_fed_back(
        arch, exports, pytorch_reference, node):
    answer = _plain_loop(node, arch, exports / arch)

    # Step 1 (no-cache branch) returns real encoder KV; step 2 (cache branch) returns the dummies; step 3 feeds them.
    assert answer.get("failedStep") == 3, answer
    assert "encoder_attn" in answer["error"] or "EncDecAttention" in answer["error"], answer["error"]
    expected = pytorch_reference(arch)
    assert answer["tokens"] == expected.tokens[0][:3]  # right until then: the dummies are the only fault
    assert_scores_match(answer["logits"], expected.logits[0][:2])
