"""GF103: the encoder KV length must carry the encoder's own symbol.

Optimum's legacy exporter names that dim `encoder_sequence_length_out` on past and present encoder KV, a symbol
tied to nothing else in the signature, so a runtime (or a user reading the signature) cannot bind it to the
length of `encoder_hidden_states`, which is what it always is.
"""

from __future__ import annotations

from ..findings import UNBINDABLE_DIM_NAME, Finding
from ..io import onnx_proto as onnx
from ..model.merged_decoder import MergedDecoder
from ..signature import KV_SEQUENCE_AXIS
from .contract import FINAL_DIM_NAMES, SYMBOLIC_DIMS, repair_pass


def _encoder_kv_values(decoder: MergedDecoder) -> list[onnx.ValueInfoProto]:
    values: list[onnx.ValueInfoProto | None] = [decoder.past[k] for k in sorted(decoder.past) if k[1] == "encoder"]
    for key, slot in sorted(decoder.present.items()):
        if key[1] == "encoder":
            values.append(decoder.main_output(decoder.kv_name("present", key)))
            values.extend(branch.output[slot] for branch in (decoder.cache_branch, decoder.no_cache_branch))
    return [v for v in values if v is not None and len(v.type.tensor_type.shape.dim) > KV_SEQUENCE_AXIS]


@repair_pass(UNBINDABLE_DIM_NAME, requires=(SYMBOLIC_DIMS,), ensures=(FINAL_DIM_NAMES,))
def kv_dim_names(decoder: MergedDecoder) -> list[Finding]:
    truth = decoder.encoder_sequence_dim
    if truth is None:
        return []  # a static or missing encoder length: nothing symbolic to agree with
    wrong: dict[str, list[onnx.TensorShapeProto.Dimension]] = {}
    for value in _encoder_kv_values(decoder):
        dim = value.type.tensor_type.shape.dim[KV_SEQUENCE_AXIS]
        if dim.dim_param and dim.dim_param != truth:
            wrong.setdefault(dim.dim_param, []).append(dim)
    findings = []
    for name, dims in sorted(wrong.items()):
        findings.append(Finding(
            code=UNBINDABLE_DIM_NAME, tensor=name,
            message=f"encoder KV length is named {name!r} in {len(dims)} declarations, "
                    f"unrelated to encoder_hidden_states' {truth!r}",
            fix=f"rename {name!r} to {truth!r}", before=name, after=truth))
        for dim in dims:
            dim.dim_param = truth
    return findings
