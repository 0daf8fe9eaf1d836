"""Regenerate sample_models/variants/: real exports of every model family graphfix is asked to handle.

Two kinds of run (see `make variant-samples`):

    # inside an exporter venv (make_samples.py's pinned venvs): export, quantize, optimize
    python sample_models/make_variants.py export --exporter current --out sample_models/variants
    python sample_models/make_variants.py export --exporter legacy  --out sample_models/variants
    # inside a venv with graphfix and onnxruntime: record what the current graphfix does with each file
    python sample_models/make_variants.py record --out sample_models/variants --graphfix graphfix

Every model is a tiny random-weight config (the model hub is unreachable) seeded with torch.manual_seed(0); the
post-processing steps (quantization, fp16 conversion, optimization) are the real onnxruntime / Optimum APIs applied
to a merged decoder the same pinned exporter wrote, with numpy seeds for their random calibration data. Nothing is
edited by hand. Each variant's manifest entry says which tool produced each file and how.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"

# Small shapes shared by all families: hidden 32, 4 heads of 8, 2 layers, vocab 96.
TEXT = dict(vocab_size=96, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
           patch_size=8, num_channels=3)


def _versions(*dists: str) -> dict[str, str]:
    out = {}
    for name in dists:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------------------------------------------
# export side (exporter venvs)


def _export(model, task: str, work: Path, preprocessors=(), **export_kwargs) -> Path:
    """save_pretrained + Optimum's main_export, as a user does with a local checkpoint."""
    import make_samples  # noqa: F401  (patches torch.onnx.export to the TorchScript path, as make_samples does)
    from optimum.exporters.onnx import main_export

    src, exported = work / "pt", work / "onnx"
    model.save_pretrained(src)
    for p in preprocessors:
        p.save_pretrained(src)
    main_export(str(src), output=str(exported), task=task, do_validation=False, **export_kwargs)
    return exported


def _seeded(factory, config):
    import torch

    torch.manual_seed(0)
    return factory(config).eval()


def _copy(src: Path, out: Path, name: str) -> dict:
    shutil.copyfile(src, out / name)
    return {"file": name, "from": src.name}


def v_vision(decoder: str):
    def build(out: Path, work: Path) -> dict:
        import transformers as tf

        enc = tf.ViTConfig(**VIT)
        if decoder == "trocr":
            dec = tf.TrOCRConfig(d_model=32, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=64,
                                 max_position_embeddings=64, cross_attention_hidden_size=32, **TEXT)
        else:
            dec = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64, vocab_size=96,
                                bos_token_id=0, eos_token_id=2, add_cross_attention=True, is_decoder=True)
        config = tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
        config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 0, 1, 2
        model = _seeded(tf.VisionEncoderDecoderModel, config)
        task = "image-to-text-with-past"
        exported = _export(model, task, work)
        name = f"vision-{'trocr' if decoder == 'trocr' else 'vit-gpt2'}"
        files = [_copy(exported / "decoder_model_merged.onnx", out, f"{name}.onnx"),
                 _copy(exported / "encoder_model.onnx", out, f"{name}-encoder.onnx")]
        return {"family": f"VisionEncoderDecoder (ViT encoder + {'TrOCR' if decoder == 'trocr' else 'GPT-2'} decoder)",
                "config": {"encoder": "ViTConfig", "decoder": type(dec).__name__}, "task": task, "files": files,
                "how": f"VisionEncoderDecoderModel(from_encoder_decoder_configs(ViTConfig, {type(dec).__name__})), "
                       f"main_export(task='{task}')"}
    return build


def v_speech2text(out: Path, work: Path) -> dict:
    import transformers as tf

    config = tf.Speech2TextConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                  decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                  max_source_positions=1024, max_target_positions=64, num_conv_layers=2,
                                  conv_channels=32, conv_kernel_sizes=[5, 5], input_feat_per_channel=80,
                                  input_channels=1, **TEXT)
    model = _seeded(tf.Speech2TextForConditionalGeneration, config)
    task = "automatic-speech-recognition-with-past"
    exported = _export(model, task, work)
    files = [_copy(exported / "decoder_model_merged.onnx", out, "speech2text.onnx"),
             _copy(exported / "encoder_model.onnx", out, "speech2text-encoder.onnx")]
    return {"family": "Speech2Text (conv front end + seq2seq)", "config": "Speech2TextConfig", "task": task,
            "files": files, "how": f"Speech2TextForConditionalGeneration, main_export(task='{task}')"}


