"""GF102 / GF104: declared present shapes must say what the model returns.

After the passthrough, `present.N.encoder.*` is exactly its past input, so it declares the same dims. The self
attention `present.N.decoder.*` grows by the tokens fed this step: `past + decoder_sequence_length`. The legacy
exporter declares `past_decoder_sequence_length + 1`, false at step 1 (no past, any prefix length) and for any
client that feeds more than one token. Both If branches declare the same outputs, so they are fixed alike.
"""

from __future__ import annotations

from ..findings import UNTRUTHFUL_DECODER_KV_SHAPE, UNTRUTHFUL_ENCODER_KV_SHAPE, Finding
from ..io import onnx_proto as onnx
from ..model.merged_decoder import KVKey, MergedDecoder
from ..signature import KV_SEQUENCE_AXIS
from .contract import ENCODER_KV_PASSED_THROUGH, FINAL_DIM_NAMES, SYMBOLIC_DIMS, repair_pass


def _dims(value: onnx.ValueInfoProto) -> list[str | int]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _set_dims(value: onnx.ValueInfoProto, dims: list[str | int]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        shape.dim.add(**({"dim_param": d} if isinstance(d, str) else {"dim_value": d}))


def _expected(decoder: MergedDecoder, key: KVKey) -> list[str | int] | None:
    past = decoder.past.get(key)
    if past is None or not past.type.tensor_type.HasField("shape"):
        return None
    dims = _dims(past)
    if key[1] == "encoder":
        return dims
    input_ids = decoder.main_input("input_ids")
    new_tokens = _dims(input_ids)[1] if input_ids is not None and len(_dims(input_ids)) > 1 else None
    if not isinstance(dims[KV_SEQUENCE_AXIS], str) or not isinstance(new_tokens, str):
        return None  # static lengths: nothing symbolic to state
    return dims[:KV_SEQUENCE_AXIS] + [f"{dims[KV_SEQUENCE_AXIS]} + {new_tokens}"] + dims[KV_SEQUENCE_AXIS + 1:]


@repair_pass(UNTRUTHFUL_ENCODER_KV_SHAPE, UNTRUTHFUL_DECODER_KV_SHAPE,
             requires=(ENCODER_KV_PASSED_THROUGH, SYMBOLIC_DIMS, FINAL_DIM_NAMES))
def truthful_kv_shapes(decoder: MergedDecoder) -> list[Finding]:
    findings = []
    for key, slot in sorted(decoder.present.items()):
        expected = _expected(decoder, key)
        if expected is None:
            continue
        name = decoder.kv_name("present", key)
        declared = [decoder.main_output(name), decoder.cache_branch.output[slot], decoder.no_cache_branch.output[slot]]
        wrong = [v for v in declared if v is not None and _dims(v) != expected]
        if not wrong:
            continue
        code = UNTRUTHFUL_ENCODER_KV_SHAPE if key[1] == "encoder" else UNTRUTHFUL_DECODER_KV_SHAPE
        findings.append(Finding(
            code=code, tensor=name,
            message=f"declared {_dims(wrong[0])}, but the model returns {expected}",
            fix=f"declare {expected} on the output and both If branches", before=str(_dims(wrong[0])),
            after=str(expected)))
        for value in wrong:
            _set_dims(value, expected)
    return findings
