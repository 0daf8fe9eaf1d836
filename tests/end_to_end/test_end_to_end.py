"""Every export proven end to end, on real exporter output: vision encoders fed the images their export describes,
repair DIR proving each decoder fed by its own encoder, one verdict on files no onnxruntime loads, and Optimum's
fp16 BART deployed on onnxruntime 1.16.3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from graphfix import BadInputError, repair, validate
from graphfix.io.read import read_model
from graphfix.proof import loadable
from graphfix.proof.encoder_inputs import encoder_feeds
from graphfix.targets import parse_release

from ..conftest import ROOT

EXPORTS = ROOT / "sample_models" / "exports"
VARIANTS = ROOT / "sample_models" / "variants"
VISION = ["current-trocr", "current-donut"]  # ViT + TrOCR, DonutSwin + MBart: whole Optimum export folders
FOLDERS = [*VISION, "current-whisper-128-mel"]


def _export_without_configs(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in ("encoder_model.onnx", "decoder_model_merged.onnx"):
        shutil.copyfile(EXPORTS / name / file, folder / file)
    return folder


# --- 1. encoder inputs from what the export says ------------------------------------------------------------------


def test_a_vit_encoder_is_fed_the_channels_and_image_size_its_export_says():
    model = read_model(EXPORTS / "current-trocr" / "encoder_model.onnx").model
    feeds = encoder_feeds(model, EXPORTS / "current-trocr" / "encoder_model.onnx")
    assert feeds.shapes == {"pixel_values": [3, 32, 32]}  # not 40 channels: the source length is not an image


def test_without_a_config_the_channels_come_from_the_first_convolution_and_the_size_is_refused(tmp_path):
    folder = _export_without_configs("current-trocr", tmp_path)
    (folder / "config.json").write_text(json.dumps({"encoder": {"image_size": 32}}))  # no num_channels
    assert encoder_feeds(read_model(folder / "encoder_model.onnx").model,
                         folder / "encoder_model.onnx").shapes == {"pixel_values": [3, 32, 32]}
    (folder / "config.json").unlink()
    with pytest.raises(BadInputError, match="image size input 'pixel_values'"):
        encoder_feeds(read_model(folder / "encoder_model.onnx").model, folder / "encoder_model.onnx")


def _audio_encoder(tmp_path: Path, config: dict | None) -> Path:
    """An encoder whose features are unsized in its signature, as Optimum leaves them: [batch, feature_size,
    encoder_sequence_length] into a Conv over 80 channels."""
    from onnx import TensorProto, helper

    conv = helper.make_node("Conv", ["input_features", "w"], ["last_hidden_state"], pads=[1, 1])
    graph = helper.make_graph(
        [conv], "audio",
        [helper.make_tensor_value_info("input_features", TensorProto.FLOAT,
                                       ["batch_size", "feature_size", "encoder_sequence_length"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 80, 3], [0.0] * 960)])
    path = tmp_path / "encoder_model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    return path


def test_audio_features_come_from_num_mel_bins_else_from_the_first_convolution(tmp_path):
    whisper = _audio_encoder(tmp_path, {"num_mel_bins": 80, "max_source_positions": 1500})
    assert encoder_feeds(read_model(whisper).model, whisper).shapes == {"input_features": [80, 3000]}
    (tmp_path / "config.json").unlink()
    assert encoder_feeds(read_model(whisper).model, whisper).shapes == {"input_features": [80, "source"]}


def test_validate_dir_without_anything_saying_the_image_size_names_the_input(cli, tmp_path):
    result = cli("validate", _export_without_configs("current-trocr", tmp_path))
    assert result.exit_code == 2 and "'pixel_values'" in result.stderr, result.stderr


@pytest.mark.parametrize("name", VISION)
def test_validate_dir_runs_a_vision_export_end_to_end(cli, name):
    """The original fails the plain loop on its logits or KV, not on the encoder's first convolution."""
    result = cli("validate", EXPORTS / name, "--json")
    assert result.exit_code == 1, result.stderr
    (model,) = json.loads(result.stdout)["models"]
    assert model["encoder"] == str(EXPORTS / name / "encoder_model.onnx")
    assert "Conv" not in model["first_failure"] and "step 3" in model["first_failure"]
    # a fixed image: one source length per batch, reported as the states the decoder attends to (patches + CLS)
    assert {case["source_length"] for case in model["cases"]} == {17 if name == "current-trocr" else 64}