def _t5_tokenizer():
    """A T5TokenizerFast built in code (no hub): a word-level vocabulary of 96 entries."""
    import transformers as tf
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {f"w{i}": i for i in range(3, 96)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                              extra_ids=0)


def v_pix2struct(out: Path, work: Path) -> dict:
    import transformers as tf

    patch = 4
    text = tf.Pix2StructTextConfig(vocab_size=96, hidden_size=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0)
    vision = tf.Pix2StructVisionConfig(hidden_size=32, patch_embed_hidden_size=patch * patch * 3, d_ff=64, d_kv=8,
                                       num_hidden_layers=2, num_attention_heads=4, seq_len=64,
                                       relative_attention_num_buckets=8)
    config = tf.Pix2StructConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), pad_token_id=0,
                                 eos_token_id=1, decoder_start_token_id=0)
    model = _seeded(tf.Pix2StructForConditionalGeneration, config)
    # Optimum reads the fixed encoder length (max_patches) from the processor, so one is saved beside the weights.
    processor = tf.Pix2StructProcessor(
        image_processor=tf.Pix2StructImageProcessor(max_patches=16, patch_size={"height": patch, "width": patch}),
        tokenizer=_t5_tokenizer())
    task = "image-to-text-with-past"
    exported = _export(model, task, work, preprocessors=[processor])
    files = [_copy(exported / "decoder_model_merged.onnx", out, "pix2struct.onnx"),
             _copy(exported / "encoder_model.onnx", out, "pix2struct-encoder.onnx")]
    return {"family": "Pix2Struct (decoder_attention_mask over past+current, fixed encoder length max_patches=16)",
            "config": "Pix2StructConfig", "task": task, "files": files,
            "how": f"Pix2StructForConditionalGeneration + Pix2StructProcessor(max_patches=16, patch 4x4, "
                   f"code-built T5TokenizerFast), main_export(task='{task}')"}


def v_gpt2_legacy(out: Path, work: Path) -> dict:
    import transformers as tf

    config = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64, vocab_size=96,
                           bos_token_id=0, eos_token_id=2)
    model = _seeded(tf.GPT2LMHeadModel, config)
    task = "text-generation-with-past"
    exported = _export(model, task, work, legacy=True)
    files = [_copy(exported / "decoder_model_merged.onnx", out, "gpt2-legacy-merged.onnx")]
    return {"family": "GPT-2 decoder-only, legacy merged layout (use_cache_branch)", "config": "GPT2Config",
            "task": task, "files": files, "how": f"GPT2LMHeadModel, main_export(task='{task}', legacy=True)"}


MARIAN = dict(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
              decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
              pad_token_id=95, bos_token_id=0, eos_token_id=0, decoder_start_token_id=95, forced_eos_token_id=0,
              share_encoder_decoder_embeddings=True)  # make_samples.py's Marian


def _marian():
    import transformers as tf

    return _seeded(tf.MarianMTModel, tf.MarianConfig(**MARIAN))


_MARIAN_EXPORT: dict[str, Path] = {}


def _marian_export(work_root: Path) -> Path:
    """One plain fp32 export of make_samples.py's Marian, shared by the post-processing variants."""
    if "plain" not in _MARIAN_EXPORT:
        d = work_root / "marian-plain"
        d.mkdir()
        _MARIAN_EXPORT["plain"] = _export(_marian(), "text2text-generation-with-past", d)
    return _MARIAN_EXPORT["plain"]


def v_marian_fp16(file: str):
    def build(out: Path, work: Path) -> dict:
        # optimum 1.23.3 refuses dtype='fp16' with device='cpu' (it wants CUDA); optimum-onnx 0.1.0 exports it.
        task = "text2text-generation-with-past"
        exported = _export(_marian(), task, work, dtype="fp16", device="cpu")
        files = [_copy(exported / "decoder_model_merged.onnx", out, file)]
        return {"family": "Marian, Optimum's own fp16 export", "config": "MarianConfig", "task": task, "files": files,
                "how": f"MarianMTModel, main_export(task='{task}', dtype='fp16', device='cpu')"}
    return build


