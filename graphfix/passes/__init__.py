"""The repairs, in the order `repair` applies them. Each pass is `pass(decoder) -> list[Finding]`: it edits
`decoder.model` in place and returns what it changed, one Finding per repaired thing. `check` runs the same passes
on a model it never writes, so check and repair cannot disagree. An empty list means nothing to do: running the
pipeline on its own output returns nothing, and idempotence is tested pass by pass."""

from .encoder_kv_passthrough import encoder_kv_passthrough
from .fixed_shapes import fixed_shapes
from .kv_dim_names import kv_dim_names
from .retarget_versions import retarget_versions
from .truthful_kv_shapes import truthful_kv_shapes

# Fixed dims are made symbolic first and names unified next: truthful shapes compare against the final symbols.
PIPELINE = (encoder_kv_passthrough, fixed_shapes, kv_dim_names, truthful_kv_shapes)


def pipeline(target_ort: str | None = None) -> tuple:
    """The passes for one run; versions are only touched when the user names the runtime they deploy on."""
    return PIPELINE + ((retarget_versions(target_ort),) if target_ort else ())


__all__ = ["PIPELINE", "encoder_kv_passthrough", "fixed_shapes", "kv_dim_names", "pipeline", "retarget_versions",
           "truthful_kv_shapes"]