# --- 2. the whole export in repair's own proof --------------------------------------------------------------------


@pytest.mark.parametrize("name", FOLDERS)
def test_repair_dir_proves_each_decoder_fed_by_its_encoder_and_says_which(cli, name, tmp_path):
    out = tmp_path / "out"
    result = cli("repair", EXPORTS / name, out, "--json")
    assert result.exit_code == 0, result.stderr
    (model,) = json.loads(result.stdout)["models"]
    assert model["encoder"] == "encoder_model.onnx"
    assert model["validation"]["ok"] and model["validation"]["encoder"] == str(out / "encoder_model.onnx")
    assert cli("validate", out).exit_code == 0


def test_in_an_onnx_community_layout_each_decoder_is_fed_by_its_variant_s_encoder_else_the_plain_one(cli, tmp_path):
    """onnx/ holds one merged decoder per precision; the configs sit one folder up."""
    export = EXPORTS / "current-trocr"
    folder = tmp_path / "model"
    (folder / "onnx").mkdir(parents=True)
    for config in ("config.json", "preprocessor_config.json"):
        shutil.copyfile(export / config, folder / config)
    for variant in ("", "_quantized", "_fp16"):
        shutil.copyfile(export / "decoder_model_merged.onnx", folder / "onnx" / f"decoder_model_merged{variant}.onnx")
    for variant in ("", "_quantized"):  # no encoder_model_fp16.onnx
        shutil.copyfile(export / "encoder_model.onnx", folder / "onnx" / f"encoder_model{variant}.onnx")
    result = cli("repair", folder, tmp_path / "out", "--json")
    assert result.exit_code == 0, result.stderr
    fed = {m["path"]: m["encoder"] for m in json.loads(result.stdout)["models"] if m["validation"]}
    assert fed == {"onnx/decoder_model_merged.onnx": "onnx/encoder_model.onnx",
                   "onnx/decoder_model_merged_quantized.onnx": "onnx/encoder_model_quantized.onnx",
                   "onnx/decoder_model_merged_fp16.onnx": "onnx/encoder_model.onnx"}


def test_without_a_proof_repair_dir_names_no_encoder(cli, tmp_path):
    result = cli("repair", EXPORTS / "current-trocr", tmp_path / "out", "--no-validate", "--json")
    assert result.exit_code == 0, result.stderr
    assert [m["encoder"] for m in json.loads(result.stdout)["models"]] == [None]


def test_repair_dir_table_names_the_encoder_that_fed_the_proof(cli, tmp_path):
    result = cli("repair", EXPORTS / "current-trocr", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines()
               if line.strip().startswith("decoder_model_merged.onnx") and "GF101" in line)
    assert "encoder_model.onnx" in row and "fed by" in result.stdout


def test_a_single_file_keeps_synthesized_encoder_states(tmp_path):
    result = repair(EXPORTS / "current-trocr" / "decoder_model_merged.onnx", tmp_path / "out.onnx")
    assert result.validation is not None and result.validation.ok and result.validation.encoder is None


@pytest.mark.parametrize("name", VISION)
def test_a_vision_export_repaired_for_1_16_decodes_end_to_end_in_1_16_3(cli, name, tmp_path):
    out = tmp_path / "out"
    result = cli("repair", EXPORTS / name, out, "--target-ort", "1.16", "--validate-on-target", "--json")
    assert result.exit_code == 0, result.stderr
    decoder = json.loads(result.stdout)["models"][0]
    assert decoder["encoder"] == "encoder_model.onnx" and decoder["validation"]["onnxruntime"] == "1.16.3"
    proof = validate(out / "decoder_model_merged.onnx", ort_version="1.16.3", encoder=out / "encoder_model.onnx")
    assert proof.ok, proof.first_failure


