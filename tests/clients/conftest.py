"""Real clients of a repaired export: Optimum's ORTModelForSeq2SeqLM, transformers.js and a plain present->past loop
on onnxruntime-node (the newest release, and 1.16.3 whose C library Rust ort 1.16.3 loads), each compared token for
token with the PyTorch model the export came from.

test_every_binding.py (every examples/<lang>/run on the committed sample exports) needs no torch: `make
test-examples` runs it in the test venv. The others need torch, the Optimum exporter and node, so `make test` (fast,
no torch) does not collect them;
`make test-clients` installs their stack (.venv-clients, tests/clients/js{,-ort116}/node_modules) and runs them with
GRAPHFIX_CLIENT_TESTS=1. The exports are made fresh in every session by the real exporter
(sample_models/make_samples.py --keep-all), so the tests also notice when the exporter's output changes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).resolve().parent / "js"
# onnxruntime-node 1.16.3, which bundles libonnxruntime.so.1.16.3: the C library Rust ort 1.16.3 links.
JS_ORT116_DIR = Path(__file__).resolve().parent / "js-ort116"

CLIENT_TESTS_ENABLED = os.environ.get("GRAPHFIX_CLIENT_TESTS") == "1"
if not CLIENT_TESTS_ENABLED:
    collect_ignore_glob = ["test_*.py"]


def pytest_report_header(config):
    if not CLIENT_TESTS_ENABLED:
        return "tests/clients not collected: run `make test-clients` (sets GRAPHFIX_CLIENT_TESTS=1)"

# Every text seq2seq model of make_samples.py (tiny random-weight configs) and its EOS and pad ids.
EOS = {"marian": 0, "m2m100": 2, "t5": 1, "mt5": 1, "bart": 2, "mbart": 2, "pegasus": 1, "blenderbot": 2}
PAD = {"marian": 95, "m2m100": 1, "t5": 0, "mt5": 0, "bart": 1, "mbart": 1, "pegasus": 0, "blenderbot": 1}
ARCHS = list(EOS)
# transformers.js 4.3.1 has no Pegasus class ("Unsupported model type: pegasus"), with or without graphfix.
TRANSFORMERS_JS_ARCHS = [arch for arch in ARCHS if arch != "pegasus"]
# Source token ids with no special token among them (pads are 95 / 1 / 0), ending in the model's EOS.
SOURCE_IDS = {arch: [17, 42, 8, 61, 33, 5, eos] for arch, eos in EOS.items()}
SHORT_SOURCE_IDS = {arch: [30, 64, eos] for arch, eos in EOS.items()}
MAX_NEW_TOKENS = 10
# Every client generates exactly MAX_NEW_TOKENS: EOS is held off (min_new_tokens) and not forced at the end,
# so an early EOS cannot hide a divergence and a forced one cannot fight the minimum length.
GENERATION = {"max_new_tokens": MAX_NEW_TOKENS, "min_new_tokens": MAX_NEW_TOKENS, "forced_eos_token_id": None,
              "do_sample": False}
MERGED = "decoder_model_merged.onnx"
# The other runtimes' clients (test_openvino_client.py, test_tract_client.py, onnxruntime-web) also decode Whisper,
# whose encoder takes input_features; PyTorch's generate() is only the reference for the text models.
RUNTIME_ARCHS = ["marian", "m2m100", "pegasus", "whisper"]
EXPORTED = ARCHS + ["whisper"]


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Path:
    """Full Optimum export directories (encoder, split and merged decoders, configs, `pytorch/` weights), made now
    by the current exporter in this venv."""
    out = tmp_path_factory.mktemp("exports")
    subprocess.run([sys.executable, str(ROOT / "sample_models" / "make_samples.py"), "--exporter", "current",
                    "--out", str(out), "--keep-all", "--only", *EXPORTED], check=True, capture_output=True, text=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["optimum-onnx"] == "0.1.0", manifest["versions"]
    return out


def repair_model_dir(source: Path, out: Path, *options: str) -> Path:
    """What a user does to a whole model directory: `graphfix repair [OPTIONS] MODEL_DIR OUT_DIR`, which repairs every
    merged decoder and carries everything else over."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(Path(sys.executable).parent / "graphfix"), "repair", *options, str(source), str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"graphfix repair {' '.join(options)} {source} failed:\n{done.stdout}{done.stderr}"
    return out


def onnx_community_layout(export: Path, out: Path) -> Path:
    """The layout of onnx-community / transformers.js repos: configs on top, every ONNX file under onnx/."""
    (out / "onnx").mkdir(parents=True)
    for path in export.iterdir():
        if path.suffix == ".onnx":
            shutil.copyfile(path, out / "onnx" / path.name)
        elif path.suffix == ".json":
            shutil.copyfile(path, out / path.name)
    return out


@pytest.fixture(scope="session")
def repaired_export(exports, tmp_path_factory):
    """`repaired_export(arch)`: the Optimum export directory of `arch` with its merged decoder repaired."""
    root = tmp_path_factory.mktemp("repaired")
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = repair_model_dir(exports / arch, root / arch)
        return made[arch]

    return get


@pytest.fixture(scope="session")
def split_export(exports, tmp_path_factory):
    """`split_export(arch)`: the directory `graphfix split` writes from the export's merged decoder
    (decoder_model.onnx + decoder_with_past_model.onnx), for runtimes without `If`."""
    root = tmp_path_factory.mktemp("split")
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            out = root / arch
            out.mkdir()
            subprocess.run([str(Path(sys.executable).parent / "graphfix"), "split", str(exports / arch / MERGED),
                            str(out)], check=True, capture_output=True, text=True)
            made[arch] = out
        return made[arch]

    return get


