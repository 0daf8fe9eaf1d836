"""Reading an ONNX graph: the one walk over every graph and subgraph, and the node queries passes, I/O and proof
share. Subgraphs sit in node attributes of two kinds (GRAPH: If's branches, Loop/Scan bodies; GRAPHS: a list), at
any depth; every walk here covers both at every depth, so no caller can look one level deep by accident."""

from __future__ import annotations

from collections.abc import Iterator

from ..io import onnx_proto as onnx

# The default domain's two spellings: an opset import or a node may name it either way.
AI_ONNX = ("", "ai.onnx")


def ai_onnx_opset(model: onnx.ModelProto) -> int | None:
    """The model's ai.onnx opset; None when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in AI_ONNX), None)


def subgraphs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """The graphs held by `node`'s attributes, with the attribute's name."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.name, attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for graph in attr.graphs:
                yield attr.name, graph


def all_graphs(graph: onnx.GraphProto, path: str = "main graph") -> Iterator[tuple[onnx.GraphProto, str]]:
    """`graph` and every subgraph below it, each with where it sits (for messages). Iterative: a corrupt model can
    nest subgraphs deeper than Python's recursion limit."""
    todo = [(graph, path)]
    while todo:
        current, where = todo.pop()
        yield current, where
        inner = [(g, f"{where} / {node.name or node.op_type}.{name}") for node in current.node
                 for name, g in subgraphs(node)]
        todo.extend(reversed(inner))  # depth first, in document order


def all_nodes(graph: onnx.GraphProto) -> Iterator[tuple[onnx.NodeProto, onnx.GraphProto]]:
    """Every node of `graph` and its subgraphs, with the graph it belongs to."""
    for current, _ in all_graphs(graph):
        for node in current.node:
            yield node, current


def attribute(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
    return next((a for a in node.attribute if a.name == name), None)


def node_reads(node: onnx.NodeProto) -> Iterator[str]:
    """Every tensor name a node reads, including outer-scope names read inside its subgraphs (a name a subgraph
    defines itself shadows nothing outside it in valid ONNX, so reads of it are reported too)."""
    yield from (name for name in node.input if name)
    if not node.attribute:  # most nodes: no subgraph to look into (a hot path on decoders of thousands of nodes)
        return
    for _, graph in subgraphs(node):
        for inner, _ in all_nodes(graph):
            yield from (name for name in inner.input if name)


def defined_names(graph: onnx.GraphProto) -> set[str]:
    """Every name defined inside `graph`, nested subgraphs included."""
    names: set[str] = set()
    for current, _ in all_graphs(graph):
        names |= {t.name for t in current.initializer} | {v.name for v in current.input}
        names |= {o for node in current.node for o in node.output if o}
    return names


def outer_reads(graph: onnx.GraphProto) -> set[str]:
    """The names `graph` reads from outside itself (outer-scope values of a branch)."""
    local = defined_names(graph)
    reads = {read for node in graph.node for read in node_reads(node)} | {o.name for o in graph.output}
    return reads - local


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def ancestors(graph: onnx.GraphProto, name: str,
              made_by: dict[str, onnx.NodeProto] | None = None) -> tuple[set[str], list[onnx.NodeProto]]:
    """Names `name` is computed from within `graph` (outer-scope names included, not followed) and the nodes.
    Pass `made_by` (producers(graph)) when asking about many names of one graph."""
    made_by = producers(graph) if made_by is None else made_by
    seen, nodes, visited, todo = {name}, [], set(), [name]
    while todo:
        node = made_by.get(todo.pop())
        if node is None or tuple(node.output) in visited:
            continue
        visited.add(tuple(node.output))
        nodes.append(node)
        for read in node_reads(node):
            if read not in seen:
                seen.add(read)
                todo.append(read)
    return seen, nodes


def op_types(graph: onnx.GraphProto) -> set[str]:
    return {node.op_type for node, _ in all_nodes(graph)}


def _attribute_tensors(attr: onnx.AttributeProto) -> Iterator[onnx.TensorProto]:
    if attr.type == onnx.AttributeProto.TENSOR:
        yield attr.t
    elif attr.type == onnx.AttributeProto.TENSORS:
        yield from attr.tensors
    elif attr.type == onnx.AttributeProto.SPARSE_TENSOR:
        yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
    elif attr.type == onnx.AttributeProto.SPARSE_TENSORS:
        for sparse in attr.sparse_tensors:
            yield from (sparse.values, sparse.indices)


def all_tensors(model: onnx.ModelProto | onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor ONNX can store, wherever it sits: initializers and sparse initializers (values and indices),
    TENSOR/TENSORS/SPARSE_TENSOR(S) attributes of every node, in every subgraph at any depth, of the main graph, of
    each training_info's initialization and algorithm graphs, and of the model-local functions (their nodes and
    default attribute values). The one walk behind every external-data check and rewrite: a place left out here
    is a location no check ever sees. Iterative, like all_graphs."""
    graphs: list[onnx.GraphProto] = []
    nodes: list[onnx.NodeProto] = []
    attributes: list[onnx.AttributeProto] = []
    if isinstance(model, onnx.ModelProto):
        graphs.append(model.graph)
        for info in model.training_info:
            graphs += [info.initialization, info.algorithm]
        for function in model.functions:
            nodes += function.node
            attributes += function.attribute_proto
    else:
        graphs.append(model)
    while graphs or nodes or attributes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield from (sparse.values, sparse.indices)
            nodes += graph.node
        elif nodes:
            attributes += nodes.pop().attribute
        else:
            attr = attributes.pop()
            yield from _attribute_tensors(attr)
            if attr.type == onnx.AttributeProto.GRAPH:
                graphs.append(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                graphs += attr.graphs
