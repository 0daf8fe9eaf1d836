"""A split export's two decoders as one merged decoder, as Optimum's `merge_decoders` builds it, but correct.

`decoder_model.onnx` (no past: runs the prompt, returns every present) and `decoder_with_past_model.onnx` (one token
at a time, reads every past, returns only the self-attention presents) become one model with one `If` on the boolean
input `use_cache_branch` (shape [1]): the no-past branch is the decoder's graph, the with-past branch the decoder
with past's graph, which also returns each `present.N.encoder.*` as its `past_key_values.N.encoder.*` (an Identity:
a branch output cannot be an outer-scope value itself; onnx-ir's OutputFixPass inserts the same). Optimum's own merge
returns dummy (0, heads, 1, head_dim) constants there instead, which breaks every plain present->past client.

The inputs are the union, in Optimum's order (the decoder's, then what only the decoder with past reads, then
`use_cache_branch`); the outputs are the decoder's. Weights move to the outer graph, each stored once: two
initializers with the same type, shape and bytes become one (`content` says how each initializer's bytes are
compared, so the payloads never enter Python here). Like Optimum, scalars and 1-D int32/int64 tensors stay in their
branch. Everything here edits skeletons (io/read.py); the payloads stay in the source files for the writer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import NotAMergedDecoderError
from ..io import onnx_proto as onnx
from ..signature import CACHE_FLAG, PAST, PRESENT, kv_key
from .graph import AI_ONNX, ai_onnx_opset, all_graphs

DECODER_STEM = "decoder_model"
WITH_PAST_STEM = "decoder_with_past_model"
IF_NAME = "graphfix::if"
_INT_TYPES = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)

# An initializer's bytes, as something comparable: a digest of its payload, wherever it lives (the caller reads it).
Content = Callable[[int, onnx.TensorProto], bytes]


@dataclass
class MergedPair:
    """The merged skeleton and where each of its outer initializers came from (0: the decoder, 1: with past)."""

    model: onnx.ModelProto
    origin: dict[str, int] = field(default_factory=dict)  # outer initializer name -> source index
    shared: int = 0  # initializers stored once instead of twice
    passthrough: list[str] = field(default_factory=list)  # present.N.encoder.* the with-past branch passes through


def _refuse(message: str) -> NotAMergedDecoderError:
    return NotAMergedDecoderError(f"cannot merge the split decoders: {message}")


def _stays_in_branch(tensor: onnx.TensorProto) -> bool:
    """Optimum keeps these in the branches (onnxruntime's optimizer breaks on merged models otherwise)."""
    return len(tensor.dims) == 0 or (len(tensor.dims) == 1 and tensor.data_type in _INT_TYPES)


def check_pair(decoder: onnx.ModelProto, with_past: onnx.ModelProto) -> None:
    """Refuse, naming the condition, a pair that is not a decoder without past and its decoder with past."""
    decoder_inputs = {v.name for v in decoder.graph.input}
    past_inputs = {v.name for v in with_past.graph.input if PAST.match(v.name)}
    if any(PAST.match(name) for name in decoder_inputs):
        raise _refuse("decoder_model.onnx already takes past_key_values.* inputs")
    if not past_inputs:
        raise _refuse("decoder_with_past_model.onnx takes no past_key_values.* inputs")
    if CACHE_FLAG in decoder_inputs | {v.name for v in with_past.graph.input}:
        raise _refuse(f"one of them already takes {CACHE_FLAG!r}: it is merged")
    if ai_onnx_opset(decoder) != ai_onnx_opset(with_past):
        raise _refuse(f"their opsets differ ({ai_onnx_opset(decoder)} and {ai_onnx_opset(with_past)}); "
                      "export both with one --opset")
    decoder_outputs = [v.name for v in decoder.graph.output]
    if "logits" not in decoder_outputs:
        raise _refuse("decoder_model.onnx has no logits output")
    extra = [v.name for v in with_past.graph.output if v.name not in decoder_outputs]
    if extra:
        raise _refuse(f"decoder_with_past_model.onnx outputs {extra[0]!r}, which decoder_model.onnx does not")
    returned = {v.name for v in with_past.graph.output}
    for name in decoder_outputs:
        if name in returned:
            continue
        match = PRESENT.match(name)
        past = f"past_key_values.{name[len('present.'):]}"
        if match is None or kv_key(match)[1] != "encoder" or past not in past_inputs:
            raise _refuse(f"decoder_with_past_model.onnx does not return {name!r}, and it is not an encoder "
                          "present it could pass through from its past")


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}_merged_{n}"
    taken.add(candidate)
    return candidate


def _rename_reads(graph: onnx.GraphProto, renamed: dict[str, str]) -> None:
    """Every read of a renamed initializer, in `graph` and its subgraphs (which see it as an outer-scope value)."""
    if not renamed:
        return
    for current, _ in all_graphs(graph):
        for node in current.node:
            for i, name in enumerate(node.input):
                if name in renamed:
                    node.input[i] = renamed[name]
        for output in current.output:
            if output.name in renamed:
                output.name = renamed[output.name]


