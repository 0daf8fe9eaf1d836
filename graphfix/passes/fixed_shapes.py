"""GF201 / GF202: a decoder exported with a fixed batch or source length must hold at any size.

A config that leaves `batch_size` (or the encoder length) out of the dynamic axes makes Optimum's exporter declare
that axis with the dummy's size (batch 2, source length 16) on every input and output, so onnxruntime refuses any
other batch before running anything. Measured on both exporter generations: the graph itself still computes every
shape from `Shape` ops, so declaring the axis symbolic again (GF201) is the whole repair. A graph that does bake the
exported size into a Reshape's constant shape (hand-written or older export code) gets that entry rewritten to 0,
"copy this dim from the input" (GF202), where shape inference shows the input's dim is the relaxed axis.
"""

from __future__ import annotations

from ..errors import BadInputError, RepairRefusedError, one_line
from ..findings import BAKED_RESHAPE_SHAPE, STATIC_SIGNATURE_DIM, Finding
from ..io import onnx_proto as onnx
from ..model.graph import all_graphs, attribute, node_reads, producers
from ..model.merged_decoder import MergedDecoder
from ..signature import PAST, PRESENT
from .contract import SYMBOLIC_DIMS, repair_pass

BATCH, ENCODER_LENGTH, DECODER_LENGTH, PAST_LENGTH = (
    "batch_size", "encoder_sequence_length", "decoder_sequence_length", "past_decoder_sequence_length")


def _semantic_axes(name: str) -> dict[int, str]:
    """Which axes of Optimum's seq2seq decoder signature are variable by nature, and their usual symbol."""
    kv = PAST.match(name) or PRESENT.match(name)
    if kv:
        sequence = {2: ENCODER_LENGTH} if kv[2] == "encoder" else ({2: PAST_LENGTH} if PAST.match(name) else {})
        return {0: BATCH} | sequence
    return {"input_ids": {0: BATCH, 1: DECODER_LENGTH}, "logits": {0: BATCH, 1: DECODER_LENGTH},
            "encoder_hidden_states": {0: BATCH, 1: ENCODER_LENGTH},
            "encoder_attention_mask": {0: BATCH, 1: ENCODER_LENGTH}}.get(name, {})


@repair_pass(STATIC_SIGNATURE_DIM, BAKED_RESHAPE_SHAPE, ensures=(SYMBOLIC_DIMS,))
def fixed_shapes(decoder: MergedDecoder) -> list[Finding]:
    graph = decoder.model.graph
    # Only the signature says what the export fixed; branch outputs may carry other static shapes (the dummy's,
    # written there by shape inference in tools like onnxruntime's quantizer), which truthful_kv_shapes handles.
    exported: dict[str, int] = {}  # symbol -> the size the export fixed
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        for axis, symbol in _semantic_axes(value.name).items():
            if axis < len(dims) and not dims[axis].dim_param and dims[axis].dim_value > 0:
                if exported.setdefault(symbol, dims[axis].dim_value) != dims[axis].dim_value:
                    raise RepairRefusedError(f"{value.name} fixes {symbol} to {dims[axis].dim_value}, "
                                             f"other declarations to {exported[symbol]}; re-export with every "
                                             "axis dynamic (Optimum's defaults)")
    # Branch outputs mean what the If output in their slot means, whatever they are called.
    declared = [(v, v.name) for v in list(graph.input) + list(graph.output)]
    declared += [(branch.output[slot], name) for branch in (decoder.cache_branch, decoder.no_cache_branch)
                 for slot, name in enumerate(decoder.if_node.output)]
    relaxed: dict[str, list[str]] = {}
    for value, meaning in declared:
        dims = value.type.tensor_type.shape.dim
        for axis, symbol in _semantic_axes(meaning).items():
            if axis < len(dims) and not dims[axis].dim_param and dims[axis].dim_value == exported.get(symbol):
                dims[axis].dim_param = symbol
                relaxed.setdefault(symbol, []).append(value.name)
    findings = [Finding(code=STATIC_SIGNATURE_DIM, tensor=symbol,
                        message=f"{symbol} is fixed to {exported[symbol]} in {len(names)} declarations "
                                f"(e.g. {names[0]}), so onnxruntime refuses any other size",
                        fix=f"declare it as the symbol {symbol!r}",
                        before=f"{exported[symbol]} in {len(names)} declarations", after=symbol)
                for symbol, names in sorted(relaxed.items())]
    if exported:
        findings += _baked_reshapes(decoder, exported)
    return findings


