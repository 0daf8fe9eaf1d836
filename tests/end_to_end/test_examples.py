"""examples/python/greedy_decode.py, the client a user copies: on a repaired export it generates exactly the tokens
of graphfix's own full-recompute decode (the no-cache branch over the whole prefix at every step), also inside
onnxruntime 1.16.3 (what Rust ort 1.16.3 links) on an export repaired with --target-ort 1.16; with a tokenizer.json
it tokenizes; on the unrepaired export it dies at step 3 as the seeds' clients do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tokenizers

from graphfix import repair_directory
from graphfix.proof.client_loop import DecoderSession
from graphfix.proof.runtimes import runtime_python

from ..conftest import ROOT

EXAMPLE = ROOT / "examples" / "python" / "greedy_decode.py"
EXPORT = ROOT / "sample_models" / "exports" / "current-marian-opset21"
SOURCE_IDS = [17, 42, 8, 61, 33, 5, 0]  # no pad (95) among them, ending in EOS (0)
MAX_NEW_TOKENS = 10


@pytest.fixture(scope="module")
def fixed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("examples") / "fixed"
    repair_directory(EXPORT, out, validate=False)  # the example's own decode is the proof here
    return out


@pytest.fixture(scope="module")
def fixed_for_1_16(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("examples") / "fixed-1.16"
    repair_directory(EXPORT, out, target_ort="1.16", validate=False)
    return out


def run_example(folder: Path, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, str(EXAMPLE), str(folder), *args, "--max-new-tokens", str(MAX_NEW_TOKENS),
                           "--json"], capture_output=True, text=True, timeout=300)


def generation_config(folder: Path) -> dict[str, Any]:
    """The example contract's reading (examples/README.md): generation_config.json over config.json; eos_token_id an
    int or a list; forced_bos_token_id and max_length when set."""
    config: dict[str, Any] = {}
    for name in ("config.json", "generation_config.json"):
        if (folder / name).is_file():
            config.update({k: v for k, v in json.loads((folder / name).read_text()).items() if v is not None})
    eos = config.get("eos_token_id", [])
    config["eos_token_id"] = [eos] if isinstance(eos, int) else list(eos)
    return config


def full_recompute_tokens(folder: Path, source_ids: list[int], max_new_tokens: int = MAX_NEW_TOKENS,
                          stop_at_eos: bool = True) -> list[int]:
    """graphfix's reference: at every step the no-cache branch over the whole prefix, greedy, the contract's rules
    (forced first token, stop at any eos id or at max_length)."""
    config = generation_config(folder)
    encoder = ort.InferenceSession(str(folder / "encoder_model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([source_ids], dtype=np.int64)
    mask = np.ones_like(ids)
    (hidden,) = encoder.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask})
    decoder = DecoderSession(str(folder / "decoder_model_merged.onnx"))
    tokens = [config["decoder_start_token_id"]]
    for step in range(1, max_new_tokens + 1):
        logits = decoder.run(np.array([tokens], dtype=np.int64),
                             {"encoder_hidden_states": hidden, "encoder_attention_mask": mask})["logits"]
        forced = config.get("forced_bos_token_id") if step == 1 else None
        tokens.append(int(logits[0, -1].argmax()) if forced is None else forced)
        if stop_at_eos and tokens[-1] in config["eos_token_id"]:
            break
        if len(tokens) >= config.get("max_length", len(tokens) + 1):
            break
    return tokens


def test_the_python_example_generates_the_full_recompute_tokens_on_a_repaired_export(fixed):
    done = run_example(fixed, "--ids", *map(str, SOURCE_IDS))

    assert done.returncode == 0, done.stderr
    tokens = json.loads(done.stdout)["tokens"]
    assert len(tokens) > 3, tokens  # long enough to feed the cache back more than once
    assert tokens == full_recompute_tokens(fixed, SOURCE_IDS)


def test_the_python_example_decodes_in_onnxruntime_1_16_3_on_an_export_repaired_for_1_16(fixed_for_1_16):
    python = runtime_python("1.16.3")  # an isolated venv holding onnxruntime 1.16.3 and numpy only
    done = run_example(fixed_for_1_16, "--ids", *map(str, SOURCE_IDS), python=str(python))

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tokens"] == full_recompute_tokens(fixed_for_1_16, SOURCE_IDS)


def test_the_python_example_dies_at_step_3_on_the_unrepaired_export():
    done = run_example(EXPORT, "--ids", *map(str, SOURCE_IDS))

    assert done.returncode != 0
    assert "encoder_attn" in done.stderr, done.stderr  # the dummy encoder KV fed back as past


def test_the_python_example_tokenizes_with_the_exports_tokenizer_json(fixed, tmp_path):
    vocab = {f"w{i}": i for i in range(96)}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w1"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = tokenizers.decoders.WordPiece()  # joins words with spaces
    folder = tmp_path / "with-tokenizer"
    folder.mkdir()
    for item in fixed.iterdir():
        (folder / item.name).symlink_to(item)
    tokenizer.save(str(folder / "tokenizer.json"))

    done = run_example(folder, "--text", " ".join(f"w{i}" for i in SOURCE_IDS))

    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["tokens"] == full_recompute_tokens(fixed, SOURCE_IDS)
    assert answer["text"].split() == [f"w{i}" for i in answer["tokens"]]
