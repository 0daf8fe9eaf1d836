"""The repairs, in the order `repair` applies them: each is a RepairPass (contract.py) with a name, the finding
codes it may emit and the subject it takes. `check` runs the same passes on a model it never writes, so check and repair
cannot disagree. The retargeting passes load only when a run names a target runtime: a plain repair costs about
what copying the model costs, and its start-up is a fair part of that."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .contract import (
    ANY_MODEL,
    MERGED_DECODER,
    DecoderPass,
    ModelPass,
    RepairPass,
    Subject,
    order_breach,
    repair_pass,
    run_passes,
)
from .encoder_kv_passthrough import encoder_kv_passthrough
from .fixed_shapes import fixed_shapes
from .kv_dim_names import kv_dim_names
from .truthful_kv_shapes import truthful_kv_shapes

if TYPE_CHECKING:
    from ..targets import TargetRuntime

# The retargeting passes (attributes_as_inputs, float16_fallbacks, retarget_domains, retarget_versions) are imported
# from their modules: each module bears its pass's name, so the package cannot offer them lazily as well.

# The order each pass's `requires` / `ensures` declares (contract.order_breach checks it, here and in run_passes).
PIPELINE: tuple[RepairPass, ...] = (encoder_kv_passthrough, fixed_shapes, kv_dim_names, truthful_kv_shapes)
assert order_breach(PIPELINE, complete=True) is None, order_breach(PIPELINE, complete=True)


def pipeline(target: TargetRuntime | None = None) -> tuple[RepairPass, ...]:
    """The passes for one run; versions are only touched when the user names the runtime they deploy on."""
    if target is None:
        return PIPELINE
    from .attributes_as_inputs import attributes_as_inputs
    from .float16_fallbacks import float16_fallbacks
    from .retarget_domains import retarget_domains
    from .retarget_versions import retarget_versions

    passes = (*PIPELINE, attributes_as_inputs, float16_fallbacks(target), retarget_domains(target),
              retarget_versions(target))
    assert order_breach(passes, complete=True) is None, order_breach(passes, complete=True)
    return passes


__all__ = [
    "ANY_MODEL",
    "MERGED_DECODER",
    "PIPELINE",
    "DecoderPass",
    "ModelPass",
    "RepairPass",
    "Subject",
    "encoder_kv_passthrough",
    "fixed_shapes",
    "kv_dim_names",
    "order_breach",
    "pipeline",
    "repair_pass",
    "run_passes",
    "truthful_kv_shapes",
]
