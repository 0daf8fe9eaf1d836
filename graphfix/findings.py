"""What graphfix reports. A Finding is one thing that breaks a plain present->past client; when `repair` applies
its fix the same object is reported as a change, so `check` and `repair` can never disagree."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# Stable codes: documented in README, never reused for a different meaning.
DUMMY_ENCODER_KV = "GF101"
UNTRUTHFUL_ENCODER_KV_SHAPE = "GF102"
UNBINDABLE_DIM_NAME = "GF103"
UNTRUTHFUL_DECODER_KV_SHAPE = "GF104"
STATIC_SIGNATURE_DIM = "GF201"
BAKED_RESHAPE_SHAPE = "GF202"
IR_ABOVE_TARGET = "GF301"
OPSET_ABOVE_TARGET = "GF302"
ATTRIBUTE_NOW_AN_INPUT = "GF303"
DOMAIN_ABOVE_TARGET = "GF304"
FLOAT16_FALLBACK = "GF305"

CODES = {
    DUMMY_ENCODER_KV: "cache branch emits a dummy instead of the encoder KV it was given",
    UNTRUTHFUL_ENCODER_KV_SHAPE: "declared present.N.encoder shape differs from its past input",
    UNBINDABLE_DIM_NAME: "a symbolic dim is named so no runtime can bind it to the encoder length",
    UNTRUTHFUL_DECODER_KV_SHAPE: "declared present.N.decoder length is not past + new tokens",
    STATIC_SIGNATURE_DIM: "batch or sequence length fixed in the signature by a fixed-shape export",
    BAKED_RESHAPE_SHAPE: "a Reshape's constant shape bakes the exported batch or sequence length",
    IR_ABOVE_TARGET: "IR version above what the target onnxruntime loads",
    OPSET_ABOVE_TARGET: "ai.onnx opset above what the target onnxruntime runs",
    ATTRIBUTE_NOW_AN_INPUT: "an attribute that became an input at the model's opset, which older loaders refuse",
    DOMAIN_ABOVE_TARGET: "a domain import (ai.onnx.ml, com.microsoft, unused ones) above what the target runs",
    FLOAT16_FALLBACK: "a float16 op the target has no kernel for and whose fallback it cannot load",
}


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    tensor: str | None = None
    node: str | None = None
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = self.tensor or self.node or "-"
        return f"{self.code} {where}: {self.message}" + (f" -> {self.fix}" if self.fix else "")