def _all_names(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for current, _ in all_graphs(graph):
        names |= {t.name for t in current.initializer} | {v.name for v in current.input}
        names |= {v.name for v in current.output} | {v.name for v in current.value_info}
        names |= {o for node in current.node for o in node.output if o}
        names |= {i for node in current.node for i in node.input if i}
    return names


def _outer_initializers(graphs: list[onnx.GraphProto], content: Content) -> tuple[list[onnx.TensorProto],
                                                                                   dict[str, int], int]:
    """Move each graph's weights out of it, each distinct one once, renamed where two different ones share a name
    (or a name clashes with a value of the other graph); the graphs' reads follow the new names."""
    # A moved weight's name must not be any other value's in either graph (a branch value of the same name would
    # shadow it); the reads of a graph's own weights are no clash.
    taken = set().union(*(_all_names(g) - {t.name for t in g.initializer if not _stays_in_branch(t)}
                          for g in graphs))
    by_content: dict[tuple[int, tuple[int, ...], bytes], str] = {}
    outer: list[onnx.TensorProto] = []
    origin: dict[str, int] = {}
    shared = 0
    for index, graph in enumerate(graphs):
        renamed: dict[str, str] = {}
        kept = []
        for tensor in graph.initializer:
            if _stays_in_branch(tensor):
                kept.append(tensor)
                continue
            key = (tensor.data_type, tuple(tensor.dims), content(index, tensor))
            if key in by_content:
                shared += 1
                if by_content[key] != tensor.name:
                    renamed[tensor.name] = by_content[key]
                continue
            name = _unique(tensor.name, taken)
            if name != tensor.name:
                renamed[tensor.name] = name
            moved = onnx.TensorProto()
            moved.CopyFrom(tensor)
            moved.name = name
            outer.append(moved)
            origin[name] = index
            by_content[key] = name
        del graph.initializer[:]
        graph.initializer.extend(kept)
        _rename_reads(graph, renamed)
    return outer, origin, shared


def _with_past_branch(graph: onnx.GraphProto, outputs: list[onnx.ValueInfoProto]) -> tuple[onnx.GraphProto,
                                                                                            list[str]]:
    """The decoder with past's graph as a branch returning the decoder's outputs in the decoder's order: what it
    returns itself, and each encoder present as an Identity of its past (the encoder KV does not change)."""
    returned = {v.name: v for v in graph.output}
    past = {v.name: v for v in graph.input}
    branch = onnx.GraphProto(name="with_past", node=graph.node, initializer=graph.initializer,
                             value_info=graph.value_info, sparse_initializer=graph.sparse_initializer)
    passthrough = []
    for output in outputs:
        if output.name in returned:
            branch.output.append(returned[output.name])
            continue
        source = past[f"past_key_values.{output.name[len('present.'):]}"]
        branch.node.append(onnx.make_node("Identity", [source.name], [output.name],
                                          name=f"{output.name}_passthrough"))
        declared = branch.output.add()
        declared.CopyFrom(source)
        declared.name = output.name
        passthrough.append(output.name)
    return branch, passthrough


def _opset_imports(models: list[onnx.ModelProto]) -> list[onnx.OperatorSetIdProto]:
    imports: dict[str, onnx.OperatorSetIdProto] = {}
    for model in models:
        for opset in model.opset_import:
            domain = "" if opset.domain in AI_ONNX else opset.domain
            if domain in imports and imports[domain].version != opset.version:
                raise _refuse(f"they import {domain or 'ai.onnx'} at versions {imports[domain].version} and "
                              f"{opset.version}")
            imports.setdefault(domain, opset)
    return list(imports.values())


def merge_pair(decoder: onnx.ModelProto, with_past: onnx.ModelProto, content: Content) -> MergedPair:
    """The merged decoder of the pair (skeletons; neither argument is changed). `content(source index, tensor)`
    gives bytes equal for equal payloads (a digest), for storing shared weights once."""
    check_pair(decoder, with_past)
    graphs = [onnx.GraphProto(), onnx.GraphProto()]
    graphs[0].CopyFrom(decoder.graph)
    graphs[1].CopyFrom(with_past.graph)
    outer, origin, shared = _outer_initializers(graphs, content)
    outputs = list(graphs[0].output)
    no_past = onnx.GraphProto(name="no_past", node=graphs[0].node, initializer=graphs[0].initializer,
                              value_info=graphs[0].value_info, sparse_initializer=graphs[0].sparse_initializer,
                              output=outputs)
    cached, passthrough = _with_past_branch(graphs[1], outputs)
    if_node = onnx.make_node("If", [CACHE_FLAG], [v.name for v in outputs], name=IF_NAME)
    if_node.attribute.add(name="then_branch", type=onnx.AttributeProto.GRAPH).g.CopyFrom(cached)
    if_node.attribute.add(name="else_branch", type=onnx.AttributeProto.GRAPH).g.CopyFrom(no_past)
    inputs = list(graphs[0].input)
    inputs += [v for v in graphs[1].input if v.name not in {i.name for i in inputs}]
    flag = onnx.ValueInfoProto(name=CACHE_FLAG)
    flag.type.tensor_type.elem_type = onnx.TensorProto.BOOL
    flag.type.tensor_type.shape.dim.add().dim_value = 1
    graph = onnx.GraphProto(name="merged", node=[if_node], input=[*inputs, flag], output=outputs, initializer=outer)
    model = onnx.ModelProto(ir_version=max(decoder.ir_version, with_past.ir_version), graph=graph,
                            opset_import=_opset_imports([decoder, with_past]), producer_name="graphfix",
                            metadata_props=decoder.metadata_props)
    functions = {(f.domain, f.name): f for f in decoder.functions}
    for function in with_past.functions:
        same = functions.get((function.domain, function.name))
        if same is not None and same.SerializeToString() != function.SerializeToString():
            raise _refuse(f"they define function {function.domain}::{function.name} differently")
        functions.setdefault((function.domain, function.name), function)
    model.functions.extend(functions.values())
    return MergedPair(model=model, origin=origin, shared=shared, passthrough=passthrough)


__all__ = ["DECODER_STEM", "WITH_PAST_STEM", "MergedPair", "check_pair", "merge_pair"]
