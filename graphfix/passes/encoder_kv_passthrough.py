"""GF101: the cache branch must hand back the encoder KV it was given.

Optimum's `merge_decoders` gives the with-past branch a dummy `present.N.encoder.*` (a `(0, heads, 1, head_dim)`
Constant) because its own client keeps the cross-attention KV from step 1. A client that feeds every present back
as past gets that dummy at step 2: Reshape fails in `encoder_attn` (legacy exporter) or MatMul fails to broadcast
(current exporter). The fix produces the same branch output from `Identity(past_key_values.N.encoder.*)`; the
Identity matters because ORT rejects a subgraph output that is directly an outer-scope value.
"""

from __future__ import annotations

import onnx
from onnx import helper

from ..findings import DUMMY_ENCODER_KV, Finding
from ..merged_decoder import MergedDecoder, ancestors, kv_name, matching_past, node_reads, producers


def _describe(branch: onnx.GraphProto, name: str) -> str:
    node = producers(branch).get(name)
    if node is None:
        return "an initializer" if any(i.name == name for i in branch.initializer) else f"outer value {name!r}"
    value = next((a.t for a in node.attribute if a.name == "value"), None)
    shape = f" of shape {tuple(value.dims)}" if value is not None else ""
    return f"a dummy {node.op_type}{shape}"


def encoder_kv_passthrough(decoder: MergedDecoder) -> list[Finding]:
    branch = decoder.cache_branch
    findings = []
    for key, slot in sorted(decoder.present.items()):
        if key[1] != "encoder":
            continue
        past = matching_past(decoder, key)
        output = branch.output[slot].name
        reads, _ = ancestors(branch, output)
        if past.name in reads:
            continue  # already derived from the past it was given
        present = kv_name("present", key)
        node = producers(branch).get(output)
        findings.append(Finding(
            code=DUMMY_ENCODER_KV, tensor=present, node=node.name if node is not None else None,
            message=f"cache branch returns {_describe(branch, output)} instead of {past.name}; "
                    "a client feeding presents back as past fails at step 2",
            fix=f"{present} = Identity({past.name}) in the cache branch"))
        _pass_through(decoder, slot, past.name, present)
    return findings


def _pass_through(decoder: MergedDecoder, slot: int, past: str, present: str) -> None:
    branch = decoder.cache_branch
    output = branch.output[slot].name
    _, dummy_nodes = ancestors(branch, output)
    dummy_outputs = {o for node in dummy_nodes for o in node.output if o} - {output}
    dummy_names = {n for node in dummy_nodes for n in node.input} | {output}
    outer = {v.name for v in decoder.model.graph.input} | {i.name for i in decoder.model.graph.initializer}
    position = next((i for i, node in enumerate(branch.node) if output in node.output), None)
    if position is not None and len(branch.node[position].output) == 1:
        del branch.node[position]  # the dummy's own producer; its name is reused by the passthrough
    elif position is not None or output in outer or any(output in node_reads(n) for n in branch.node):
        # SSA forbids redefining an outer or shared name inside the branch: give the passthrough its own name.
        output = f"{present}.passthrough"
        branch.output[slot].name = output
        position = None
    else:
        _remove_initializers(branch, {output})
    branch.node.insert(len(branch.node) if position is None else position, helper.make_node(
        "Identity", [past], [output], name=f"graphfix/{present}/passthrough"))
    _remove_dead(branch, dummy_outputs, dummy_names)


def _remove_dead(branch: onnx.GraphProto, candidates: set[str], names: set[str]) -> None:
    """Drop the dummy's producers (and branch initializers) that nothing reads any more; touch nothing else."""
    while True:
        live = {read for node in branch.node for read in node_reads(node)} | {o.name for o in branch.output}
        dead = [i for i, node in enumerate(branch.node)
                if (outs := set(node.output) - {""}) and outs <= candidates and not outs & live]
        if not dead:
            break
        for index in reversed(dead):
            del branch.node[index]
    live = {read for node in branch.node for read in node_reads(node)} | {o.name for o in branch.output}
    _remove_initializers(branch, names - live)


def _remove_initializers(branch: onnx.GraphProto, names: set[str]) -> None:
    keep = [init for init in branch.initializer if init.name not in names]
    if len(keep) != len(branch.initializer):
        del branch.initializer[:]
        branch.initializer.extend(keep)
