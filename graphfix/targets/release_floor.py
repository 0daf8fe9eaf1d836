"""The oldest onnxruntime release that loads a model as it is, read off the measured tables (targets/ort_targets.py:
IR and ai.onnx opset per release; ort_domains.json: ai.onnx.ml / com.microsoft opsets and contrib ops; the float16
fallbacks 1.14-1.16 cannot load). Nothing is loaded here: this answers "which runtime can I ship this to" for
`describe` without installing 19 releases; `repair --target-ort X.Y` is what then proves a load in that release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..io import onnx_proto as onnx
from ..model.graph import all_graphs
from .ort_targets import TargetRuntime, known_releases

ML, MS = "ai.onnx.ml", "com.microsoft"
# 1.14 has no wheel for the Python the tables were measured with: its row is the published one.
UNMEASURED = {"1.14"}


@dataclass(frozen=True)
class ReleaseFloor:
    """`release` (X.Y) is the oldest release in the tables that loads the model, None when none does; `refused_by`
    is why the release just before it refuses the model (empty when the oldest known release loads it)."""

    release: str | None
    refused_by: str = ""
    measured: bool = True  # False when the answer rests on 1.14's published row

    def to_dict(self) -> dict[str, Any]:
        return {"release": self.release, "refused_by": self.refused_by or None, "measured": self.measured}

    def __str__(self) -> str:
        if self.release is None:
            return f"no onnxruntime release in graphfix's tables ({self.refused_by})"
        return f"onnxruntime >= {self.release}" + ("" if self.measured else " (1.14: published row, not measured)")


def _version_of(model: onnx.ModelProto, *domains: str) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in domains), None)


def _contrib_ops(model: onnx.ModelProto) -> set[str]:
    return {node.op_type for graph, _ in all_graphs(model.graph) for node in graph.node if node.domain == MS}


def _domain_refusal(model: onnx.ModelProto, target: TargetRuntime) -> str | None:
    limits = target.domains
    if limits is None:  # 1.14: nothing measured beyond IR and opset
        return None
    for domain, highest in ((ML, limits.ml_max_opset), (MS, limits.ms_max_opset)):
        version = _version_of(model, domain)
        if version is not None and version > highest:
            return f"{domain} opset {version} > {highest}"
    available = limits.cpu_kernels if limits.cpu_kernels is not None else limits.contrib_ops
    missing = sorted(_contrib_ops(model) - set(available))
    return f"no CPU kernel for {MS}.{missing[0]}" if missing else None


def _has_float16(model: onnx.ModelProto) -> bool:
    """Whether any tensor of the model is declared or stored as float16 (signature, value_info, weights)."""
    half = onnx.TensorProto.FLOAT16
    for graph, _ in all_graphs(model.graph):
        values = [*graph.input, *graph.output, *graph.value_info]
        if any(v.type.tensor_type.elem_type == half for v in values) or \
                any(t.data_type == half for t in graph.initializer):
            return True
    return False


def _float16_refusal(model: onnx.ModelProto, target: TargetRuntime) -> str | None:
    from ..model.merged_decoder import PlainModel
    from ..passes.float16_fallbacks import float16_fallbacks

    ops = target.float16_gaps
    if not ops or not _has_float16(model) or \
            not any(node.op_type in ops for graph, _ in all_graphs(model.graph) for node in graph.node):
        return None  # the pass infers shapes (imports onnx): only float16 models pay for it
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the pass edits what it is given; only its findings matter here
    found = float16_fallbacks(target)(PlainModel(copy))
    return f"float16 {found[0].node} has no kernel and its fallback fails to load" if found else None


def refusal(model: onnx.ModelProto, target: TargetRuntime) -> str | None:
    """Why onnxruntime `target` refuses `model` by the measured tables, or None when it loads it."""
    max_ir, max_opset = target.max_ir, target.max_opset
    if model.ir_version > max_ir:
        return f"IR {model.ir_version} > {max_ir}"
    opset = _version_of(model, "", "ai.onnx")
    if opset is not None and opset > max_opset:
        return f"opset {opset} > {max_opset}"
    return _domain_refusal(model, target) or _float16_refusal(model, target)


def oldest_release(model: onnx.ModelProto) -> ReleaseFloor:
    """The first release, oldest first, that `refusal` lets through."""
    before = ""
    for target in known_releases():
        release = target.series
        reason = refusal(model, target)
        if reason is None:
            return ReleaseFloor(release, before, measured=release not in UNMEASURED)
        before = f"onnxruntime {release}: {reason}"
    return ReleaseFloor(None, before)


def newest_of(floors: list[ReleaseFloor]) -> ReleaseFloor:
    """What a set of models (an export) needs together: the highest floor; None when any model loads nowhere."""
    if any(f.release is None for f in floors):
        return next(f for f in floors if f.release is None)
    if not floors:
        return ReleaseFloor(None, "no model")
    return max(floors, key=lambda f: tuple(int(x) for x in (f.release or "0.0").split(".")))
