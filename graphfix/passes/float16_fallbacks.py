"""GF305: float16 ops an old onnxruntime can only run through a fallback that fails to load.

onnxruntime 1.15 and 1.16 have no float16 CPU kernel for Softmax and LayerNormalization and expand them into their
ONNX function bodies instead; at opset 18 that expansion writes ReduceMax / ReduceMean with an `axes` attribute,
which the same release then refuses ("Unrecognized attribute: axes for operator ReduceMax"), so Optimum's fp16
export (`dtype="fp16"`) cannot be loaded at all. Measured on the real wheels with the fp16 Marian sample: 1.15.1
and 1.16.3 refuse it, 1.17.3 and later load and decode it. The condition is any float16 input: the 1.16 kernels
are registered for float32/double only, so a float16 scale beside a float32 X (a mixed LayerNormalization) goes to
the function body too. Optimum's fp16 BART is the case that needs per-scope types (see _scoped_types). For such a
target each of these nodes computes in float32 between two Casts: the result differs from a float16 kernel's by
float16 rounding (measured: 2.4e-4 on logits of magnitude 0.3, one float16 ulp there), and the release runs it.
"""

from __future__ import annotations

from ..findings import FLOAT16_FALLBACK, Finding
from ..io import onnx_proto as onnx
from ..model.graph import AI_ONNX, all_graphs, subgraphs
from ..targets import TargetRuntime
from .contract import ANY_MODEL, RepairPass, Subject, repair_pass

Types = dict[str, int]


def _scoped_types(graph: onnx.GraphProto, outer: Types) -> Types:
    """The element type of every name visible in `graph`: its own names shadow the outer scope's. Scoped because
    a merged decoder's two branches come from two exports and reuse names: `/model/decoder/Add_4_output_0` is
    BART's float16 embedding sum in one branch and an int64 position in the other, so one flat table hides
    float16 LayerNormalizations."""
    types = dict(outer)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    for tensor in graph.initializer:
        types[tensor.name] = tensor.data_type
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].type == onnx.AttributeProto.TENSOR:
            types[node.output[0]] = node.attribute[0].t.data_type
    return types


def _declares_float16(model: onnx.ModelProto) -> bool:
    """Whether float16 can occur anywhere: a declared type, a weight, a constant or a cast to it. Every other value
    is computed from these, so without one no node sees float16 and shape inference would find nothing."""
    float16 = onnx.TensorProto.FLOAT16
    for graph, _ in all_graphs(model.graph):
        values = list(graph.input) + list(graph.output) + list(graph.value_info)
        if any(value.type.tensor_type.elem_type == float16 for value in values):
            return True
        if any(tensor.data_type == float16 for tensor in graph.initializer):
            return True
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == float16:
                    return True
                if (attribute.name in ("to", "dtype") and attribute.type == onnx.AttributeProto.INT
                        and attribute.i == float16):
                    return True
    return False


def _types_by_graph(model: onnx.ModelProto) -> list[Types]:
    """One scoped type table per graph, in all_graphs order (shape inference keeps the graph structure)."""
    from ..io.onnx_extension import onnx_extension  # the C++ inference alone: `import onnx` costs more than it

    inferred = onnx.ModelProto()  # onnx.shape_inference.infer_shapes(model, data_prop=False)
    inferred.ParseFromString(onnx_extension("shape_inference").infer_shapes(model.SerializeToString(), False,
                                                                             False, False))
    tables: list[Types] = []
    todo: list[tuple[onnx.GraphProto, Types]] = [(inferred.graph, {})]
    while todo:  # the order of model.graph.all_graphs: depth first, in document order
        graph, outer = todo.pop()
        types = _scoped_types(graph, outer)
        tables.append(types)
        inner = [(subgraph, types) for node in graph.node for _, subgraph in subgraphs(node)]
        todo.extend(reversed(inner))
    return tables


def _needs_float32(node: onnx.NodeProto, types: Types) -> bool:
    """Whether any input is float16: 1.15/1.16 have a kernel only when every input is float32 (or double), so a
    float16 X or a float16 scale beside a float32 X (mixed LayerNormalization) both send the node to its body."""
    return any(types.get(name) == onnx.TensorProto.FLOAT16 for name in node.input if name)


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
        if not candidates or not _declares_float16(model):
            return []
        tables = _types_by_graph(model)
        findings: list[Finding] = []
        for (graph, _), types in zip(all_graphs(model.graph), tables):
            nodes: list[onnx.NodeProto] = []
            for node in graph.node:
                if node.op_type not in ops or node.domain not in AI_ONNX or not _needs_float32(node, types):
                    nodes.append(node)
                    continue
                stem = f"{node.name or node.op_type}/graphfix_float32"
                for index, name in enumerate(node.input):
                    if name and types.get(name) == onnx.TensorProto.FLOAT16:
                        nodes.append(_cast(name, f"{stem}/input{index}", onnx.TensorProto.FLOAT))
                        node.input[index] = f"{stem}/input{index}"
                output = node.output[0]
                # The result comes back in the type the model had it in (X's type: float32 for a mixed node).
                back = types.get(output) or types.get(node.input[0]) or onnx.TensorProto.FLOAT16
                node.output[0] = f"{stem}/output0"
                nodes += [node, _cast(node.output[0], output, onnx.TensorProto.FLOAT16
                                      if back == onnx.TensorProto.FLOAT16 else onnx.TensorProto.FLOAT)]
                findings.append(Finding(
                    code=FLOAT16_FALLBACK, node=node.name or node.op_type,
                    message=f"float16 {node.op_type}: onnxruntime {target.release} has no float16 CPU kernel for it "
                            "and its fallback fails to load",
                    fix="compute it in float32 between two Casts (differs by float16 rounding)",
                    before=node.op_type, after="float32"))
            if len(nodes) != len(graph.node):
                del graph.node[:]
                graph.node.extend(nodes)
        return findings

    return float16_fallbacks
