"""Greedy decoding with a graphfix-repaired Optimum export: the plain present->past loop every runtime can run.

    python greedy_decode.py FIXED_DIR --text "Hello world"       # needs tokenizer.json in FIXED_DIR and `tokenizers`
    python greedy_decode.py FIXED_DIR --ids 17 42 8 0            # source token ids, no tokenizer needed

FIXED_DIR is the output of `graphfix repair EXPORT_DIR FIXED_DIR`: encoder_model.onnx, decoder_model_merged.onnx
(top level, or in onnx/ for onnx-community layouts), config.json and optionally generation_config.json.
Needs numpy and onnxruntime only (plus `tokenizers` for --text). The loop, as `graphfix describe FIXED_DIR` shows it:

  step 1:  input_ids = [[decoder_start_token_id]], use_cache_branch = [False], every past_key_values.* an empty
           tensor of shape (batch, heads, 0, head_dim); encoder_hidden_states / encoder_attention_mask from the encoder
  step 2+: input_ids = [[the token chosen at the step before]], use_cache_branch = [True], every past_key_values.*
           = the present.* of the same name from the step before (encoder KV included: that is what the repair fixed)
  the token chosen at step 1 is forced_bos_token_id when the config names one (M2M100, NLLB, mBART-50)
  stop at eos_token_id (unless --ignore-eos), at --max-new-tokens or at the config's max_length.

`examples/python/run [--ort 1.16.3|current] [--max-new-tokens N] MODEL_DIR [TOKEN_ID ...]` runs it in a venv of
its own (requirements*.txt), as every example of examples/ is run (examples/README.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf,
                                                         NotImplemented, RuntimeException)

DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
# What onnxruntime raises when it cannot load or run a model: said in one line, as `error: ...`.
RUNTIME_ERRORS = (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NotImplemented, RuntimeException)
GENERATION_KEYS = ("decoder_start_token_id", "eos_token_id", "forced_bos_token_id", "max_length")


def find_models(folder: Path) -> tuple[Path, Path]:
    """The encoder and the merged decoder of an Optimum (top level) or onnx-community (onnx/) export."""
    for sub in (folder, folder / "onnx"):
        encoder, decoder = sub / "encoder_model.onnx", sub / "decoder_model_merged.onnx"
        if encoder.is_file() and decoder.is_file():
            return encoder, decoder
    raise SystemExit(f"error: no encoder_model.onnx + decoder_model_merged.onnx in {folder} or {folder / 'onnx'}")


def generation_config(folder: Path) -> dict[str, Any]:
    """decoder_start_token_id, eos_token_id (an int or a list), forced_bos_token_id and max_length:
    generation_config.json over config.json, as transformers reads them."""
    config: dict[str, Any] = {}
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        if path.is_file():
            found = json.loads(path.read_text(encoding="utf-8"))
            config.update({k: v for k, v in found.items() if k in GENERATION_KEYS and v is not None})
    if not isinstance(config.get("decoder_start_token_id"), int):
        raise SystemExit(f"error: no decoder_start_token_id in {folder}/config.json or generation_config.json")
    eos = config.get("eos_token_id", [])
    config["eos_token_id"] = [eos] if isinstance(eos, int) else list(eos)
    return config


# [docs:empty-past]
def empty_past(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    """Step 1's past: every past_key_values.* with zero past tokens, heads and head_dim as the signature declares."""
    past = {}
    for spec in session.get_inputs():
        if spec.name.startswith("past_key_values."):
            _, heads, _, head_dim = spec.shape
            past[spec.name] = np.zeros((batch, heads, 0, head_dim), DTYPES[spec.type])
    return past
# [/docs:empty-past]


def greedy_decode(folder: Path, source_ids: list[int], max_new_tokens: int, stop_at_eos: bool = True) -> list[int]:
    """The decoder's sequence: decoder_start_token_id, then each generated id."""
    encoder_path, decoder_path = find_models(folder)
    config = generation_config(folder)
    options = ort.SessionOptions()
    encoder = ort.InferenceSession(str(encoder_path), options, providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(decoder_path), options, providers=["CPUExecutionProvider"])

    # [docs:encoder]
    ids = np.array([source_ids], dtype=np.int64)
    mask = np.ones_like(ids)
    encoder_feeds = {"input_ids": ids, "attention_mask": mask}
    wanted = {spec.name for spec in encoder.get_inputs()}
    (hidden,) = encoder.run(["last_hidden_state"], {k: v for k, v in encoder_feeds.items() if k in wanted})
    # [/docs:encoder]

    # [docs:loop]
    outputs = [o.name for o in decoder.get_outputs()]
    decoder_inputs = {spec.name for spec in decoder.get_inputs()}
    generated = [config["decoder_start_token_id"]]
    past = empty_past(decoder, batch=1)
    for step in range(1, max_new_tokens + 1):
        feeds = {"input_ids": np.array([[generated[-1]]], dtype=np.int64), "encoder_hidden_states": hidden,
                 "encoder_attention_mask": mask, "use_cache_branch": np.array([step > 1]), **past}
        result = dict(zip(outputs, decoder.run(outputs, {k: v for k, v in feeds.items() if k in decoder_inputs})))
        chosen = int(result["logits"][0, -1].argmax())
        if step == 1 and config.get("forced_bos_token_id") is not None:
            chosen = config["forced_bos_token_id"]  # the target language of M2M100 / NLLB / mBART-50
        generated.append(chosen)
        # The whole cache for the next step: every present.* becomes the past_key_values.* of the same name.
        past = {name.replace("present.", "past_key_values.", 1): value
                for name, value in result.items() if name.startswith("present.")}
        if stop_at_eos and chosen in config["eos_token_id"]:
            break
        if len(generated) >= config.get("max_length", len(generated) + 1):
            break
    # [/docs:loop]
    return generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a repaired export directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="source text (needs tokenizer.json and the tokenizers package)")
    source.add_argument("--ids", type=int, nargs="+", help="source token ids")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-new-tokens tokens")
    parser.add_argument("--json", action="store_true", help="print {\"tokens\": [...], \"text\": ...} only")
    args = parser.parse_args()

    tokenizer = None
    if (args.folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer  # only when the export ships one

        tokenizer = Tokenizer.from_file(str(args.folder / "tokenizer.json"))
    if args.text is not None and tokenizer is None:
        raise SystemExit(f"error: --text needs {args.folder / 'tokenizer.json'}; pass --ids instead")
    source_ids = tokenizer.encode(args.text).ids if args.text is not None and tokenizer else args.ids
    try:
        generated = greedy_decode(args.folder, source_ids, args.max_new_tokens, stop_at_eos=not args.ignore_eos)
    except RUNTIME_ERRORS as error:
        raise SystemExit(f"error: onnxruntime {ort.__version__}: {error}") from None
    text = tokenizer.decode(generated, skip_special_tokens=True) if tokenizer else None
    if args.json:
        print(json.dumps({"tokens": generated, "text": text}))
    else:
        if text is not None:
            print(text)
        print(" ".join(map(str, generated)))  # the last line: the decoder's sequence


if __name__ == "__main__":
    main()
