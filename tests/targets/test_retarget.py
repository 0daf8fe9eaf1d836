"""Retargeting for the onnxruntime the user deploys: opset adapters (each compared output for output), IR lowering,
and whole exports brought from IR 10 / opset 21 down to what onnxruntime 1.16 runs, proven inside 1.16.3."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper, version_converter

from graphfix import RepairRefusedError, check, repair, repair_directory
from graphfix.targets.opset_adapters import convert_down

from ..conftest import ROOT, SAMPLES, fast_tier_samples

EXPORT = ROOT / "sample_models" / "exports" / "current-marian"
CURRENT = [p for p in SAMPLES if p.parent.name == "current"]


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _model(nodes, inputs, outputs, opset, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _float(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_is_decomposed_below_opset_20_with_the_same_outputs(approximate):
    model = _model([helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)],
                   [_float("x", [2, 5])], [_float("y", [2, 5])], 20)
    x = np.linspace(-4, 4, 10, dtype=np.float32).reshape(2, 5)
    before = _run(model, {"x": x})[0]
    assert convert_down(model, 19) == 1
    assert "Gelu" not in {n.op_type for n in model.graph.node} and model.opset_import[0].version == 19
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(_run(model, {"x": x})[0], before, atol=1e-6)


def test_type_only_bumps_are_relabelled_in_every_subgraph_with_the_same_outputs():
    shape = numpy_helper.from_array(np.array([2, -1], np.int64), "shape")
    branch = helper.make_graph([
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
        helper.make_node("Unsqueeze", ["t", "axes"], ["u"]),
        helper.make_node("Squeeze", ["u", "axes"], ["s"]),
        helper.make_node("Shape", ["s"], ["sh"]),
        helper.make_node("ConstantOfShape", ["sh"], ["z"], value=numpy_helper.from_array(np.array([1.5], np.float32))),
        helper.make_node("Cast", ["z"], ["c"], to=TensorProto.FLOAT, saturate=1),
        helper.make_node("Add", ["c", "s"], ["out"]),
    ], "then", [], [_float("out", ["a", "b"])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["out2"])], "else", [], [_float("out2", ["a", "b"])])
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    model = _model([helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=other)],
                   [_float("x", [4, 3]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                   [_float("y", ["a", "b"])], 21, [shape, axes])
    feeds = {"x": np.arange(12, dtype=np.float32).reshape(4, 3), "flag": np.array(True)}
    before = _run(model, feeds)[0]
    assert convert_down(model, 18) == 9  # If, the 7 bumped ops of then_branch, the Identity of else_branch
    then_branch = next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")
    cast = next(n for n in then_branch.node if n.op_type == "Cast")
    assert [a.name for a in cast.attribute] == ["to"]  # saturate (added at 19, for float8 only) dropped at 18
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(_run(model, feeds)[0], before)


def test_a_node_using_a_type_the_target_lacks_is_refused_naming_op_node_and_opsets():
    model = _model([helper.make_node("Cast", ["x"], ["y"], name="to_fp8", to=TensorProto.FLOAT8E4M3FN)],
                   [_float("x", [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [2])], 21)
    snapshot = model.SerializeToString()
    with pytest.raises(RepairRefusedError, match=r"op Cast at node 'to_fp8' .*needs opset 21 > target 18"):
        convert_down(model, 18)
    assert model.SerializeToString() == snapshot


def test_a_bump_that_changed_meaning_is_refused():
    pads = numpy_helper.from_array(np.array([1, 1], np.int64), "pads")
    model = _model([helper.make_node("Pad", ["x", "pads"], ["y"], name="wrap_pad", mode="wrap")],
                   [_float("x", [3])], [_float("y", [5])], 19, [pads])
    with pytest.raises(RepairRefusedError, match="op Pad at node 'wrap_pad'.*changed meaning at opset 19"):
        convert_down(model, 18)


def _stamped_ir10_opset21(source, tmp_path):
    """What today's stack writes: the current exporter's output converted up to opset 21, saved with IR 10."""
    model = version_converter.convert_version(onnx.load(source), 21)
    model.ir_version = 10
    path = tmp_path / f"{source.stem}-ir10-opset21.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("source", fast_tier_samples(CURRENT))
def test_an_ir10_opset21_decoder_is_brought_to_onnxruntime_1_16_and_decodes_there(source, tmp_path):
    stamped = _stamped_ir10_opset21(source, tmp_path)
    result = repair(stamped, tmp_path / "fixed.onnx", target_ort="1.16", validate_on_target=True)
    assert {"GF101", "GF301", "GF302"} <= {c.code for c in result.changes}
    assert result.validation.ok and result.validation.onnxruntime == "1.16.3", result.validation.first_failure
    fixed = onnx.load(tmp_path / "fixed.onnx")
    assert fixed.ir_version <= 9 and fixed.opset_import[0].version == 19
    assert check(tmp_path / "fixed.onnx", target_ort="1.16").findings == []


def test_every_sample_repaired_for_onnxruntime_1_16_decodes_in_1_16_3(sample, tmp_path):
    result = repair(sample, tmp_path / "fixed.onnx", target_ort="1.16", validate_on_target=True)
    assert result.validation.ok and result.validation.onnxruntime == "1.16.3"


def test_an_export_repaired_in_place_for_a_target_has_its_encoder_retargeted_first_with_a_backup(tmp_path):
    """In place as into a new folder: the encoder 1.16 refuses (IR 10, opset 21) is retargeted beside the decoder,
    each keeps its .bak, and the decoder's proof in 1.16.3 is fed by the retargeted encoder."""
    export = tmp_path / "export"
    export.mkdir()
    _stamped_ir10_opset21(EXPORT / "encoder_model.onnx", tmp_path).rename(export / "encoder_model.onnx")
    _stamped_ir10_opset21(CURRENT[[p.stem for p in CURRENT].index("marian")], tmp_path).rename(
        export / "decoder_model_merged.onnx")
    shutil.copy(EXPORT / "config.json", export / "config.json")
    originals = {name: (export / name).read_bytes() for name in ("encoder_model.onnx", "decoder_model_merged.onnx")}
    result = repair_directory(export, export, in_place=True, target_ort="1.16", validate_on_target=True)
    assert result.retargeted == ["encoder_model.onnx"]
    by_path = {m.path: m for m in result.models}
    assert by_path["decoder_model_merged.onnx"].result.validation.onnxruntime == "1.16.3"
    assert by_path["decoder_model_merged.onnx"].encoder == "encoder_model.onnx"
    for name, original in originals.items():
        assert (export / f"{name}.bak").read_bytes() == original
        model = onnx.load(export / name)
        assert model.ir_version <= 9 and model.opset_import[0].version == 19
    assert sorted(p.name for p in export.iterdir()) == sorted(
        ["config.json", *originals, *(f"{name}.bak" for name in originals)])


