"""GF303: an attribute the model's opset made an input (ReduceMean `axes` at 18, Squeeze/Unsqueeze/ReduceSum
`axes` and Split `split` at 13) moves to a constant input, in every graph, without changing a number."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from graphfix import RepairRefusedError
from graphfix.model.merged_decoder import PlainModel
from graphfix.passes.attributes_as_inputs import attributes_as_inputs


def _model(opset: int, nested: bool = False, both: bool = False) -> onnx.ModelProto:
    """x -> ReduceMean(axes=[1]) -> Unsqueeze(axes=[0]) -> y, optionally inside an If branch."""
    reduce_inputs = ["x", "axes_in"] if both else ["x"]
    nodes = [helper.make_node("ReduceMean", reduce_inputs, ["m"], name="mean", axes=[1], keepdims=0),
             helper.make_node("Unsqueeze", ["m"], ["y"], name="unsqueeze", axes=[0])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    initializers = [helper.make_tensor("axes_in", TensorProto.INT64, [1], [1])] if both else []
    if nested:
        branch = helper.make_graph(nodes, "branch", [], [y])
        zeros = helper.make_tensor("zeros", TensorProto.FLOAT, [1, 2], [0.0, 0.0])
        other = helper.make_graph([helper.make_node("Constant", [], ["y2"], value=zeros)], "other", [],
                                  [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 2])])
        nodes = [helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=other)]
        inputs = [helper.make_tensor_value_info("flag", TensorProto.BOOL, []), x]
    else:
        inputs = [x]
    graph = helper.make_graph(nodes, "g", inputs, [y], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@pytest.mark.parametrize("nested", [False, True], ids=["main-graph", "inside-an-if-branch"])
def test_axes_attributes_at_opset_18_become_constant_inputs_with_the_same_result(nested):
    model = _model(18, nested)
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), **({"flag": np.array(True)} if nested else {})}
    expected = feeds["x"].mean(axis=1)[None]
    with pytest.raises(Exception, match="Unrecognized attribute: axes"):  # onnxruntime refuses it too
        _run(model, feeds)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model, full_check=True)
    findings = attributes_as_inputs(PlainModel(model))
    assert sorted((f.code, f.node) for f in findings) == [("GF303", "mean"), ("GF303", "unsqueeze")]
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_array_equal(_run(model, feeds), expected)
    assert attributes_as_inputs(PlainModel(model)) == []  # a second run changes nothing


def test_below_the_opset_that_moved_them_attributes_stay():
    model = _model(12)
    snapshot = model.SerializeToString()
    assert attributes_as_inputs(PlainModel(model)) == []
    assert model.SerializeToString() == snapshot


def test_an_attribute_and_its_input_together_are_refused_naming_the_node():
    with pytest.raises(RepairRefusedError, match="ReduceMean node 'mean' .* both the attribute 'axes' and its input"):
        attributes_as_inputs(PlainModel(_model(18, both=True)))
