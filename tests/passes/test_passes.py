"""Edge cases the exporters do not produce today, built with onnx.helper in a few lines each: each pass on its own,
its refusals, and the case where it must change nothing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from graphfix import NotAMergedDecoderError, RepairRefusedError, repair
from graphfix.model.merged_decoder import find_merged_decoder
from graphfix.passes import PIPELINE, encoder_kv_passthrough, kv_dim_names, truthful_kv_shapes

from ..conftest import toy_decoder as _decoder


def _constant_dummy():
    return [helper.make_node("Constant", [], ["dummy"], name="the_dummy",
                             value=numpy_helper.from_array(np.zeros((0, 2, 1, 4), np.float32)))]


def _run_all(model):
    decoder = find_merged_decoder(model)
    return decoder, [f for p in PIPELINE for f in p(decoder)]


def _cache_branch(model):
    decoder = find_merged_decoder(model)
    return decoder.cache_branch


def test_constant_dummy_becomes_identity_of_the_past():
    model = _decoder(_constant_dummy())
    findings = encoder_kv_passthrough(find_merged_decoder(model))
    assert [f.code for f in findings] == ["GF101"] and findings[0].node == "the_dummy"
    branch = _cache_branch(model)
    (identity,) = [n for n in branch.node if n.op_type == "Identity"]
    assert list(identity.input) == ["past_key_values.0.encoder.key"] and list(identity.output) == ["dummy"]
    assert not any(n.op_type == "Constant" for n in branch.node)
    onnx.checker.check_model(model, full_check=True)


def test_constant_of_shape_dummy_and_its_shape_chain_are_removed():
    nodes = [helper.make_node("Shape", ["encoder_hidden_states"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["dummy"])]
    model = _decoder(nodes)
    assert [f.code for f in encoder_kv_passthrough(find_merged_decoder(model))] == ["GF101"]
    ops = [n.op_type for n in _cache_branch(model).node]
    assert "ConstantOfShape" not in ops and "Shape" not in ops and ops.count("Add") == 1


def test_branch_initializer_dummy_is_replaced_and_dropped():
    init = numpy_helper.from_array(np.zeros((0, 2, 1, 4), np.float32), "dummy")
    model = _decoder([], branch_initializers=[init])
    encoder_kv_passthrough(find_merged_decoder(model))
    branch = _cache_branch(model)
    assert not branch.initializer and [n.output[0] for n in branch.node if n.op_type == "Identity"] == ["dummy"]
    onnx.checker.check_model(model, full_check=True)


def test_outer_initializer_dummy_gets_a_passthrough_of_its_own_name():
    init = numpy_helper.from_array(np.zeros((0, 2, 1, 4), np.float32), "outer_dummy")
    model = _decoder([], dummy_output="outer_dummy", extra_initializers=[init])
    encoder_kv_passthrough(find_merged_decoder(model))
    assert _cache_branch(model).output[0].name == "present.0.encoder.key.passthrough"
    onnx.checker.check_model(model, full_check=True)


def test_cache_branch_is_found_by_what_it_reads_not_by_name():
    model = _decoder(_constant_dummy(), swap=True)
    decoder = find_merged_decoder(model)
    assert decoder.cache_attr == "else_branch"
    assert [f.code for f in encoder_kv_passthrough(decoder)] == ["GF101"]


def test_a_present_without_its_past_is_refused_naming_the_output():
    model = _decoder(_constant_dummy(), layers=(0,), present_names=["present.0.encoder.key", "present.1.encoder.key"])
    with pytest.raises(RepairRefusedError, match=r"present\.1\.encoder\.key: no input past_key_values\.1\.encoder\.key"):
        _run_all(model)


def test_a_repeated_present_name_is_refused_as_ambiguous():
    model = _decoder(_constant_dummy())
    model.graph.node[0].output.append("present.0.encoder.key")
    with pytest.raises(RepairRefusedError, match="ambiguous"):
        find_merged_decoder(model)


@pytest.mark.parametrize("flag", ["is_first_step", "use_cache"])
def test_a_model_without_the_cache_flag_is_not_a_merged_decoder(flag):
    with pytest.raises(NotAMergedDecoderError, match="not a merged decoder"):
        find_merged_decoder(_decoder(_constant_dummy(), flag=flag))


def test_kv_dim_names_renames_only_to_the_encoder_hidden_length():
    model = _decoder(_constant_dummy())
    hidden = model.graph.input[1].type.tensor_type.shape.dim
    hidden[1].dim_param = "src_len"
    findings = kv_dim_names(find_merged_decoder(model))
    assert [(f.code, f.tensor) for f in findings] == [("GF103", "enc_len")]
    dims = {v.name: v.type.tensor_type.shape.dim[2].dim_param for v in model.graph.input[2:]}
    assert set(dims.values()) == {"src_len"}


@pytest.mark.parametrize("graphfix_pass", PIPELINE, ids=lambda p: p.name)
def test_each_pass_changes_nothing_the_second_time(graphfix_pass):
    model = _decoder(_constant_dummy())
    model.graph.input[1].type.tensor_type.shape.dim[1].dim_param = "src_len"
    graphfix_pass(find_merged_decoder(model))
    snapshot = model.SerializeToString()
    assert graphfix_pass(find_merged_decoder(model)) == []
    assert model.SerializeToString() == snapshot


def test_truthful_shapes_leave_a_truthful_model_alone():
    model = _decoder(_constant_dummy())
    encoder_kv_passthrough(find_merged_decoder(model))
    assert truthful_kv_shapes(find_merged_decoder(model)) == []


def test_nothing_to_repair_writes_a_byte_identical_copy(tmp_path):
    model = _decoder(_constant_dummy())
    _run_all(model)
    src = tmp_path / "clean.onnx"
    src.write_bytes(model.SerializeToString())
    result = repair(src, tmp_path / "copy.onnx", validate=False)
    assert not result.changed
    assert (tmp_path / "copy.onnx").read_bytes() == src.read_bytes()
