"""GF101: the cache branch must hand back the encoder KV it was given.

Optimum's `merge_decoders` gives the with-past branch a dummy `present.N.encoder.*` (a `(0, heads, 1, head_dim)`
Constant) because its own client keeps the cross-attention KV from step 1. A client that feeds every present back
as past is handed that dummy by step 2 (the first cached step) and fails at step 3, which feeds it: Reshape fails in
`encoder_attn` (legacy exporter) or MatMul fails to broadcast (current exporter). The fix produces the same branch
output from `Identity(past_key_values.N.encoder.*)`; the Identity matters because ORT rejects a subgraph output that
is directly an outer-scope value.
"""

from __future__ import annotations

from ..findings import DUMMY_ENCODER_KV, Finding
from ..io import onnx_proto as onnx
from ..model.graph import ancestors, attribute, node_reads, producers
from ..model.merged_decoder import MergedDecoder, matching_past
from .contract import ENCODER_KV_PASSED_THROUGH, repair_pass

# A present the cache branch fakes: (its slot among the If's outputs, the past it must pass, its name, the nodes
# that compute the dummy)
Dummy = tuple[int, str, str, list[onnx.NodeProto]]


def _describe(branch: onnx.GraphProto, name: str, node: onnx.NodeProto | None) -> str:
    if node is None:
        return "an initializer" if any(i.name == name for i in branch.initializer) else f"outer value {name!r}"
    value = attribute(node, "value")
    shape = f" of shape {tuple(value.t.dims)}" if value is not None else ""
    return f"a dummy {node.op_type}{shape}"


def _dummy_shape(node: onnx.NodeProto | None) -> str | None:
    value = attribute(node, "value") if node is not None else None
    return str(tuple(value.t.dims)) if value is not None else None


@repair_pass(DUMMY_ENCODER_KV, ensures=(ENCODER_KV_PASSED_THROUGH,))
def encoder_kv_passthrough(decoder: MergedDecoder) -> list[Finding]:
    branch = decoder.cache_branch
    made_by = producers(branch)  # once: a 6-layer decoder has thousands of nodes and 12 encoder presents
    findings: list[Finding] = []
    dummies: list[Dummy] = []
    for key, slot in sorted(decoder.present.items()):
        if key[1] != "encoder":
            continue
        past = matching_past(decoder, key)
        output = branch.output[slot].name
        reads, nodes = ancestors(branch, output, made_by)
        if past.name in reads:
            continue  # already derived from the past it was given
        present = decoder.kv_name("present", key)
        node = made_by.get(output)
        findings.append(Finding(
            code=DUMMY_ENCODER_KV, tensor=present, node=node.name if node is not None else None,
            message=f"cache branch returns {_describe(branch, output, node)} instead of {past.name}; "
                    "a client feeding presents back as past fails at step 3",
            fix=f"{present} = Identity({past.name}) in the cache branch", before=_dummy_shape(node),
            after=f"Identity({past.name})"))
        dummies.append((slot, past.name, present, nodes))
    if dummies:
        _pass_through(decoder, dummies)
    return findings


def _pass_through(decoder: MergedDecoder, dummies: list[Dummy]) -> None:
    """Produce each dummy's branch output from Identity(past) instead, then drop what became dead, in one sweep."""
    branch = decoder.cache_branch
    outer = {v.name for v in decoder.model.graph.input} | {i.name for i in decoder.model.graph.initializer}
    read_in_branch = {name for node in branch.node for name in node_reads(node)}
    position = {out: i for i, node in enumerate(branch.node) for out in node.output if out}
    replaced: dict[int, onnx.NodeProto] = {}  # node index -> its passthrough (same output name, same place)
    appended: list[onnx.NodeProto] = []
    candidates: set[str] = set()
    dummy_names: set[str] = set()
    for slot, past, present, dummy_nodes in dummies:
        output = branch.output[slot].name
        candidates |= {o for node in dummy_nodes for o in node.output if o} - {output}
        dummy_names |= {n for node in dummy_nodes for n in node.input} | {output}
        index = position.get(output)
        identity = onnx.make_node("Identity", [past], [output], name=f"graphfix/{present}/passthrough")
        if index is not None and len(branch.node[index].output) == 1:
            replaced[index] = identity  # the dummy's own producer; its name is reused by the passthrough
            continue
        if index is not None or output in outer or output in read_in_branch:
            # SSA forbids redefining an outer or shared name inside the branch: give the passthrough its own name.
            identity.output[0] = f"{present}.passthrough"
            branch.output[slot].name = identity.output[0]
        else:
            _remove_initializers(branch, {output})
        appended.append(identity)
    nodes = [replaced.get(i, node) for i, node in enumerate(branch.node)] + appended
    nodes = _without_dead(nodes, candidates, {o.name for o in branch.output})
    del branch.node[:]
    branch.node.extend(nodes)
    live = {read for node in branch.node for read in node_reads(node)} | {o.name for o in branch.output}
    _remove_initializers(branch, dummy_names - live)


def _without_dead(nodes: list[onnx.NodeProto], candidates: set[str], outputs: set[str]) -> list[onnx.NodeProto]:
    """Drop the dummies' producers that nothing reads any more; nodes outside `candidates` are never touched."""
    while True:
        live = {read for node in nodes for read in node_reads(node)} | outputs
        keep = [n for n in nodes if not ((outs := set(n.output) - {""}) and outs <= candidates and not outs & live)]
        if len(keep) == len(nodes):
            return keep
        nodes = keep


def _remove_initializers(branch: onnx.GraphProto, names: set[str]) -> None:
    keep = [init for init in branch.initializer if init.name not in names]
    if len(keep) != len(branch.initializer):
        del branch.initializer[:]
        branch.initializer.extend(keep)
