"""Convert a model down to an older ai.onnx opset, main graph and every subgraph (both If branches).

`onnx.version_converter` is not enough for merged decoders: it has no ConstantOfShape adapter for 21 -> 19 and
none for LayerNormalization below 17. Most version bumps between the opsets onnxruntime releases differ by only
add element types (float8 at 19, int4 at 21, float4 at 23) or attributes that matter only for them (Cast's
`saturate`); those nodes are relabelled when the model uses none of the added types. Ops that did not exist at the
target are decomposed (Gelu). Anything else is refused, naming the op, the node and both opsets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import onnx
from onnx import AttributeProto, TensorProto, defs, helper

from ..errors import RepairRefusedError
from ..model.graph import AI_ONNX, ai_onnx_opset, all_graphs, attribute

# Bumps whose schema signature did not change but whose meaning did: never relabel these.
_SEMANTIC_BUMPS = {("Pad", 19), ("Resize", 19), ("GroupNormalization", 21), ("Resize", 18), ("Resize", 13)}
# New attributes that are harmless to drop when left at this value.
_DROPPABLE_DEFAULTS = {"saturate": 1}


def _schema(op: str, opset: int) -> Any:
    try:
        return defs.get_schema(op, opset, "")
    except defs.SchemaError:
        return None


def _schema_type_strings(schema: Any) -> set[str]:
    return {t for constraint in schema.type_constraints for t in constraint.allowed_type_strs}


def _signature(schema: Any) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    return ([(i.name, i.option) for i in schema.inputs], [(o.name, o.option) for o in schema.outputs])


def element_types(graph: onnx.GraphProto) -> Iterator[tuple[int, str]]:
    """Every element type the model declares, stores or casts to, with the value or node it appears on."""
    for subgraph, _ in all_graphs(graph):
        for value in list(subgraph.input) + list(subgraph.output) + list(subgraph.value_info):
            yield value.type.tensor_type.elem_type, value.name
        for tensor in subgraph.initializer:
            yield tensor.data_type, tensor.name
        for node in subgraph.node:
            for attr in node.attribute:
                if attr.name == "to" and attr.type == AttributeProto.INT:
                    yield attr.i, node.name
                elif attr.type == AttributeProto.TENSOR:
                    yield attr.t.data_type, node.name


def used_element_types(graph: onnx.GraphProto) -> set[int]:
    return {elem_type for elem_type, _ in element_types(graph)} - {TensorProto.UNDEFINED}


def _onnx_type_names(elem_types: set[int]) -> set[str]:
    names = set()
    for elem_type in elem_types:
        name = TensorProto.DataType.Name(elem_type).lower()
        names.add({"float": "tensor(float)", "double": "tensor(double)", "float16": "tensor(float16)",
                   "bfloat16": "tensor(bfloat16)", "bool": "tensor(bool)", "string": "tensor(string)"}
                  .get(name, f"tensor({name})"))
    return names


def _relabel_problem(node: onnx.NodeProto, source: int, target: int, used: set[str]) -> str | None:
    """Why `node` (valid at `source`) cannot simply be read as its `target` version; None when it can."""
    new, old = _schema(node.op_type, source), _schema(node.op_type, target)
    if old is None:
        return f"did not exist before opset {new.since_version}"
    if new.since_version == old.since_version:
        return None
    bumps = [v for v in range(old.since_version + 1, new.since_version + 1)
             if (s := _schema(node.op_type, v)) is not None and s.since_version == v]
    if any((node.op_type, v) in _SEMANTIC_BUMPS for v in bumps):
        return f"changed meaning at opset {max(bumps)}"
    if _signature(new) != _signature(old):
        return f"changed inputs or outputs at opset {new.since_version}"
    old_attrs = set(old.attributes)
    for attr in node.attribute:
        if attr.name not in old_attrs and _DROPPABLE_DEFAULTS.get(attr.name) != helper.get_attribute_value(attr):
            return f"sets attribute {attr.name!r}, added at opset {new.since_version}"
    added_types = _schema_type_strings(new) - _schema_type_strings(old)
    if clash := sorted(added_types & used):
        return f"the model uses {clash[0]}, added to it at opset {new.since_version}"
    return None


def _relabel(node: onnx.NodeProto, target: int) -> None:
    old_attrs = set(_schema(node.op_type, target).attributes)
    keep = [a for a in node.attribute if a.name in old_attrs]
    if len(keep) != len(node.attribute):
        del node.attribute[:]
        node.attribute.extend(keep)


def _gelu(node: onnx.NodeProto, fresh: Callable[[str], str]) -> list[onnx.NodeProto]:
    """Gelu (opset 20) as the Erf or tanh formula it is defined by; constants CastLike'd to the input type."""
    x, y = node.input[0], node.output[0]
    approximate_attr = attribute(node, "approximate")
    approximate = helper.get_attribute_value(approximate_attr) if approximate_attr is not None else b"none"
    nodes: list[onnx.NodeProto] = []

    def const(value: float) -> str:
        raw, typed = fresh("c"), fresh("c")
        tensor = helper.make_tensor(raw, TensorProto.FLOAT, [], [value])
        nodes.append(helper.make_node("Constant", [], [raw], value=tensor))
        nodes.append(helper.make_node("CastLike", [raw, x], [typed]))
        return typed

    def op(op_type: str, *inputs: str) -> str:
        out = fresh(op_type)
        nodes.append(helper.make_node(op_type, list(inputs), [out]))
        return out

    if approximate in (b"tanh", "tanh"):
        cube = op("Mul", op("Mul", x, x), x)
        inner = op("Mul", const(math.sqrt(2 / math.pi)), op("Add", x, op("Mul", const(0.044715), cube)))
        activation = op("Tanh", inner)
    else:
        activation = op("Erf", op("Mul", x, const(1 / math.sqrt(2))))
    half_x = op("Mul", x, const(0.5))
    nodes.append(helper.make_node("Mul", [half_x, op("Add", activation, const(1.0))], [y]))
    for n in nodes:
        n.name = f"{node.name or 'Gelu'}/{n.output[0].rsplit('/', 1)[-1]}"
    return nodes