def v_marian_int4(out: Path, work: Path) -> dict:
    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    merged = _marian_export(work.parent) / "decoder_model_merged.onnx"
    q = mnb.MatMulNBitsQuantizer(onnx.load(merged), block_size=16, is_symmetric=True, bits=4)
    q.process()
    q.model.save_model_to_file(str(out / "marian-int4.onnx"), use_external_data_format=False)
    return {"family": "Marian merged decoder, int4 MatMulNBits", "config": "MarianConfig",
            "task": "text2text-generation-with-past", "files": [{"file": "marian-int4.onnx",
                                                                 "from": "decoder_model_merged.onnx"}],
            "how": "main_export(task='text2text-generation-with-past'), then onnxruntime.quantization."
                   "matmul_nbits_quantizer.MatMulNBitsQuantizer(model, block_size=16, is_symmetric=True, bits=4)"
                   ".process() on decoder_model_merged.onnx"}


def v_marian_int8_subgraph(out: Path, work: Path) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    merged = _marian_export(work.parent) / "decoder_model_merged.onnx"
    quantize_dynamic(merged, out / "marian-int8-dynamic-subgraph.onnx", weight_type=QuantType.QInt8,
                     extra_options={"EnableSubgraph": True})
    return {"family": "Marian merged decoder, dynamic int8 quantization into the If branches",
            "config": "MarianConfig", "task": "text2text-generation-with-past",
            "files": [{"file": "marian-int8-dynamic-subgraph.onnx", "from": "decoder_model_merged.onnx"}],
            "how": "main_export(task='text2text-generation-with-past'), then onnxruntime.quantization.quantize_dynamic("
                   "decoder_model_merged.onnx, weight_type=QInt8, extra_options={'EnableSubgraph': True})"}


class _RandomReader:
    """Calibration data: random token ids and encoder states of the decoder's own input signature, seeded."""

    def __init__(self, path: Path, n: int = 4, seed: int = 0):
        import numpy as np
        import onnx

        rng = np.random.default_rng(seed)
        graph = onnx.load(path, load_external_data=False).graph
        self.batches = []
        with_past = any(i.name.startswith("past_key_values") for i in graph.input)
        sizes = {"batch_size": 1, "encoder_sequence_length": 9, "past_decoder_sequence_length": 5,
                 "decoder_sequence_length": 1 if with_past else 6}
        for _ in range(n):
            feed = {}
            for inp in graph.input:
                dims = [d.dim_value or sizes.get(d.dim_param, 7) for d in inp.type.tensor_type.shape.dim]
                et = inp.type.tensor_type.elem_type
                if "attention_mask" in inp.name:
                    feed[inp.name] = np.ones(dims, dtype=np.int64)
                elif et == onnx.TensorProto.INT64:
                    feed[inp.name] = rng.integers(3, 90, size=dims, dtype=np.int64)
                else:
                    feed[inp.name] = rng.standard_normal(dims).astype(np.float32)
            self.batches.append(feed)
        self.it = iter(self.batches)

    def get_next(self):
        return next(self.it, None)

    def rewind(self):
        self.it = iter(self.batches)


