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
SPLIT_EXPORT = "GF401"

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
    SPLIT_EXPORT: "a split export (decoder_model + decoder_with_past_model) with no merged decoder",
}


@dataclass(frozen=True)
class Finding:
    """One thing that breaks a plain client, as data: its `code`, the `tensor` or `node` it concerns, the value
    found (`before`) and the value the fix gives (`after`), the `pass` that found it (set by the pass runner), and
    the one-line `message` and `fix` a reader sees. Text and tables are rendered from these fields; JSON emits them
    as they are."""

    code: str
    message: str
    tensor: str | None = None
    node: str | None = None
    fix: str = ""
    before: str | None = None
    after: str | None = None
    pass_name: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        fields = asdict(self)
        fields["pass"] = fields.pop("pass_name")
        return fields

    def __str__(self) -> str:
        where = self.tensor or self.node or "-"
        return f"{self.code} {where}: {self.message}" + (f" -> {self.fix}" if self.fix else "")


@dataclass(frozen=True)
class Explanation:
    """What `graphfix explain CODE` says about a code: the README's findings table, offline. `summary` is the short
    form the grouped text output shows after the tensor pattern: a template whose `{before}` and `{after}` are the
    findings' own fields (every value they take, as a set; one no finding has is left out), so one line stands for
    every finding of the code."""

    breaks: str
    exporters: str
    fix: str
    safe: str
    example: str
    summary: str

    def entry(self) -> dict[str, str]:
        """What `graphfix explain --json` shows: the explanation, not the output template."""
        return {"breaks": self.breaks, "exporters": self.exporters, "fix": self.fix, "safe": self.safe,
                "example": self.example}


