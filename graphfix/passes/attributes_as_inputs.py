"""GF303: an attribute that became an input, still written as an attribute.

Several ai.onnx ops moved a constant attribute to an input: Squeeze, Unsqueeze and ReduceSum `axes` and Split
`split` at opset 13, the other Reduce ops' `axes` at opset 18. Some tools still write the old attribute at the new
opset: Optimum's fp16 export writes ReduceMean with `axes` at opset 18. Recent onnxruntime releases tolerate it;
older ones refuse the whole model ("Unrecognized attribute: axes for operator ReduceMean", onnxruntime 1.16.3), and
so does onnx.checker. The model means exactly "these axes", so the value moves to a constant input, in every graph.
Runs with a target runtime, before the opset is converted down (a relabel needs a valid node).
"""

from __future__ import annotations

from ..errors import RepairRefusedError
from ..findings import ATTRIBUTE_NOW_AN_INPUT, Finding
from ..io import onnx_proto as onnx
from ..model.graph import AI_ONNX, ai_onnx_opset, all_graphs, attribute
from .contract import ANY_MODEL, ATTRIBUTES_AS_INPUTS, Subject, repair_pass

_REDUCE_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
              "ReduceLogSumExp", "ReduceSumSquare")
# (op, attribute) -> (first opset where it is an input, the input's position)
MOVED = {("Squeeze", "axes"): (13, 1), ("Unsqueeze", "axes"): (13, 1), ("ReduceSum", "axes"): (13, 1),
         ("Split", "split"): (13, 1), **{(op, "axes"): (18, 1) for op in _REDUCE_18}}


@repair_pass(ATTRIBUTE_NOW_AN_INPUT, scope=ANY_MODEL, ensures=(ATTRIBUTES_AS_INPUTS,))
def attributes_as_inputs(subject: Subject) -> list[Finding]:
    model = subject.model
    opset = ai_onnx_opset(model)
    if opset is None:
        return []
    names = {o for g, _ in all_graphs(model.graph) for n in g.node for o in n.output}
    findings: list[Finding] = []
    for graph, where in all_graphs(model.graph):
        moved = [(node, [(a.name, MOVED[(node.op_type, a.name)]) for a in node.attribute
                         if MOVED.get((node.op_type, a.name), (1 << 30,))[0] <= opset])
                 for node in graph.node if node.domain in AI_ONNX]
        if not any(attrs for _, attrs in moved):
            continue
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            attrs = next((attrs for n, attrs in moved if n is node), [])
            for name, (since, position) in attrs:
                if len(node.input) > position and node.input[position]:
                    raise RepairRefusedError(f"{node.op_type} node {node.name!r} ({where}) has both the attribute "
                                             f"{name!r} and its input; which one it means is a guess: re-export "
                                             "the model")
                nodes.append(_constant(node, name, names))
                findings.append(_move(node, name, nodes[-1].output[0], since, position, opset))
            nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
    return findings


def _constant(node: onnx.NodeProto, name: str, taken: set[str]) -> onnx.NodeProto:
    attr = attribute(node, name)
    assert attr is not None
    stem, index = f"{node.name or node.op_type}/graphfix_{name}", 0
    output = stem
    while output in taken:
        index += 1
        output = f"{stem}_{index}"
    taken.add(output)
    tensor = onnx.TensorProto(name=output, data_type=onnx.TensorProto.INT64, dims=[len(attr.ints)],
                              int64_data=list(attr.ints))
    return onnx.NodeProto(op_type="Constant", output=[output], name=output,
                          attribute=[onnx.AttributeProto(name="value", type=onnx.AttributeProto.TENSOR, t=tensor)])


def _move(node: onnx.NodeProto, name: str, constant: str, since: int, position: int, opset: int) -> Finding:
    attr = attribute(node, name)
    assert attr is not None
    values = list(attr.ints)
    while len(node.input) < position:
        node.input.append("")
    if len(node.input) == position:
        node.input.append(constant)
    else:
        node.input[position] = constant
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    return Finding(code=ATTRIBUTE_NOW_AN_INPUT, node=node.name or node.op_type,
                   message=f"{node.op_type} sets attribute {name!r}, an input since opset {since} (the model's is "
                           f"{opset}): older onnxruntime releases refuse to load it",
                   fix=f"{name} {values} as a constant input", before=name, after="a constant input")