def v_marian_qdq(out: Path, work: Path) -> dict:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from optimum.onnx import merge_decoders

    exported = _marian_export(work.parent)
    quantized = {}
    for part in ("decoder_model", "decoder_with_past_model"):
        src = exported / f"{part}.onnx"
        quantized[part] = work / f"{part}_qdq.onnx"
        quantize_static(src, quantized[part], _RandomReader(src), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    # strict=False as Optimum's own exporter passes it for seq2seq: only the no-past decoder emits encoder presents.
    merge_decoders(quantized["decoder_model"], quantized["decoder_with_past_model"],
                   save_path=out / "marian-qdq-static.onnx", strict=False)
    return {"family": "Marian, static QDQ int8 on the split decoders, then merged", "config": "MarianConfig",
            "task": "text2text-generation-with-past",
            "files": [{"file": "marian-qdq-static.onnx", "from": "decoder_model.onnx + decoder_with_past_model.onnx"}],
            "how": "main_export(task='text2text-generation-with-past'); onnxruntime.quantization.quantize_static("
                   "quant_format=QDQ, QInt8 activations and weights, calibration: 4 random feeds of each decoder's "
                   "own signature, numpy seed 0) on decoder_model.onnx and decoder_with_past_model.onnx; then "
                   "optimum.onnx.merge_decoders(decoder, decoder_with_past, strict=False)"}


def v_marian_o2(out: Path, work: Path) -> dict:
    task = "text2text-generation-with-past"
    exported = _export(_marian(), task, work, optimize="O2")
    files = [_copy(exported / "decoder_model_merged.onnx", out, "marian-o2.onnx")]
    return {"family": "Marian, Optimum O2 (onnxruntime transformer fusions)", "config": "MarianConfig", "task": task,
            "files": files, "how": f"MarianMTModel, main_export(task='{task}', optimize='O2')"}


def v_marian_fp16_converter(out: Path, work: Path) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    merged = _marian_export(work.parent) / "decoder_model_merged.onnx"
    converted = convert_float_to_float16(onnx.load(merged), keep_io_types=True)
    onnx.save(converted, out / "marian-fp16-converter.onnx")
    return {"family": "Marian merged decoder, onnxruntime float16 converter", "config": "MarianConfig",
            "task": "text2text-generation-with-past",
            "files": [{"file": "marian-fp16-converter.onnx", "from": "decoder_model_merged.onnx"}],
            "how": "main_export(task='text2text-generation-with-past'), then onnxruntime.transformers.float16."
                   "convert_float_to_float16(onnx.load(decoder_model_merged.onnx), keep_io_types=True)"}


def v_marian_external_constants(out: Path, work: Path) -> dict:
    """onnx's own external-data save with convert_attribute=True: Constant node values move to the data file too."""
    import onnx

    merged = _marian_export(work.parent) / "decoder_model_merged.onnx"
    onnx.save_model(onnx.load(merged), out / "marian-external-constants.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="marian-external-constants.onnx.data",
                    size_threshold=0, convert_attribute=True)
    return {"family": "Marian merged decoder saved with Constant attributes as external data",
            "config": "MarianConfig", "task": "text2text-generation-with-past",
            "files": [{"file": "marian-external-constants.onnx", "from": "decoder_model_merged.onnx"}],
            "how": "main_export(task='text2text-generation-with-past'), then onnx.save_model(onnx.load(decoder_model_"
                   "merged.onnx), save_as_external_data=True, all_tensors_to_one_file=True, size_threshold=0, "
                   "convert_attribute=True)"}


def v_marian_q4f16(out: Path, work: Path) -> dict:
    """transformers.js's q4f16 recipe (its scripts/quantize.py): MatMulNBits 4-bit (block 32, symmetric), then a
    float16 conversion with keep_io_types=True and onnxslim. transformers.js carries its own copy of the converter;
    onnxconverter-common's, which it derives from, is used here."""
    import onnx
    import onnxslim
    from onnxconverter_common.float16 import convert_float_to_float16
    from onnxruntime.quantization import matmul_nbits_quantizer as mnb

    merged = _marian_export(work.parent) / "decoder_model_merged.onnx"
    q = mnb.MatMulNBitsQuantizer(onnx.load(merged), block_size=32, is_symmetric=True, bits=4)
    q.process()
    converted = onnxslim.slim(convert_float_to_float16(q.model.model, keep_io_types=True))
    onnx.save(converted, out / "marian-q4f16.onnx")
    return {"family": "Marian merged decoder, transformers.js-style q4f16", "config": "MarianConfig",
            "task": "text2text-generation-with-past",
            "files": [{"file": "marian-q4f16.onnx", "from": "decoder_model_merged.onnx"}],
            "how": "main_export(task='text2text-generation-with-past'), then onnxruntime MatMulNBitsQuantizer(block_size="
                   "32, is_symmetric=True, bits=4).process(), onnxconverter_common.float16.convert_float_to_float16("
                   "keep_io_types=True), onnxslim.slim()"}


def v_marian_opset21(out: Path, work: Path) -> dict:
    """The whole export directory at opset 21 if the TorchScript exporter can, else the highest it accepts."""
    task = "text2text-generation-with-past"
    attempts = []
    exported = None
    for opset in (21, 20):
        d = work / f"opset{opset}"
        d.mkdir()
        try:
            exported = _export(_marian(), task, d, opset=opset)
            attempts.append({"opset": opset, "result": "exported"})
            break
        except Exception as e:  # the refusal is the finding: keep it
            attempts.append({"opset": opset, "result": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
    if exported is None:
        raise RuntimeError(f"no opset could be exported: {attempts}")
    import onnx

    got = onnx.load(exported / "decoder_model_merged.onnx", load_external_data=False)
    enc_ir = onnx.load(exported / "encoder_model.onnx", load_external_data=False).ir_version
    opset = {o.domain or "ai.onnx": o.version for o in got.opset_import}["ai.onnx"]
    name = f"current-marian-opset{opset}"
    dest = out.parent / "exports" / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in ("encoder_model.onnx", "decoder_model_merged.onnx", "config.json", "generation_config.json"):
        if (exported / f).exists():
            shutil.copyfile(exported / f, dest / f)
    return {"family": f"Marian whole export directory, requested opset 21 (got opset {opset}; encoder IR {enc_ir}, "
                      f"merged decoder IR {got.ir_version})",
            "config": "MarianConfig", "task": task, "attempts": attempts,
            "files": [{"file": f"../exports/{name}/{f.name}", "from": f.name} for f in sorted(dest.iterdir())
                      if f.suffix == ".onnx"],
            "directory": f"../exports/{name}",
            "how": f"MarianMTModel, main_export(task='{task}', opset=21), falling back to opset 20 if refused; "
                   "kept encoder_model.onnx, decoder_model_merged.onnx, config.json, generation_config.json"}


def _keep_export(exported: Path, out: Path, name: str, keep: tuple[str, ...]) -> tuple[Path, list[dict]]:
    """The export directory as Optimum wrote it (only `keep` of its files), under sample_models/exports/NAME."""
    dest = out.parent / "exports" / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in keep:
        if (exported / f).exists():
            shutil.copyfile(exported / f, dest / f)
    return dest, [{"file": f"../exports/{name}/{f.name}", "from": f.name} for f in sorted(dest.iterdir())
                  if f.suffix == ".onnx"]


_WHOLE_EXPORT = ("encoder_model.onnx", "decoder_model_merged.onnx", "config.json", "generation_config.json",
                 "preprocessor_config.json")


def v_trocr_export(out: Path, work: Path) -> dict:
    """The TrOCR export as a user has it: encoder, merged decoder, config.json and the image processor's config."""
    import transformers as tf

    dec = tf.TrOCRConfig(d_model=32, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=64,
                         max_position_embeddings=64, cross_attention_hidden_size=32, **TEXT)
    config = tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(tf.ViTConfig(**VIT), dec)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 0, 1, 2
    model = _seeded(tf.VisionEncoderDecoderModel, config)
    processor = tf.ViTImageProcessor(size={"height": VIT["image_size"], "width": VIT["image_size"]})
    task = "image-to-text-with-past"
    exported = _export(model, task, work, preprocessors=[processor])
    _, files = _keep_export(exported, out, "current-trocr", _WHOLE_EXPORT)
    return {"family": "VisionEncoderDecoder (ViT + TrOCR) whole export directory",
            "config": "VisionEncoderDecoderConfig", "task": task, "files": files, "directory": "../exports/current-trocr",
            "how": f"VisionEncoderDecoderModel(ViTConfig, TrOCRConfig) + ViTImageProcessor(size 32x32), "
                   f"main_export(task='{task}'); kept {', '.join(_WHOLE_EXPORT)}"}


def v_donut_export(out: Path, work: Path) -> dict:
    """Donut's layout: a Swin encoder (DonutSwin, one stage, window 4 on a 32x32 image) + an MBart decoder."""
    import transformers as tf

    enc = tf.DonutSwinConfig(image_size=32, patch_size=4, num_channels=3, embed_dim=32, depths=[2], num_heads=[4],
                             window_size=4, mlp_ratio=2.0)
    dec = tf.MBartConfig(d_model=32, decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=64,
                         encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, max_position_embeddings=64,
                         is_decoder=True, add_cross_attention=True, **TEXT)
    config = tf.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 0, 1, 2
    model = _seeded(tf.VisionEncoderDecoderModel, config)
    task = "image-to-text-with-past"
    exported = _export(model, task, work)
    _, files = _keep_export(exported, out, "current-donut", _WHOLE_EXPORT)
    return {"family": "VisionEncoderDecoder (DonutSwin + MBart) whole export directory",
            "config": "VisionEncoderDecoderConfig", "task": task, "files": files,
            "directory": "../exports/current-donut",
            "how": f"VisionEncoderDecoderModel(DonutSwinConfig(image 32, patch 4, window 4, depths [2]), MBartConfig), "
                   f"main_export(task='{task}'); kept {', '.join(_WHOLE_EXPORT)}"}


def v_whisper_128_mel_export(out: Path, work: Path) -> dict:
    """Whisper as large-v3 has it, 128 mel bins (make_samples.py's config otherwise), as a whole export folder: its
    encoder takes exactly 2 x max_source_positions frames of num_mel_bins features."""
    import make_samples
    import transformers as tf

    _, task, kwargs = make_samples._configs()["whisper"]
    config = tf.WhisperConfig(**dict(kwargs, num_mel_bins=128))
    model = _seeded(tf.WhisperForConditionalGeneration, config)
    exported = _export(model, task, work)
    _, files = _keep_export(exported, out, "current-whisper-128-mel", _WHOLE_EXPORT)
    return {"family": "Whisper, 128 mel bins, whole export directory", "config": "WhisperConfig", "task": task,
            "files": files, "directory": "../exports/current-whisper-128-mel",
            "how": f"WhisperForConditionalGeneration(make_samples.py's config, num_mel_bins=128), "
                   f"main_export(task='{task}'); kept {', '.join(_WHOLE_EXPORT)}"}


def v_fp16(arch: str, file: str):
    """Optimum's own fp16 export (dtype='fp16' on CPU, as optimum-onnx 0.1.0 allows) of make_samples.py's config."""
    def build(out: Path, work: Path) -> dict:
        import make_samples
        import transformers as tf

        config_class, task, kwargs = make_samples._configs()[arch]
        factory = tf.AutoModelForSpeechSeq2Seq if task == make_samples.SPEECH else tf.AutoModelForSeq2SeqLM
        model = _seeded(factory.from_config, getattr(tf, config_class)(**kwargs))
        exported = _export(model, task, work, dtype="fp16", device="cpu")
        files = [_copy(exported / "decoder_model_merged.onnx", out, file)]
        return {"family": f"{config_class[:-6]}, Optimum's own fp16 export", "config": config_class, "task": task,
                "files": files, "how": f"{config_class[:-6]} from make_samples.py's config, main_export(task='{task}', "
                                       "dtype='fp16', device='cpu')"}
    return build


VARIANTS = {  # name: (exporter generation, builder, family as shown when the builder fails)
    "vision-trocr": ("current", v_vision("trocr"), "VisionEncoderDecoder (ViT + TrOCR)"),
    "vision-vit-gpt2": ("current", v_vision("gpt2"), "VisionEncoderDecoder (ViT + GPT-2)"),
    "speech2text": ("current", v_speech2text, "Speech2Text"),
    "pix2struct": ("current", v_pix2struct, "Pix2Struct"),
    "gpt2-legacy-merged": ("legacy", v_gpt2_legacy, "GPT-2 decoder-only, legacy merged layout"),
    "marian-fp16": ("current", v_marian_fp16("marian-fp16.onnx"), "Marian, Optimum's own fp16 export"),
    "marian-fp16-legacy": ("legacy", v_marian_fp16("marian-fp16-legacy.onnx"),
                           "Marian, Optimum's own fp16 export on CPU, legacy optimum 1.23.3"),
    "marian-int4": ("current", v_marian_int4, "Marian merged decoder, int4 MatMulNBits"),
    "marian-int8-dynamic-subgraph": ("current", v_marian_int8_subgraph, "Marian merged decoder, dynamic int8"),
    "marian-qdq-static": ("current", v_marian_qdq, "Marian, static QDQ on the split decoders, then merged"),
    "marian-o2": ("current", v_marian_o2, "Marian, Optimum O2"),
    "marian-fp16-converter": ("current", v_marian_fp16_converter, "Marian merged decoder, float16 converter"),
    "current-marian-opset21": ("current", v_marian_opset21, "Marian whole export directory at opset 21"),
    "marian-q4f16": ("current", v_marian_q4f16, "Marian merged decoder, transformers.js-style q4f16"),
    "marian-external-constants": ("current", v_marian_external_constants,
                                  "Marian merged decoder, Constant attributes as external data"),
    "current-trocr": ("current", v_trocr_export, "VisionEncoderDecoder (ViT + TrOCR) whole export directory"),
    "current-donut": ("current", v_donut_export, "VisionEncoderDecoder (DonutSwin + MBart) whole export directory"),
    "current-whisper-128-mel": ("current", v_whisper_128_mel_export, "Whisper, 128 mel bins, whole export directory"),
    "bart-fp16": ("current", v_fp16("bart", "bart-fp16.onnx"), "BART, Optimum's own fp16 export"),
    "t5-fp16": ("current", v_fp16("t5", "t5-fp16.onnx"), "T5, Optimum's own fp16 export"),
    "whisper-fp16": ("current", v_fp16("whisper", "whisper-fp16.onnx"), "Whisper, Optimum's own fp16 export"),
}


def _load_manifest(out: Path) -> dict:
    path = out / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {"variants": {}}


def _save_manifest(out: Path, manifest: dict) -> None:
    manifest["variants"] = dict(sorted(manifest["variants"].items()))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def cmd_export(args) -> int:
    sys.path.insert(0, str(HERE))
    args.out.mkdir(parents=True, exist_ok=True)
    optimum_dist = "optimum" if args.exporter == "legacy" else "optimum-onnx"
    versions = _versions(optimum_dist, "optimum", "transformers", "torch", "onnx", "onnxruntime", "numpy")
    names = [n for n, (exp, _, _) in VARIANTS.items() if exp == args.exporter and (not args.only or n in args.only)]
    manifest = _load_manifest(args.out)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            print(f"== {name}", flush=True)
            entry = {"exporter": args.exporter, "versions": versions, "family": VARIANTS[name][2]}
            try:
                entry |= VARIANTS[name][1](args.out, work)
                for f in entry["files"]:
                    f["bytes"] = (args.out / f["file"]).stat().st_size
            except Exception as e:
                failed += 1
                traceback.print_exc()
                entry |= {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:500] if str(e).strip() else ''}",
                          "files": []}
            manifest["variants"][name] = entry
            _save_manifest(args.out, manifest)
    print(f"{len(names) - failed} of {len(names)} variants made", flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# record side (a venv with graphfix + onnxruntime + onnx)


def _graph_facts(path: Path) -> dict:
    import onnx

    model = onnx.load(path, load_external_data=False)
    domains: dict[str, int] = {}
    ops: set[str] = set()

    def walk(graph):
        for node in graph.node:
            ops.add(f"{node.domain + '.' if node.domain else ''}{node.op_type}")
            domains[node.domain or "ai.onnx"] = domains.get(node.domain or "ai.onnx", 0) + 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return {"ir_version": model.ir_version,
            "opset_import": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "node_domains": dict(sorted(domains.items())),
            "contrib_or_quant_ops": sorted(o for o in ops if "." in o or o in (
                "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger")),
            "top_level": {"inputs": [i.name for i in model.graph.input], "outputs": [o.name for o in model.graph.output],
                          "has_if": any(n.op_type == "If" for n in model.graph.node)}}


def _said(text: str) -> list[str]:
    """The lines that say what happened: not the hints to the next command, nor a runtime's first-use install."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith("next: graphfix ") and not line.endswith("(first use)")]


def _first_line(text: str) -> str:
    lines = _said(text)
    return lines[0][:600] if lines else ""


def _last_line(text: str) -> str:
    lines = _said(text)
    return lines[-1][:600] if lines else ""


def _run(cmd: list[str], names: dict[str, str]) -> dict:
    """Exit code, first and last output line of one graphfix command; this machine's paths replaced by names."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    out = (p.stdout or "") + ("\n" if p.stdout and p.stderr else "") + (p.stderr or "")
    shown = ["graphfix"] + [names.get(c, c) for c in cmd[1:]]
    result = {"exit": p.returncode, "first_line": _first_line(out), "last_line": _last_line(out),
              "command": " ".join(shown)}
    for key in ("first_line", "last_line"):
        for real, name in names.items():
            result[key] = result[key].replace(real, name)
    return result


def _ort_load(path: Path, names: dict[str, str]) -> dict:
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return {"loads": True, "version": ort.__version__}
    except Exception as e:
        error = _first_line(str(e))
        for real, name in names.items():
            error = error.replace(real, name)
        return {"loads": False, "version": ort.__version__, "error": error}


def cmd_record(args) -> int:
    manifest = _load_manifest(args.out)
    gf_version = subprocess.run([args.graphfix, "--version"], capture_output=True, text=True).stdout.strip()
    manifest["graphfix_outcomes"] = {"graphfix": gf_version, "graphfix_commit": args.graphfix_commit,
                                     "onnxruntime": _versions("onnxruntime").get("onnxruntime")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, entry in manifest["variants"].items():
            for f in entry.get("files", []):
                path = (args.out / f["file"]).resolve()
                print(f"== {f['file']}", flush=True)
                f["bytes"] = path.stat().st_size
                f |= _graph_facts(path)
                repaired = Path(tmp) / f"{name}-{path.name}"
                names = {str(path): f["file"], str(repaired): "OUT"}
                f["onnxruntime_load"] = _ort_load(path, names)
                f["graphfix_check"] = _run([args.graphfix, "check", str(path)], names)
                f["graphfix_validate_original"] = _run([args.graphfix, "validate", str(path)], names)
                f["graphfix_repair"] = _run([args.graphfix, "repair", str(path), str(repaired)], names)
                if f["graphfix_repair"]["exit"] == 0:
                    f["graphfix_validate_repaired"] = _run(
                        [args.graphfix, "validate", str(repaired), "--original", str(path)], names)
                else:
                    f.pop("graphfix_validate_repaired", None)
    _save_manifest(args.out, manifest)
    table = render_table(manifest)
    if args.readme:
        readme = args.readme.read_text()
        begin, end = "<!-- variants-table:begin -->", "<!-- variants-table:end -->"
        if begin in readme and end in readme:
            head, rest = readme.split(begin, 1)
            readme = head + begin + "\n" + table + end + rest.split(end, 1)[1]
            args.readme.write_text(readme)
    print(table)
    return 0


def _md(text: str, limit: int = 220) -> str:
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(manifest: dict) -> str:
    rows = ["| file | family | tool + versions | IR / opsets / node domains | size | onnxruntime loads original "
            "| `graphfix check` | `graphfix repair` (first line; last line) | `graphfix validate` original; repaired |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in manifest["variants"].items():
        v = entry.get("versions", {})
        tool = ", ".join(f"{k}=={v[k]}" for k in ("optimum", "optimum-onnx", "transformers", "torch", "onnx",
                                                   "onnxruntime") if k in v)
        if not entry.get("files"):
            rows.append(f"| `{name}` (not made) | {_md(entry.get('family', ''))} | {tool} | | | | | "
                        f"{_md(entry.get('error', ''), 400)} | |")
            continue
        for f in entry["files"]:
            ops = ", ".join(f"{k} {val}" for k, val in f["opset_import"].items())
            doms = ", ".join(f"{k} ({n})" for k, n in f["node_domains"].items())
            load = "yes" if f["onnxruntime_load"]["loads"] else f"no: {f['onnxruntime_load']['error']}"
            chk, rep = f["graphfix_check"], f["graphfix_repair"]
            special = f"; ops: {', '.join(f['contrib_or_quant_ops'])}" if f["contrib_or_quant_ops"] else ""
            repair = f"exit {rep['exit']}: {_md(rep['first_line'], 160)}"
            if rep["last_line"] != rep["first_line"]:
                repair += f"; … {_md(rep['last_line'], 160)}"
            vo = f["graphfix_validate_original"]
            validate = f"original exit {vo['exit']}: {_md(vo['last_line'], 160)}"
            if "graphfix_validate_repaired" in f:
                vr = f["graphfix_validate_repaired"]
                validate += f"; repaired exit {vr['exit']}: {_md(vr['last_line'], 160)}"
            rows.append(f"| `{f['file']}` | {_md(entry['family'])} | {tool} | IR {f['ir_version']}; {ops}; nodes: {doms}"
                        f"{special} | {f['bytes'] / 1024:.0f} KiB | {_md(load, 400)} "
                        f"| exit {chk['exit']}: {_md(chk['first_line'], 160)} | {repair} | {validate} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="make the variants of one exporter generation (run in its venv)")
    e.add_argument("--exporter", choices=["legacy", "current"], required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--only", nargs="*")
    r = sub.add_parser("record", help="record IR/opset/domains, onnxruntime load and graphfix outcomes")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--graphfix", default="graphfix")
    r.add_argument("--graphfix-commit", default=None)
    r.add_argument("--readme", type=Path, help="README whose variants-table block to rewrite")
    args = parser.parse_args()
    return cmd_export(args) if args.cmd == "export" else cmd_record(args)


if __name__ == "__main__":
    sys.exit(main())
