"""Find the parts of an Optimum merged decoder, structurally.

Optimum's `merge_decoders` wraps the no-past and with-past decoders in one `If` on the boolean input
`use_cache_branch`. Nothing here trusts node names (`optimum::if`) or which attribute holds which branch: the
cache branch is the one that reads `past_key_values.*`.

Edits are made on the protobuf itself (rewire a tensor, then remove what became dead), never by re-exporting:
onnx-graphsurgeon's exporter re-homes outer-scope initializers into every branch that reads them, which
duplicates the weights of a merged decoder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import NotAMergedDecoderError, RepairRefusedError
from ..io import onnx_proto as onnx
from ..signature import CACHE_FLAG, PAST, PRESENT, kv_key
from .graph import attribute, node_reads, producers

# Ops that only forward the condition (exporters sometimes cast or reshape the flag before the If). `Not` swaps
# the branches, which is harmless: the cache branch is decided by what it reads, not by then/else.
_CONDITION_FORWARDERS = {"Identity", "Cast", "Squeeze", "Reshape", "Unsqueeze", "Not"}

KVKey = tuple[int, str, str]  # (layer, "encoder"|"decoder", "key"|"value")


@dataclass
class MergedDecoder:
    model: onnx.ModelProto
    if_node: onnx.NodeProto
    cache_attr: str  # "then_branch" or "else_branch": whichever reads the past
    past: dict[KVKey, onnx.ValueInfoProto] = field(default_factory=dict)
    present: dict[KVKey, int] = field(default_factory=dict)  # -> position among the If's outputs

    def _branch(self, name: str) -> onnx.GraphProto:
        branch = attribute(self.if_node, name)
        assert branch is not None, "find_merged_decoder checked both branches"
        return branch.g

    @property
    def cache_branch(self) -> onnx.GraphProto:
        return self._branch(self.cache_attr)

    @property
    def no_cache_branch(self) -> onnx.GraphProto:
        return self._branch("else_branch" if self.cache_attr == "then_branch" else "then_branch")

    @property
    def names_kind(self) -> bool:
        """Whether the signature spells the attention kind (`past_key_values.N.decoder.key`), as seq2seq does."""
        return any(PAST.match(v.name)[2] for v in self.past.values())  # type: ignore[index]

    def kv_name(self, prefix: str, key: KVKey) -> str:
        """The name of a present (prefix "present") or past ("past_key_values") tensor, as this model spells it."""
        if prefix == "present" and key in self.present:
            return self.if_node.output[self.present[key]]
        if prefix != "present" and key in self.past:
            return self.past[key].name
        return f"{prefix}.{key[0]}{'.' + key[1] if self.names_kind else ''}.{key[2]}"

    def main_input(self, name: str) -> onnx.ValueInfoProto | None:
        return next((v for v in self.model.graph.input if v.name == name), None)

    def main_output(self, name: str) -> onnx.ValueInfoProto | None:
        return next((v for v in self.model.graph.output if v.name == name), None)

    @property
    def encoder_sequence_dim(self) -> str | None:
        """The symbol the exporter gave the encoder length on `encoder_hidden_states`: the truth for encoder KV."""
        hidden = self.main_input("encoder_hidden_states")
        if hidden is None or len(hidden.type.tensor_type.shape.dim) < 2:
            return None
        return hidden.type.tensor_type.shape.dim[1].dim_param or None


@dataclass
class PlainModel:
    """Any other model of an export (encoder, split decoders): only version retargeting applies to it."""

    model: onnx.ModelProto


def _condition_source(graph: onnx.GraphProto, name: str) -> str:
    made_by, seen = producers(graph), set()
    # A corrupt graph can have a forwarder without input, or a cycle: both end the walk rather than crash or hang.
    while name in made_by and made_by[name].op_type in _CONDITION_FORWARDERS and made_by[name].input \
            and name not in seen:
        seen.add(name)
        name = made_by[name].input[0]
    return name


_ORT_CONVERTER_PAST = re.compile(r"^past_(key|value)_(self|cross)_\d+$")
_SPLIT_NEXT = ("run `graphfix repair` on its model folder (graphfix repair FOLDER OUT), which merges "
               "decoder_model.onnx and decoder_with_past_model.onnx into decoder_model_merged.onnx")


def what_it_is(graph: onnx.GraphProto) -> tuple[str, str]:
    """What a model without `use_cache_branch` is, by its input and output names, and what to do next: the other
    files of an export are what users most often hand to check by mistake (an encoder, the two decoders of a split
    export), and onnxruntime's own converters write decoders of another protocol."""
    inputs, outputs = {v.name for v in graph.input}, {v.name for v in graph.output}
    if any(_ORT_CONVERTER_PAST.match(name) for name in inputs):
        return ("a decoder from onnxruntime's own converter (onnxruntime.transformers.models.t5 / whisper "
                "convert_to_onnx: past_key_self_* / past_key_cross_* inputs)",
                "its client feeds present_key_self_N back as past_key_self_N and keeps past_key_cross_N from the "
                "encoder-decoder-init model's present_key_cross_N (onnxruntime's BeamSearch op, from "
                "convert_generation, drives it so); graphfix repairs Optimum exports: for a plain present->past "
                "client, export with `optimum-cli export onnx` and repair that")
    if any(PAST.match(name) for name in inputs):
        return "a decoder with past, as split exports have it", _SPLIT_NEXT
    if "logits" in outputs:
        if any(PRESENT.match(name) for name in outputs):
            return "a decoder without past, as split exports have it", _SPLIT_NEXT
        return "a decoder without past or present outputs (no KV cache)", "nothing to repair"
    if "last_hidden_state" in outputs:
        return "an encoder", "nothing to repair"
    return "a model with neither past_key_values inputs nor logits", "nothing to repair"