# --- 3. one verdict on files no onnxruntime loads -----------------------------------------------------------------

UNLOADABLE = {  # real tools' output: onnxruntime's float16 converter; transformers.js's q4f16 recipe (MatMulNBits,
    # then onnxconverter-common's float16); onnx's save with convert_attribute=True
    "marian-fp16-converter": "Subgraph output (logits) is an outer scope value",
    "marian-q4f16": "does not match expected type",
    "marian-external-constants": "Cannot parse data from external tensors",
}


@pytest.mark.parametrize("name", sorted(UNLOADABLE))
@pytest.mark.parametrize("command", ["check", "repair", "split"])
def test_a_file_no_onnxruntime_loads_gets_onnxruntime_s_reason_and_exit_2(cli, name, command, tmp_path):
    model = VARIANTS / f"{name}.onnx"
    out = tmp_path / ("out.onnx" if command == "repair" else "split")
    result = cli(command, model, *([] if command == "check" else [out]))
    assert result.exit_code == 2, result.stdout + result.stderr
    assert f"cannot load {model.name}" in result.stderr and UNLOADABLE[name] in result.stderr
    assert not out.exists()


def test_a_skeleton_without_a_doubt_is_not_loaded_in_onnxruntime(monkeypatch):
    """check's cost: a model with findings is answered from its skeleton, without reading every weight."""
    import graphfix.proof.client_loop as client_loop

    def refuse(path: str) -> None:
        raise AssertionError(f"loaded {path}")

    monkeypatch.setattr(client_loop, "load_session", refuse)
    from graphfix import check

    assert check(ROOT / "sample_models" / "current" / "marian.onnx").findings


def test_the_skeleton_doubts_each_unloadable_kind_and_no_committed_loadable_sample():
    for name in UNLOADABLE:
        assert loadable.doubt(read_model(VARIANTS / f"{name}.onnx").model), name
    loadable_samples = [p for p in sorted(ROOT.glob("sample_models/*/*.onnx")) if p.stem not in UNLOADABLE]
    assert [p.name for p in loadable_samples if loadable.doubt(read_model(p).model)] == []