# op -> decomposition into ops that exist at every target the table knows (opset >= 18).
DECOMPOSITIONS: dict[str, Callable[[onnx.NodeProto, Callable[[str], str]], list[onnx.NodeProto]]] = {"Gelu": _gelu}


def convert_down(model: onnx.ModelProto, target: int) -> int:
    """Rewrite `model` in place to ai.onnx opset `target`; returns how many nodes were relabelled or decomposed.
    Checks every node first, so a refusal leaves the model untouched."""
    source = ai_onnx_opset(model)
    assert source is not None, "called on a model whose ai.onnx opset is above the target"
    used = _onnx_type_names(used_element_types(model.graph))
    plan: list[tuple[onnx.GraphProto, int, str]] = []  # (graph, node index, "relabel" | "decompose")
    for graph, where in all_graphs(model.graph):
        for index, node in enumerate(graph.node):
            if node.domain not in AI_ONNX:
                continue
            problem = _relabel_problem(node, source, target, used)
            if problem is None:
                if _schema(node.op_type, source).since_version > target:
                    plan.append((graph, index, "relabel"))
            elif node.op_type in DECOMPOSITIONS:
                plan.append((graph, index, "decompose"))
            else:
                raise RepairRefusedError(
                    f"op {node.op_type} at node {node.name or index!r} ({where}) needs opset "
                    f"{_schema(node.op_type, source).since_version} > target {target}: it {problem}; deploy a newer "
                    f"onnxruntime (a later --target-ort), or re-export at opset {target} "
                    f"(optimum-cli export onnx --opset {target})")
    names = {o for g, _ in all_graphs(model.graph) for n in g.node for o in n.output}
    counter = iter(range(1 << 30))

    def fresh(stem: str) -> str:
        while (name := f"graphfix/opset{target}/{stem}_{next(counter)}") in names:
            pass
        names.add(name)
        return name

    for graph, index, action in sorted(plan, key=lambda p: -p[1]):  # back to front keeps indices valid
        node = graph.node[index]
        if action == "relabel":
            _relabel(node, target)
        else:
            replacement = DECOMPOSITIONS[node.op_type](node, fresh)
            del graph.node[index]
            for offset, new_node in enumerate(replacement):
                graph.node.insert(index + offset, new_node)
    for opset in model.opset_import:
        if opset.domain in AI_ONNX:
            opset.version = target
    return len(plan)
