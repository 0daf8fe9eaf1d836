"""GF305: float16 ops an old onnxruntime can only run through a fallback that fails to load.

onnxruntime 1.15 and 1.16 have no float16 CPU kernel for Softmax and LayerNormalization and expand them into their
ONNX function bodies instead; at opset 18 that expansion writes ReduceMax / ReduceMean with an `axes` attribute,
which the same release then refuses ("Unrecognized attribute: axes for operator ReduceMax"), so Optimum's fp16
export (`dtype="fp16"`) cannot be loaded at all. Measured on the real wheels with the fp16 Marian sample: 1.15.1
and 1.16.3 refuse it, 1.17.3 and later load and decode it. For such a target each of these nodes computes in
float32 between two Casts: the result differs from a float16 kernel's by float16 rounding (measured: 2.4e-4 on
logits of magnitude 0.3, one float16 ulp there), and the release runs it.
"""

from __future__ import annotations

from ..findings import FLOAT16_FALLBACK, Finding
from ..io import onnx_proto as onnx
from ..model.graph import AI_ONNX, all_graphs
from ..targets import TargetRuntime
from .contract import ANY_MODEL, RepairPass, Subject, repair_pass


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    from onnx import shape_inference  # only runs that retarget an fp16 model for an old release get here

    inferred = shape_inference.infer_shapes(model, data_prop=False)
    types = {}
    for graph, _ in all_graphs(inferred.graph):
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            types[value.name] = value.type.tensor_type.elem_type
        for tensor in graph.initializer:
            types[tensor.name] = tensor.data_type
    return types


def _cast(source: str, target: str, to: int) -> onnx.NodeProto:
    return onnx.NodeProto(op_type="Cast", input=[source], output=[target], name=target,
                          attribute=[onnx.AttributeProto(name="to", type=onnx.AttributeProto.INT, i=to)])


def float16_fallbacks(target: TargetRuntime) -> RepairPass:
    ops = target.float16_gaps

    @repair_pass(FLOAT16_FALLBACK, scope=ANY_MODEL)
    def float16_fallbacks(subject: Subject) -> list[Finding]:
        model = subject.model
        candidates = [n for g, _ in all_graphs(model.graph) for n in g.node
                      if n.op_type in ops and n.domain in AI_ONNX]
        if not candidates:
            return []
        types = _element_types(model)
        findings: list[Finding] = []
        for graph, _ in all_graphs(model.graph):
            nodes: list[onnx.NodeProto] = []
            for node in graph.node:
                if node.op_type not in ops or types.get(node.input[0]) != onnx.TensorProto.FLOAT16:
                    nodes.append(node)
                    continue
                stem = f"{node.name or node.op_type}/graphfix_float32"
                for index, name in enumerate(node.input):
                    if name and types.get(name) == onnx.TensorProto.FLOAT16:
                        nodes.append(_cast(name, f"{stem}/input{index}", onnx.TensorProto.FLOAT))
                        node.input[index] = f"{stem}/input{index}"
                output = node.output[0]
                node.output[0] = f"{stem}/output0"
                nodes += [node, _cast(node.output[0], output, onnx.TensorProto.FLOAT16)]
                findings.append(Finding(
                    code=FLOAT16_FALLBACK, node=node.name or node.op_type,
                    message=f"float16 {node.op_type}: onnxruntime {target.release} has no float16 CPU kernel for it "
                            "and its fallback fails to load",
                    fix="compute it in float32 between two Casts (differs by float16 rounding)"))
            if len(nodes) != len(graph.node):
                del graph.node[:]
                graph.node.extend(nodes)
        return findings

    return float16_fallbacks
