"""OpenVINO (CPU plug-in, Python API) as a plain client of graphfix's repaired merged decoder: encoder and merged
decoder compiled with INFERENCE_PRECISION_HINT f32, step 1 on the no-cache branch with empty past, then every present
fed back as past with use_cache_branch=True. The cached logits equal full recompute (the no-cache branch over the
whole prefix) at every step and, for text models, PyTorch's greedy tokens and logits. Optimum's unrepaired merged
decoder does not even compile: the CPU plug-in refuses an If whose outputs have no static rank, which the
zero-element dummy encoder presents of the cache branch cause (OpenVINO reads them as rank-0 constants)."""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

from .conftest import MAX_NEW_TOKENS, MERGED, RUNTIME_ARCHS, SOURCE_IDS, assert_scores_match, model_config
from .plain_loop import decoder_feeds, greedy_loop, speech_source, text_source

OPENVINO_VERSION = "2026.4.1"
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def test_the_pinned_openvino_is_the_one_measured():
    assert ov.__version__.startswith(OPENVINO_VERSION + "-"), ov.__version__


def openvino_client(export, arch, config=F32):
    """The plain loop on OpenVINO: `decode(input_ids, past)` for plain_loop.greedy_loop, written only against
    OpenVINO's API (read_model, compile_model, infer)."""
    core = ov.Core()
    encoder = core.compile_model(core.read_model(export / "encoder_model.onnx"), "CPU", config)
    decoder = core.compile_model(core.read_model(export / MERGED), "CPU", config)
    encoder_feeds = (speech_source(model_config(export)["num_mel_bins"]) if arch == "whisper"
                     else text_source(SOURCE_IDS[arch]))
    hidden = encoder(encoder_feeds)[encoder.output("last_hidden_state")]
    names = {port.get_any_name() for port in decoder.inputs}
    # Empty past of the declared (batch, heads, 0, head_dim) for the no-cache branch.
    empty_past = {port.get_any_name(): np.zeros((1, port.get_partial_shape()[1].get_length(), 0,
                                                 port.get_partial_shape()[3].get_length()), np.float32)
                  for port in decoder.inputs if port.get_any_name().startswith("past_key_values.")}

    def decode(input_ids, past):
        feeds = decoder_feeds(input_ids, hidden, encoder_feeds, names)
        feeds |= empty_past if past is None else past
        feeds["use_cache_branch"] = np.array([past is not None])
        result = decoder(feeds)
        outputs = {port.get_any_name(): np.array(result[port]) for port in decoder.outputs}
        return outputs["logits"], {name: value for name, value in outputs.items() if name.startswith("present.")}

    return decoder, decode


def run_loop(decode, export):
    config = model_config(export)
    return greedy_loop(decode, start_token=config["decoder_start_token_id"], eos_token=config["eos_token_id"],
                       max_new_tokens=MAX_NEW_TOKENS)


@pytest.mark.parametrize("arch", RUNTIME_ARCHS)
def test_openvino_f32_plain_loop_on_the_repaired_merged_decoder_matches_full_recompute_and_pytorch(
        arch, repaired_export, pytorch_reference, pytorch_whisper_reference):
    export = repaired_export(arch)
    decoder, decode = openvino_client(export, arch)
    assert decoder.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    answer = run_loop(decode, export)

    assert answer["past_lengths"] == list(range(MAX_NEW_TOKENS))  # every step after the first ran the cache branch
    assert_scores_match(answer["logits"], np.array(answer["full_recompute"]))
    expected = pytorch_whisper_reference() if arch == "whisper" else pytorch_reference(arch)
    assert answer["tokens"] == expected.tokens[0]
    assert_scores_match(answer["logits"], expected.logits[0])


@pytest.mark.parametrize("arch", RUNTIME_ARCHS)
def test_openvino_cannot_compile_the_unrepaired_merged_decoder(arch, exports):
    core = ov.Core()
    with pytest.raises(RuntimeError, match="CPU plug-in doesn't support If operation with dynamic rank") as caught:
        core.compile_model(core.read_model(exports / arch / MERGED), "CPU", F32)
    assert "present.1.encoder." in str(caught.value)

    # Why: OpenVINO's ONNX frontend reads the cache branch's zero-element dummy, a Constant of dims
    # (0, heads, 1, head_dim), as a rank-0 constant, while the no-cache branch's present.N.encoder.* are rank 4; the
    # If output then has no static rank. graphfix's repair replaces the dummies by the past they stand for (the test
    # above compiles and runs the repaired file).
    model = core.read_model(exports / arch / MERGED)
    branch_if = next(op for op in model.get_ops() if op.get_type_name() == "If")
    ranks = {branch: {result.get_friendly_name().split("/")[0]: result.get_output_partial_shape(0).rank
                      for result in branch_if.get_function(branch).get_results()} for branch in (0, 1)}
    then_branch, else_branch = ranks[0], ranks[1]  # OpenVINO's body 0 is ONNX's then_branch (use_cache_branch)
    encoder_presents = [name for name in then_branch if name.startswith("present.") and ".encoder." in name]
    assert encoder_presents
    for name in encoder_presents:
        assert then_branch[name] == ov.Dimension(0) and else_branch[name] == ov.Dimension(4), (name, ranks)


def test_openvino_default_precision_is_recorded_and_f32_where_the_cpu_has_no_bf16(repaired_export):
    """Without a hint the CPU plug-in infers in bf16 on CPUs that have it (AVX512_BF16 / AMX report 'BF16' in
    OPTIMIZATION_CAPABILITIES; f16 on ARM); a client wanting the numbers of the export must ask for f32. Only the
    f32 case is measured here (the CI machine has neither)."""
    export = repaired_export("marian")
    core = ov.Core()
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    default_decoder, default_decode = openvino_client(export, "marian", config={})
    default_precision = default_decoder.get_property("INFERENCE_PRECISION_HINT")
    _, f32_decode = openvino_client(export, "marian")
    default_logits = np.array(run_loop(default_decode, export)["logits"])
    f32_logits = np.array(run_loop(f32_decode, export)["logits"])
    difference = float(np.abs(default_logits - f32_logits).max())
    print(f"\nOpenVINO {ov.__version__} on {core.get_property('CPU', 'FULL_DEVICE_NAME')}: capabilities "
          f"{capabilities}, default INFERENCE_PRECISION_HINT {default_precision}, max |default - f32 logits| "
          f"{difference:.3g}")
    if "BF16" in capabilities or "FP16" in capabilities:  # bf16 on x86 with AVX512_BF16/AMX, f16 on ARM
        assert default_precision != ov.Type.f32
        assert difference > 0
    else:
        assert default_precision == ov.Type.f32
        assert difference == 0.0