# What to do with a decoder graphfix cannot take as Optimum's merged one.
_REEXPORT = ("re-export it with Optimum (optimum-cli export onnx, without --no-post-process, writes "
             "decoder_model_merged.onnx), which graphfix repairs")


def find_merged_decoder(model: onnx.ModelProto) -> MergedDecoder:
    graph = model.graph
    flag = next((v for v in graph.input if v.name == CACHE_FLAG), None)
    if flag is None or flag.type.tensor_type.elem_type != onnx.TensorProto.BOOL:
        what, then = what_it_is(graph)
        raise NotAMergedDecoderError(f"not a merged decoder ({what}, no boolean input {CACHE_FLAG!r}): {then}")
    # An If without its condition input is malformed (found by fuzzing); it conditions on nothing.
    ifs = [n for n in graph.node
           if n.op_type == "If" and n.input and _condition_source(graph, n.input[0]) == CACHE_FLAG]
    if len(ifs) != 1:
        raise NotAMergedDecoderError(
            f"not a merged decoder: expected one If conditioned on {CACHE_FLAG!r}, found {len(ifs)}; {_REEXPORT}")
    if_node = ifs[0]

    past = {}
    for value in graph.input:
        if match := PAST.match(value.name):
            past[kv_key(match)] = value
    if not past:
        raise NotAMergedDecoderError("not a merged decoder: no past_key_values.N.[encoder.|decoder.](key|value) "
                                     f"inputs; {_REEXPORT}")

    branches = {a.name: a.g for a in if_node.attribute if a.name in ("then_branch", "else_branch")}
    past_names = {v.name for v in past.values()}
    readers = [name for name, branch in branches.items()
               if any(read in past_names for n in branch.node for read in node_reads(n))]
    if len(readers) != 1:
        raise NotAMergedDecoderError(
            f"not a merged decoder: {len(readers)} branches of If {if_node.name!r} read past_key_values (want 1); "
            f"{_REEXPORT}")

    present = {}
    for slot, name in enumerate(if_node.output):
        if match := PRESENT.match(name):
            key = kv_key(match)
            if key in present:
                raise RepairRefusedError(f"ambiguous: If {if_node.name!r} outputs {name!r} twice; {_REEXPORT}")
            present[key] = slot
    for name in ("then_branch", "else_branch"):  # the passes read both branches slot by slot
        if name not in branches or len(branches[name].output) != len(if_node.output):
            returns = f"returns {len(branches[name].output)}" if name in branches else "is missing"
            raise NotAMergedDecoderError(f"not a merged decoder: If {if_node.name!r} has {len(if_node.output)} "
                                         f"outputs but its {name} {returns}; {_REEXPORT}")
    return MergedDecoder(model=model, if_node=if_node, cache_attr=readers[0], past=past, present=present)


def matching_past(decoder: MergedDecoder, key: KVKey) -> onnx.ValueInfoProto:
    """The past input a present output is fed back into, by layer and kind; refuse rather than guess."""
    past = decoder.past.get(key)
    if past is None:
        raise RepairRefusedError(
            f"cannot map {decoder.kv_name('present', key)}: no input {decoder.kv_name('past_key_values', key)}; "
            f"{_REEXPORT}")
    return past