def test_an_export_directory_is_retargeted_whole_and_each_model_loads_on_the_target(tmp_path):
    """The user deploys the whole export: encoder and split decoders are retargeted beside the merged decoder
    (it used to carry encoder_model.onnx over at IR 10, which onnxruntime 1.16.3 refuses)."""
    parts = ["encoder_model", "decoder_model", "decoder_with_past_model"]
    export = tmp_path / "export"
    export.mkdir()
    for part in parts:
        _stamped_ir10_opset21(EXPORT / f"{part}.onnx", tmp_path).rename(export / f"{part}.onnx")
    _stamped_ir10_opset21(CURRENT[[p.stem for p in CURRENT].index("marian")], tmp_path).rename(
        export / "decoder_model_merged.onnx")
    shutil.copy(EXPORT / "config.json", export / "config.json")
    result = repair_directory(export, tmp_path / "out", target_ort="1.16", validate_on_target=True)
    by_path = {m.path: m.result for m in result.models}
    assert sorted(by_path) == sorted([*(f"{p}.onnx" for p in parts), "decoder_model_merged.onnx"])
    assert by_path["decoder_model_merged.onnx"].validation.onnxruntime == "1.16.3"
    for part in parts:
        assert {c.code for c in by_path[f"{part}.onnx"].changes} == {"GF301", "GF302"}
        assert by_path[f"{part}.onnx"].validation is None  # no decode loop of its own; loaded in 1.16.3 instead
    assert result.linked == [] and "config.json" in result.copied  # hardlinked only with --link-data
    rng = np.random.default_rng(0)
    for part in parts:
        out, original = onnx.load(tmp_path / "out" / f"{part}.onnx"), onnx.load(EXPORT / f"{part}.onnx")
        assert out.opset_import[0].version == 19 and out.ir_version <= 9
        feeds = {}
        for value in ort.InferenceSession(str(EXPORT / f"{part}.onnx")).get_inputs():
            dims = [d if isinstance(d, int) else 3 for d in value.shape]
            if "past_key_values" in value.name and isinstance(value.shape[2], str):
                dims[2] = 2
            feeds[value.name] = (rng.integers(0, 90, dims) if "int64" in value.type
                                 else rng.standard_normal(dims).astype(np.float32))
            if "mask" in value.name:
                feeds[value.name] = np.ones(dims, np.int64)
        for got, want in zip(_run(out, feeds), _run(original, feeds)):
            np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_lone_encoder_is_refused_by_repair_and_checked_for_the_target_by_check(tmp_path, cli):
    """repair takes merged decoders only; check without a target refuses an encoder too, but with --target-ort it
    says what that release needs of it (a hook handed an export's IR-10 encoder must hear that 1.16 refuses it)."""
    stamped = _stamped_ir10_opset21(EXPORT / "encoder_model.onnx", tmp_path)
    for args in (["check", stamped], ["repair", stamped, tmp_path / "o.onnx"],
                 ["repair", stamped, tmp_path / "o.onnx", "--target-ort", "1.16"]):
        result = cli(*args)
        assert result.exit_code == 2 and "not a merged decoder" in result.stderr, (args, result.stderr)
    result = cli("check", stamped, "--target-ort", "1.16")
    assert result.exit_code == 1 and stamped.name in result.stdout + result.stderr, result.stdout + result.stderr
    assert "IR" in result.stdout + result.stderr


def test_validate_on_target_needs_a_target(marian_current, tmp_path, cli):
    result = cli("repair", marian_current, tmp_path / "o.onnx", "--validate-on-target")
    assert result.exit_code == 2 and "--validate-on-target needs --target-ort" in result.stderr