EXPLANATIONS = {
    DUMMY_ENCODER_KV: Explanation(
        breaks="The with-past (cache) branch of the If returns a dummy for every present.N.encoder.key/value, "
               "typically a Constant of shape (0, heads, 1, head_dim), because Optimum's own client keeps the "
               "cross-attention KV of step 1. A client that feeds every present.* back as past_key_values.* (Rust "
               "ort, C#, C++, Java, JavaScript) gets that dummy as past and crashes at step 3, the second cached "
               "step: Reshape '.../encoder_attn/Reshape_4' (zero dimension) or MatMul dimension mismatch.",
        exporters="Optimum's merge_decoders: optimum 1.x (opset 14) and optimum-onnx 0.1 (opset 18), for every "
                  "encoder-decoder (Marian/opus-mt, T5/mT5, BART/mBART, M2M100/NLLB, Pegasus, Blenderbot, "
                  "Whisper, TrOCR, Pix2Struct), quantized and fp16 variants included.",
        fix="present.N.encoder.* = Identity(past_key_values.N.encoder.*) inside the cache branch (the Identity "
            "because onnxruntime refuses a subgraph output that is directly an outer-scope value); the dummies "
            "and the nodes that only fed them are removed.",
        safe="The cross-attention KV depends only on the encoder output, which is the same at every step, so "
             "the past the branch is given is exactly the present it should return. The no-cache branch, every "
             "weight and every other node stay byte-identical, Optimum's client (which ignores these outputs) "
             "decodes as before, and repair proves the result by decoding before it writes.",
        example="GF101 present.0.encoder.key: cache branch returns a dummy Constant of shape (0, 8, 1, 64) "
                "instead of past_key_values.0.encoder.key -> present.0.encoder.key = "
                "Identity(past_key_values.0.encoder.key) in the cache branch",
        summary="dummy {before} -> Identity(past)"),
    UNTRUTHFUL_ENCODER_KV_SHAPE: Explanation(
        breaks="The declared shape of present.N.encoder.* (on the model output or an If branch output) is not the "
               "shape of its past input, which is what the output is once the cache branch passes the encoder KV "
               "through. Clients that allocate or bind outputs from declared shapes (IOBinding, typed outputs) "
               "get the wrong buffer, and shape inference downstream is misled.",
        exporters="onnxruntime's quantizer (quantize_dynamic and friends) runs shape inference, which stamps the "
                  "dummy's shape (0, heads, 1, head_dim) on the declared outputs of Optimum merged decoders.",
        fix="Declare the past input's dims on the model output and on both If branch outputs.",
        safe="Only value_info declarations change, no node and no weight; after GF101's passthrough the output "
             "is its past input, so its dims are the true ones.",
        example="GF102 present.0.encoder.key: declared [0, 4, 1, 8], but the model returns ['batch_size', 4, "
                "'encoder_sequence_length', 8] -> declare ['batch_size', 4, 'encoder_sequence_length', 8] on the "
                "output and both If branches",
        summary="declared {before} -> its past's dims"),
    UNBINDABLE_DIM_NAME: Explanation(
        breaks="The encoder KV length is named by a symbol tied to nothing else in the signature "
               "(encoder_sequence_length_out), so no runtime, and no reader of the signature, can bind it to the "
               "length of encoder_hidden_states, which it always is.",
        exporters="optimum 1.x (the legacy exporter), on past and present encoder KV of every encoder-decoder.",
        fix="Rename the symbol to the one encoder_hidden_states' length carries (encoder_sequence_length).",
        safe="Only dim names in declarations change; the two lengths are equal by construction of "
             "cross-attention.",
        example="GF103 encoder_sequence_length_out: encoder KV length is named 'encoder_sequence_length_out' in "
                "16 declarations, unrelated to encoder_hidden_states' 'encoder_sequence_length' -> rename "
                "'encoder_sequence_length_out' to 'encoder_sequence_length'",
        summary="bound to nothing -> {after}"),
    UNTRUTHFUL_DECODER_KV_SHAPE: Explanation(
        breaks="present.N.decoder.* declares its length as past_decoder_sequence_length + 1: false at step 1 "
               "(no past, a prefix of any length) and for a client that feeds several tokens in one step, so "
               "clients sizing buffers from the signature get them wrong.",
        exporters="optimum 1.x (the legacy exporter); optimum-onnx 0.1 already declares past + new tokens.",
        fix="Declare past_decoder_sequence_length + decoder_sequence_length, on the output and both branches.",
        safe="Only declarations change; self-attention concatenates the past with this step's tokens, so the "
             "new length is exactly that sum, which is what the current exporter declares.",
        example="GF104 present.0.decoder.key: declared ['batch_size', 4, 'past_decoder_sequence_length + 1', 8], "
                "but the model returns ['batch_size', 4, 'past_decoder_sequence_length + "
                "decoder_sequence_length', 8] -> declare ... on the output and both If branches",
        summary="length declared past + 1 -> past + new tokens"),
    STATIC_SIGNATURE_DIM: Explanation(
        breaks="The batch size or a sequence length is a fixed number in the signature, the size of the export's "
               "dummy input, so onnxruntime refuses any other batch or source length before running anything.",
        exporters="Optimum (both generations) when a config leaves the axis out of its dynamic axes: batch 2 or "
                  "source length 16 of the dummy.",
        fix="Declare the axis as its symbol (batch_size, encoder_sequence_length) on every input, output and "
            "both If branches.",
        safe="The graph computes every shape from Shape ops at run time (measured on both exporter "
             "generations); where a Reshape bakes the size in, GF202 fixes it, and the proof decodes at batch 1 "
             "and 3 and two source lengths.",
        example="GF201 batch_size: batch_size is fixed to 2 in 35 declarations (e.g. encoder_attention_mask), so "
                "onnxruntime refuses any other size -> declare it as the symbol 'batch_size'",
        summary="fixed to {before} -> symbolic"),
    BAKED_RESHAPE_SHAPE: Explanation(
        breaks="A Reshape's constant shape holds the exported batch or sequence length, so the graph computes "
               "wrong shapes (or fails) at any other size even once the signature is symbolic.",
        exporters="Hand-written graphs and older export code with a fixed-shape export; today's Optimum exports "
                  "compute shapes with Shape ops instead.",
        fix="Rewrite that entry of the shape to 0, which copies the input's dim; refused when the Reshape sets "
            "allowzero=1 (0 would then mean an empty dim).",
        safe="Only entries whose input dim shape inference shows to be the relaxed axis are rewritten, into a "
             "new constant (the old one may be shared); 0 then yields the same value at the exported size.",
        example="GF202 shape_const: Reshape shape [2, 16, 4, 8] bakes batch_size=2 -> shape [0, 16, 4, 8] "
                "(0 copies the input's dim)",
        summary="Reshape bakes {before} -> 0 (copy the input's dim)"),
    IR_ABOVE_TARGET: Explanation(
        breaks="With --target-ort: the IR version is above what that onnxruntime loads, so it refuses the whole "
               "model (onnxruntime 1.16, linked by Rust ort 1.16.3, loads IR 9 at most).",
        exporters="onnx >= 1.16 stamps IR 10 on every model it saves, whatever the contents need.",
        fix="Lower ir_version to the lowest the contents need (onnx's find_min_ir_version_for plus the element "
            "types that raised it); refused when that is still above the target's.",
        safe="The IR version only says which features a model may use; one the contents do not use changes "
             "nothing, and the output is loaded in that very release before it lands.",
        example="GF301 -: IR version 10 is refused by onnxruntime 1.16 (max IR 9) -> lower ir_version to 8, the "
                "lowest its contents need",
        summary="IR {before} -> IR {after}"),
    OPSET_ABOVE_TARGET: Explanation(
        breaks="With --target-ort: the ai.onnx opset is above what that onnxruntime runs, so it refuses the "
               "model.",
        exporters="optimum-onnx 0.1 writes opset 18; newer torch exporters write 21 and above.",
        fix="Convert the main graph and both If branches down to the release's opset: nodes whose newer version "
            "only added element types the model does not use are relabelled, Gelu is decomposed, anything else "
            "is refused naming the op, the node and both opsets.",
        safe="Each conversion computes the same function; the output is proven by decoding and loaded in the "
             "target release before it lands.",
        example="GF302 -: ai.onnx opset 21 is above 19, the highest onnxruntime 1.16 runs -> convert to opset 19 "
                "(692 nodes relabelled or decomposed, all subgraphs)",
        summary="opset {before} -> {after}"),
    ATTRIBUTE_NOW_AN_INPUT: Explanation(
        breaks="With --target-ort: a node still sets an attribute that its opset turned into an input (ReduceMean "
               "axes at 18; Squeeze/Unsqueeze/ReduceSum axes and Split split at 13). Recent onnxruntime tolerates "
               "it, older releases and onnx.checker refuse the whole model ('Unrecognized attribute: axes').",
        exporters="Optimum's fp16 export (ReduceMean with axes at opset 18) and other tools that still write the "
                  "old attribute.",
        fix="Move the attribute's value to a constant input of the node, in every graph.",
        safe="The node means exactly these axes either way; no number changes.",
        example="GF303 /model/decoder/layer_norm/ReduceMean: ReduceMean sets attribute 'axes', an input since "
                "opset 18 (the model's is 18): older onnxruntime releases refuse to load it -> axes [-1] as a "
                "constant input",
        summary="attribute '{before}' -> a constant input"),
    DOMAIN_ABOVE_TARGET: Explanation(
        breaks="With --target-ort: a domain import (ai.onnx.ml, com.microsoft, or one no node uses) is above what "
               "that onnxruntime runs; onnxruntime 1.16 refuses a model importing ai.onnx.ml above 3, used or "
               "not.",
        exporters="Optimized exports (Optimum optimize='O2', onnxruntime.transformers.optimizer) import ai.onnx.ml "
                  "5 and several unused domains; int4/int8 quantizers use com.microsoft contrib ops.",
        fix="Drop an import no node uses; lower a used one to the release's opset where every contrib op the "
            "model uses exists there; otherwise refuse, naming the op, node, domain and release.",
        safe="An unused import changes nothing; contrib ops are all since-version 1, so a lower domain opset "
             "runs the same kernels (measured table, ort_domains.json).",
        example="GF304 ai.onnx.ml: ai.onnx.ml opset 5 is imported but no node uses it; onnxruntime 1.16.3 runs up "
                "to 3 -> drop the unused ai.onnx.ml import",
        summary="{after} import"),
    FLOAT16_FALLBACK: Explanation(
        breaks="With --target-ort 1.14-1.16: a Softmax or LayerNormalization with any float16 input (a float16 X, "
               "or a float16 scale beside a float32 X) has no CPU kernel there; the release expands it into its "
               "opset-18 function body, whose ReduceMean/ReduceMax `axes` attribute it then refuses, so the whole "
               "fp16 model cannot be loaded.",
        exporters="Optimum's fp16 export (dtype='fp16': Marian, BART) and other float16 conversions.",
        fix="Compute each such node in float32 between two Casts.",
        safe="The result differs from a float16 kernel's by float16 rounding (measured 2.4e-4 on logits of "
             "magnitude 0.3, one float16 ulp); the output is proven and loaded in that release before it lands.",
        example="GF305 /model/decoder/layers.0/self_attn/Softmax: float16 Softmax: onnxruntime 1.16 has no "
                "float16 CPU kernel for it and its fallback fails to load -> compute it in float32 between two "
                "Casts (differs by float16 rounding)",
        summary="float16 {before} -> in float32"),
    SPLIT_EXPORT: Explanation(
        breaks="A model folder holds decoder_model.onnx and decoder_with_past_model.onnx but no "
               "decoder_model_merged.onnx. The decoder with past returns only the self-attention presents, so a "
               "client that feeds every present.* back as past_key_values.* has no present.N.encoder.* to feed "
               "and fails at step 2; one that loads only merged decoders finds none.",
        exporters="optimum-onnx 0.1 with ORTModelForSeq2SeqLM.from_pretrained(export=True, use_cache=True) and "
                  "optimum-cli export onnx --no-post-process; any Optimum export above 2 GB, where merging fails "
                  "(\"Unable to merge decoders\").",
        fix="repair writes decoder_model_merged.onnx beside the pair: one If on use_cache_branch (bool, shape [1]), "
            "the no-past branch the decoder's graph, the with-past branch the decoder with past's graph returning "
            "each present.N.encoder.* as an Identity of its past_key_values.N.encoder.*; the inputs are the "
            "union (as Optimum's merged decoder declares them), weights equal in both stored once in the outer "
            "graph, external data above 2 GB in one decoder_model_merged.onnx_data. It is then repaired and "
            "retargeted like any merged decoder.",
        safe="Each branch is the exporter's own graph, unchanged; the proof drives the merged decoder with the "
             "plain loop and the pair as Optimum drives it, and requires the same logits and tokens at every "
             "step. The pair itself is carried over byte for byte.",
        example="GF401 decoder_model_merged.onnx: a split export: decoder_model.onnx + decoder_with_past_model.onnx "
                "and no decoder_model_merged.onnx; ... -> merge them into decoder_model_merged.onnx: one If on "
                "use_cache_branch, the encoder KV passed through; the pair is carried over unchanged",
        summary="split export (decoder_model + decoder_with_past_model) -> merged into it"),
}