def test_a_mixed_float16_layer_normalization_is_doubted():
    """Optimum's fp16 Whisper export fails in Optimum itself this way (onnxruntime: T bound to float and float16)."""
    from onnx import TensorProto, helper

    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-1)
    graph = helper.make_graph(
        [node], "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor("scale", TensorProto.FLOAT16, [4], [1.0] * 4),
         helper.make_tensor("bias", TensorProto.FLOAT16, [4], [0.0] * 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert "LayerNormalization" in (loadable.doubt(model) or "")


# --- 4. Optimum's fp16 BART on onnxruntime 1.16 -------------------------------------------------------------------


def test_optimum_fp16_bart_repaired_for_1_16_decodes_in_1_16_3(tmp_path):
    with pytest.raises(BadInputError, match="onnxruntime 1.16.3 cannot load"):  # as exported
        validate(VARIANTS / "bart-fp16.onnx", ort_version="1.16.3")
    result = repair(VARIANTS / "bart-fp16.onnx", tmp_path / "out.onnx", target_ort="1.16", validate_on_target=True)
    assert result.validation is not None and result.validation.ok and result.validation.onnxruntime == "1.16.3"
    repaired = onnx.load(tmp_path / "out.onnx")
    float16_norms = [n for g in _graphs(repaired.graph) for n in g.node if n.op_type == "LayerNormalization"]
    assert float16_norms and all(n.input[0].endswith("/input0") for n in float16_norms)  # each behind its Cast


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    inner = [a.g for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]
    return [graph, *(g for sub in inner for g in _graphs(sub))]


def test_optimum_fp16_t5_needs_no_float32_fallback_and_decodes_in_1_16_3(tmp_path):
    result = repair(VARIANTS / "t5-fp16.onnx", tmp_path / "out.onnx", target_ort="1.16", validate_on_target=True)
    assert result.validation is not None and result.validation.ok
    assert "GF305" not in {c.code for c in result.changes}  # T5's RMS norm is not a LayerNormalization


def _branches_reusing_a_name_with_two_types() -> onnx.ModelProto:
    """An If whose branches both define `t`: the float16 input of a LayerNormalization in one, an int64 shape in the
    other (stored after it: make_node sorts attributes), as a merged decoder's two exports do (BART fp16's
    `/model/decoder/Add_4_output_0`)."""
    from onnx import TensorProto, helper

    scale = helper.make_tensor("scale", TensorProto.FLOAT16, [4], [1.0] * 4)
    then_branch = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["t"]), helper.make_node("Cast", ["t"], ["y_then"], to=TensorProto.FLOAT16)],
        "then", [], [helper.make_tensor_value_info("y_then", TensorProto.FLOAT16, None)])
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"]),
         helper.make_node("LayerNormalization", ["t", "scale"], ["y_else"], axis=-1)],
        "else", [], [helper.make_tensor_value_info("y_else", TensorProto.FLOAT16, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)], "main",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)], [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_float16_layer_normalization_is_found_whatever_the_other_branch_calls_its_input():
    from graphfix.model.merged_decoder import PlainModel
    from graphfix.passes import run_passes
    from graphfix.passes.float16_fallbacks import float16_fallbacks

    model = _branches_reusing_a_name_with_two_types()
    findings = run_passes(PlainModel(model), [float16_fallbacks(parse_release("1.16"))])
    assert [f.code for f in findings] == ["GF305"]
    assert run_passes(PlainModel(model), [float16_fallbacks(parse_release("1.16"))]) == []  # a second run changes nothing


def _layer_normalization(dtype: int, *, cast_to: int | None = None):
    """x -> [Cast to `cast_to`] -> LayerNormalization(scale): a float32 model unless a type or a Cast says float16."""
    from onnx import helper

    nodes, normalized = [], "x"
    if cast_to is not None:
        nodes.append(helper.make_node("Cast", ["x"], ["x_cast"], to=cast_to))
        normalized = "x_cast"
    element = cast_to if cast_to is not None else dtype
    scale = helper.make_tensor("scale", element, [4], [1.0] * 4)
    nodes.append(helper.make_node("LayerNormalization", [normalized, "scale"], ["y"], axis=-1))
    graph = helper.make_graph(nodes, "main", [helper.make_tensor_value_info("x", dtype, [2, 4])],
                              [helper.make_tensor_value_info("y", element, [2, 4])], [scale])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_the_float16_fallback_pass_does_no_inference_on_a_float32_model(monkeypatch):
    from graphfix.model.merged_decoder import PlainModel
    from graphfix.passes import float16_fallbacks as module
    from graphfix.passes import run_passes

    def no_inference(model):
        raise AssertionError("shape inference ran on a model without float16")

    monkeypatch.setattr(module, "_types_by_graph", no_inference)
    model = _layer_normalization(onnx.TensorProto.FLOAT)
    assert run_passes(PlainModel(model), [module.float16_fallbacks(parse_release("1.16"))]) == []


def test_a_float16_reached_only_through_a_cast_is_still_found():
    from graphfix.model.merged_decoder import PlainModel
    from graphfix.passes import run_passes
    from graphfix.passes.float16_fallbacks import float16_fallbacks

    model = _layer_normalization(onnx.TensorProto.FLOAT, cast_to=onnx.TensorProto.FLOAT16)
    findings = run_passes(PlainModel(model), [float16_fallbacks(parse_release("1.16"))])
    assert [f.code for f in findings] == ["GF305"]


def test_a_config_above_a_top_level_export_is_not_read_as_its_own(tmp_path):
    """Only onnx/ (onnx-community's layout) looks one folder up: above an Optimum export is the user's folder."""
    folder = _export_without_configs("current-trocr", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"image_size": 32, "num_channels": 3}))
    with pytest.raises(BadInputError, match="image size input 'pixel_values'"):
        encoder_feeds(read_model(folder / "encoder_model.onnx").model, folder / "encoder_model.onnx")
