"""GF301 / GF302: a model the deployed onnxruntime refuses to load is broken before any cache matters.

The opset is converted down first (targets/opset_adapters.py, every subgraph included), since a lower opset can need a
lower IR version.

Today's onnx stamps IR 10+ on everything it saves, and onnxruntime 1.16 (the seeds' Rust `ort`) refuses any IR
above 9 even when nothing in the model needs it. The IR version is lowered to the lowest the model's contents need
(onnx's own `find_min_ir_version_for`, plus the element types that raised it); when the contents need more than
the target allows, or the opset is above the target's, the repair is refused naming the feature.
"""

from __future__ import annotations

from ..errors import RepairRefusedError
from ..findings import IR_ABOVE_TARGET, OPSET_ABOVE_TARGET, Finding
from ..io import onnx_proto as onnx
from ..io.onnx_proto import TensorProto
from ..model.graph import ai_onnx_opset
from ..targets import TargetRuntime
from .contract import ANY_MODEL, ATTRIBUTES_AS_INPUTS, RepairPass, Subject, repair_pass

# Element types and the IR version that introduced them.
_TYPE_IR: dict[int, int] = {TensorProto.FLOAT8E4M3FN: 9, TensorProto.FLOAT8E4M3FNUZ: 9, TensorProto.FLOAT8E5M2: 9,
            TensorProto.FLOAT8E5M2FNUZ: 9, TensorProto.UINT4: 10, TensorProto.INT4: 10}
if hasattr(TensorProto, "FLOAT4E2M1"):
    _TYPE_IR[TensorProto.FLOAT4E2M1] = 11


def min_ir_version(model: onnx.ModelProto) -> tuple[int, str]:
    """The lowest IR version the model's contents need, and what needs it."""
    need, why = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True), "its opset imports"
    from ..targets.opset_adapters import element_types  # onnx's op schemas: only runs that retarget load them

    for elem_type, where in element_types(model.graph):
        if _TYPE_IR.get(elem_type, 0) > need:
            need, why = _TYPE_IR[elem_type], f"{TensorProto.DataType.Name(elem_type)} in {where!r}"
    return need, why


def retarget_versions(target: TargetRuntime) -> RepairPass:
    """The pass that retargets any model of the export for onnxruntime `target`."""
    max_ir, max_opset = target.max_ir, target.max_opset

    @repair_pass(IR_ABOVE_TARGET, OPSET_ABOVE_TARGET, scope=ANY_MODEL, requires=(ATTRIBUTES_AS_INPUTS,))
    def retarget_versions(subject: Subject) -> list[Finding]:
        model, findings = subject.model, []
        opset = ai_onnx_opset(model)
        if opset is not None and opset > max_opset:
            from ..targets.opset_adapters import convert_down  # onnx's op schemas: only runs that retarget load them

            converted = convert_down(model, max_opset)
            findings.append(Finding(
                code=OPSET_ABOVE_TARGET, tensor=None, node=None,
                message=f"ai.onnx opset {opset} is above {max_opset}, the highest onnxruntime {target.release} runs",
                fix=f"convert to opset {max_opset} ({converted} nodes relabelled or decomposed, all subgraphs)",
                before=str(opset), after=f"{max_opset} ({converted} nodes converted)"))
        if model.ir_version <= max_ir:
            return findings
        need, why = min_ir_version(model)
        if need > max_ir:
            raise RepairRefusedError(f"IR version {need} is needed by {why}, "
                                     f"above IR {max_ir} of onnxruntime {target.release}; deploy a newer "
                                     "onnxruntime (a later --target-ort)")
        finding = Finding(code=IR_ABOVE_TARGET, tensor=None, node=None,
                          message=f"IR version {model.ir_version} is refused by onnxruntime {target.release} "
                                  f"(max IR {max_ir})",
                          fix=f"lower ir_version to {need}, the lowest its contents need",
                          before=str(model.ir_version), after=str(need))
        model.ir_version = need
        return findings + [finding]

    return retarget_versions
