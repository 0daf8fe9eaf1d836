"""GF304: domains beyond ai.onnx, for the release the user deploys.

Optimized exports (Optimum's `optimize="O2"`, onnxruntime.transformers.optimizer) import `ai.onnx.ml` opset 5 and
a handful of other domains they never use, and run com.microsoft contrib ops (SkipLayerNormalization, BiasGelu,
FusedMatMul, MatMulNBits for int4). onnxruntime 1.16 loads ai.onnx.ml up to opset 3 and refuses the whole model
for an import above that, used or not. An import no node uses is dropped; a used one above the target is lowered
only where every contrib op the model uses exists in that release (all contrib ops are since-version 1), else the
repair is refused naming the op, the node, the domain and the release. The table is measured on the real wheels
(ort_domains.json).
"""

from __future__ import annotations

from ..errors import RepairRefusedError
from ..findings import DOMAIN_ABOVE_TARGET, Finding
from ..model.graph import AI_ONNX, all_graphs
from ..targets import TargetRuntime
from .contract import ANY_MODEL, RepairPass, Subject, repair_pass

ML, MS = "ai.onnx.ml", "com.microsoft"


def retarget_domains(target: TargetRuntime) -> RepairPass:
    """The pass that makes every domain import and contrib op of a model fit onnxruntime `target`."""
    limits = target.domains

    @repair_pass(DOMAIN_ABOVE_TARGET, scope=ANY_MODEL)
    def retarget_domains(subject: Subject) -> list[Finding]:
        if limits is None:
            return []
        model = subject.model
        used: dict[str, list[tuple[str, str, str]]] = {}  # domain -> [(op, node, where)]
        for graph, where in all_graphs(model.graph):
            for node in graph.node:
                used.setdefault(node.domain or "", []).append((node.op_type, node.name, where))
        available = limits.cpu_kernels if limits.cpu_kernels is not None else limits.contrib_ops
        for op, node_name, where in used.get(MS, []):
            if op not in available:
                lacks = "has no CPU kernel for" if op in limits.contrib_ops else "has no"
                raise RepairRefusedError(f"onnxruntime {limits.release} {lacks} contrib op {MS}.{op} (node "
                                         f"{node_name!r}, {where}); deploy a release that has it or export without it")
        findings, keep = [], []
        for opset in model.opset_import:
            domain = opset.domain
            highest = {ML: limits.ml_max_opset, MS: limits.ms_max_opset}.get(domain)
            if domain in AI_ONNX or domain in used:
                if highest is not None and opset.version > highest:
                    if domain == ML:
                        op, node_name, _ = used[ML][0]
                        raise RepairRefusedError(f"{ML} opset {opset.version} is above {highest}, the highest "
                                                 f"onnxruntime {limits.release} runs, and node {node_name!r} uses "
                                                 f"{ML}.{op}; deploy a newer onnxruntime or export without it")
                    findings.append(Finding(code=DOMAIN_ABOVE_TARGET, tensor=domain,
                                            message=f"{domain} opset {opset.version} is above {highest}, the highest "
                                                    f"onnxruntime {limits.release} runs",
                                            fix=f"import {domain} at opset {highest} (every op used exists there)",
                                            before=str(opset.version), after=f"import {domain} at opset {highest}"))
                    opset.version = highest
                keep.append(opset)
                continue
            if highest is None or opset.version > highest:  # an unknown domain, or one above the target
                findings.append(Finding(code=DOMAIN_ABOVE_TARGET, tensor=domain or None,
                                        message=f"{domain} opset {opset.version} is imported but no node uses it"
                                                + (f"; onnxruntime {limits.release} runs up to {highest}"
                                                   if highest is not None else ""),
                                        fix=f"drop the unused {domain} import", before=str(opset.version),
                                        after="drop the unused"))
                continue
            keep.append(opset)
        if len(keep) != len(model.opset_import):
            kept = [type(o)(domain=o.domain, version=o.version) for o in keep]
            del model.opset_import[:]
            model.opset_import.extend(kept)
        return findings

    return retarget_domains