def model_config(export: Path) -> dict:
    return json.loads((export / "config.json").read_text())


def loop_source(arch: str, export: Path) -> dict:
    """What the runtime clients feed the encoder: SOURCE_IDS for text models, seeded log-mel noise for Whisper
    (see plain_loop.speech_source), as the JSON `source` of tract_client.py and the JS clients."""
    if arch == "whisper":
        return {"numMelBins": model_config(export)["num_mel_bins"]}
    return {"inputIds": SOURCE_IDS[arch]}


@pytest.fixture(scope="session")
def repaired_onnx_community(exports, tmp_path_factory):
    """`repaired_onnx_community(arch)`: the export in onnx-community layout, then repaired."""
    root = tmp_path_factory.mktemp("onnx-community")
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            layout = onnx_community_layout(exports / arch, root / "original" / arch)
            made[arch] = repair_model_dir(layout, root / "repaired" / arch)
        return made[arch]

    return get


def source_batch(arch: str, batch: int):
    """(input_ids, attention_mask) as torch tensors: SOURCE_IDS, and for batch 2 a short right-padded second row."""
    import torch

    rows = [SOURCE_IDS[arch], SHORT_SOURCE_IDS[arch]][:batch]
    width = max(map(len, rows))
    input_ids = torch.tensor([row + [PAD[arch]] * (width - len(row)) for row in rows])
    attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return input_ids, attention_mask


@dataclass(frozen=True)
class Reference:
    """What the PyTorch model an export came from generates from source_batch(arch, batch), one row per source."""

    tokens: list[list[int]]        # decoder start token, then MAX_NEW_TOKENS generated tokens
    scores: np.ndarray             # greedy: (batch, steps, vocab) scores generation chose from (EOS -inf while held off)
    logits: np.ndarray             # greedy: (batch, steps, vocab) raw logits of the model at each step
    sequence_scores: list[float]   # beam search: each row's length-normalised log-probability


def assert_scores_match(actual, expected) -> None:
    """Per-step logits equal up to fp32 noise: the tiny random models repeat tokens, so equal tokens alone would not
    show that every step saw the right cache."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="session")
def pytorch_reference(exports):
    """`pytorch_reference(arch, num_beams=1, batch=1)`: the Reference of the PyTorch weights saved beside the export."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    cache: dict[tuple[str, int, int], Reference] = {}

    def get(arch: str, num_beams: int = 1, batch: int = 1) -> Reference:
        if (arch, num_beams, batch) not in cache:
            model = AutoModelForSeq2SeqLM.from_pretrained(exports / arch / "pytorch").eval()
            input_ids, attention_mask = source_batch(arch, batch)
            with torch.no_grad():
                out = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                                     return_dict_in_generate=True, output_scores=True, output_logits=True,
                                     **GENERATION)
            greedy = num_beams == 1
            cache[(arch, num_beams, batch)] = Reference(
                tokens=out.sequences.tolist(),
                scores=torch.stack(out.scores, dim=1).double().numpy() if greedy else np.empty(0),
                logits=torch.stack(out.logits, dim=1).double().numpy() if greedy else np.empty(0),
                sequence_scores=[] if greedy else out.sequences_scores.tolist())
        return cache[(arch, num_beams, batch)]

    return get


@pytest.fixture(scope="session")
def pytorch_whisper_reference(exports):
    """`pytorch_whisper_reference()`: Whisper's PyTorch weights decoding plain_loop.speech_source's features greedily
    (full forward over the prefix at each step, EOS held off), as a Reference with tokens and logits."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from .plain_loop import speech_source

    cache: list[Reference] = []

    def get() -> Reference:
        if not cache:
            model = WhisperForConditionalGeneration.from_pretrained(exports / "whisper" / "pytorch").eval()
            features = torch.from_numpy(speech_source(model.config.num_mel_bins)["input_features"])
            tokens, logits = [model.config.decoder_start_token_id], []
            with torch.no_grad():
                encoder_out = model.get_encoder()(features)
                for _ in range(MAX_NEW_TOKENS):
                    last = model(encoder_outputs=encoder_out, decoder_input_ids=torch.tensor([tokens]),
                                 use_cache=False).logits[0, -1].double()
                    logits.append(last.numpy())
                    choice = last.clone()
                    choice[model.config.eos_token_id] = -np.inf
                    tokens.append(int(choice.argmax()))
            cache.append(Reference(tokens=[tokens], scores=np.empty(0), logits=np.array([logits]),
                                   sequence_scores=[]))
        return cache[0]

    return get


def _node_client(package_dir: Path):
    """`run(script, payload)`: run tests/clients/js/SCRIPT in package_dir (whose node_modules it loads) with a JSON
    payload and return its JSON answer."""
    node_bin = shutil.which("node")
    assert node_bin, "node is not on PATH (make test-clients needs node >= 18)"
    assert (package_dir / "node_modules" / "onnxruntime-node").is_dir(), \
        f"JS clients not installed in {package_dir}: run make test-clients"

    def run(script: str, payload: dict) -> dict:
        done = subprocess.run([node_bin, str(JS_DIR / script), json.dumps(payload)], capture_output=True, text=True,
                              cwd=package_dir, timeout=300)
        assert done.returncode == 0, f"{script} failed:\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture(scope="session")
def node():
    """`node(script, payload)`: a client of tests/clients/js on the newest onnxruntime-node."""
    return _node_client(JS_DIR)


@pytest.fixture(scope="session")
def node_ort116():
    """`node_ort116(script, payload)`: the same client on onnxruntime-node 1.16.3 (tests/clients/js-ort116)."""
    return _node_client(JS_ORT116_DIR)