def _constant_shape(graph: onnx.GraphProto, name: str,
                    outer: dict[str, onnx.TensorProto]) -> onnx.TensorProto | None:
    node = producers(graph).get(name)
    if node is not None and node.op_type == "Constant":
        value = attribute(node, "value")
        return value.t if value is not None else None
    return next((t for t in graph.initializer if t.name == name), None) or outer.get(name)


def _baked_reshapes(decoder: MergedDecoder, exported: dict[str, int]) -> list[Finding]:
    # Only fixed-shape exports get here: the rest of graphfix's repair path never imports numpy or onnx proper.
    import numpy as np
    from onnx import numpy_helper, shape_inference

    # Shape inference on a copy: it needs no weight values, and its value_info must not leak into the output.
    try:
        inferred = shape_inference.infer_shapes(decoder.model, data_prop=False)
    except (ValueError, shape_inference.InferenceError) as err:  # malformed types or tensors (found by fuzzing)
        raise BadInputError(f"onnx shape inference rejects the model: {one_line(str(err))}") from None
    dims_of = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
               for g, _ in all_graphs(inferred.graph) for v in list(g.value_info) + list(g.input) + list(g.output)}
    outer = {t.name: t for t in decoder.model.graph.initializer}
    findings = []
    for graph, _ in all_graphs(decoder.model.graph):
        for node in graph.node:
            if node.op_type != "Reshape" or len(node.input) < 2:
                continue
            tensor = _constant_shape(graph, node.input[1], outer)
            data_dims = dims_of.get(node.input[0], [])
            if tensor is None or not data_dims:
                continue
            try:
                shape = numpy_helper.to_array(tensor).astype(np.int64)
            except (ValueError, TypeError) as err:
                raise BadInputError(f"Reshape {node.name!r} has an unreadable shape tensor: {err}") from None
            symbols = [dim if isinstance(dim, str) else "" for dim in data_dims]  # a dim_value is never relaxed
            baked = [i for i, size in enumerate(shape) if i < len(symbols) and symbols[i] in exported
                     and size == exported[symbols[i]] and size > 0]
            if not baked:
                continue
            allowzero = attribute(node, "allowzero")
            if allowzero is not None and allowzero.i == 1:
                raise RepairRefusedError(f"Reshape {node.name!r} bakes {data_dims[baked[0]]} but sets allowzero=1, "
                                         "so 0 cannot copy the dim; re-export with every axis dynamic "
                                         "(Optimum's defaults)")
            fixed = shape.copy()
            fixed[baked] = 0
            findings.append(Finding(
                code=BAKED_RESHAPE_SHAPE, node=node.name, tensor=node.input[1],
                message=f"Reshape shape {shape.tolist()} bakes "
                        f"{', '.join(f'{data_dims[i]}={shape[i]}' for i in baked)}",
                fix=f"shape {fixed.tolist()} (0 copies the input's dim)",
                before=", ".join(f"{data_dims[i]}={shape[i]}" for i in baked), after=str(fixed.tolist())))
            replacement = numpy_helper.from_array(fixed, f"{node.input[1]}/graphfix_symbolic")
            graph.initializer.append(replacement)  # a new constant: the old one may be shared with other nodes
            old, node.input[1] = node.input[1], replacement.name
            _drop_if_unread(graph, old)
    return findings


def _drop_if_unread(graph: onnx.GraphProto, name: str) -> None:
    if any(name in node_reads(n) for n in graph.node):
        return
    for index, init in enumerate(graph.initializer):
        if init.name == name:
            del graph.initializer[index]
            return
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and list(node.output) == [name]:
            del graph.node[index]
            return
