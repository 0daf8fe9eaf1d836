"""Decoders exported with a fixed batch or source length (the real exporter, given dynamic axes without that axis)
must hold at any size after repair; every repaired sample is probed at batch 1..4 and three source lengths."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphfix import check, repair, validate
from graphfix.model.merged_decoder import find_merged_decoder
from graphfix.passes import fixed_shapes

from ..conftest import FIXED_SHAPE_SAMPLES

PROBE = dict(batches=(1, 2, 3, 4), source_lengths=(3, 7, 16))


@pytest.mark.parametrize("source", FIXED_SHAPE_SAMPLES, ids=[p.stem for p in FIXED_SHAPE_SAMPLES])
def test_a_fixed_shape_export_fails_the_probes_and_holds_at_any_size_after_repair(source, tmp_path):
    before = validate(source, **PROBE)
    assert not before.ok and "Got invalid dimensions" in before.first_failure
    assert "GF201" in {f.code for f in check(source).findings}
    repair(source, tmp_path / "fixed.onnx")
    after = validate(tmp_path / "fixed.onnx", **PROBE)
    assert after.ok, after.first_failure
    assert len(after.cases) == 12 and after.max_abs_diff < 1e-4


def test_every_repaired_sample_holds_at_batch_1_to_4_and_three_source_lengths(sample, repaired):
    result = validate(repaired(sample), **PROBE)
    assert result.ok, result.first_failure


def _head_split_decoder(batch: int) -> onnx.ModelProto:
    """A merged decoder whose no-cache branch splits heads with a Reshape that bakes the exported batch."""
    def kv(name, b):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [b, 2, "enc", 2])

    shape = numpy_helper.from_array(np.array([batch, -1, 2, 2], np.int64), "head_split_shape")
    no_cache = helper.make_graph([
        helper.make_node("Reshape", ["encoder_hidden_states", "head_split_shape"], ["split"], name="head_split"),
        helper.make_node("Transpose", ["split"], ["present_kv"], perm=[0, 2, 1, 3]),
    ], "no_past", [], [kv("present_kv", batch)], initializer=[shape])
    cache = helper.make_graph([helper.make_node("Identity", ["past_key_values.0.encoder.key"], ["passed"])],
                              "with_past", [], [kv("passed", batch)])
    graph = helper.make_graph(
        [helper.make_node("If", ["use_cache_branch"], ["present.0.encoder.key"], then_branch=cache, else_branch=no_cache)],
        "decoder",
        [helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1]),
         helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT, [batch, "enc", 4]),
         kv("past_key_values.0.encoder.key", batch)],
        [kv("present.0.encoder.key", batch)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_reshape_that_bakes_the_exported_batch_copies_the_dim_instead():
    model = _head_split_decoder(batch=2)
    findings = fixed_shapes(find_merged_decoder(model))
    assert [f.code for f in findings] == ["GF201", "GF202"]
    assert findings[1].node == "head_split" and "[0, -1, 2, 2]" in findings[1].fix
    onnx.checker.check_model(model, full_check=True)
    hidden = np.arange(3 * 5 * 4, dtype=np.float32).reshape(3, 5, 4)  # batch 3, never seen at export
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (present,) = session.run(None, {"use_cache_branch": np.array([False]), "encoder_hidden_states": hidden,
                                    "past_key_values.0.encoder.key": np.zeros((3, 2, 0, 2), np.float32)})
    np.testing.assert_array_equal(present, hidden.reshape(3, 5, 2, 2).transpose(0, 2, 1, 3))
    assert fixed_shapes(find_merged_decoder(model)) == []  # a second run changes nothing


def test_the_baked_shape_constant_is_dropped_unless_another_node_reads_it():
    alone = _head_split_decoder(batch=2)
    fixed_shapes(find_merged_decoder(alone))
    assert [t.name for t in find_merged_decoder(alone).no_cache_branch.initializer] == \
        ["head_split_shape/graphfix_symbolic"]
    shared = _head_split_decoder(batch=2)
    branch = find_merged_decoder(shared).no_cache_branch
    branch.node.append(helper.make_node("Shape", ["head_split_shape"], ["unused_reader"]))
    fixed_shapes(find_merged_decoder(shared))
    assert {t.name for t in branch.initializer} == {"head_split_shape", "head_split_shape/graphfix_symbolic"}
