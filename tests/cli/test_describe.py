"""`graphfix describe`: the client contract of every sample family, and a client written from that contract alone
(shapes, dtypes, what to feed at step 1 and after) decodes the repaired model in onnxruntime."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from graphfix import describe, repair, repair_directory
from graphfix.export_contract import Description, Step, TensorContract

from ..conftest import FIXED_SHAPE_SAMPLES, ROOT, SAMPLES, fast_tier_samples

VARIANTS = ROOT / "sample_models" / "variants"
# Every merged decoder sample family but the three onnxruntime cannot load at all (fp16 converter, q4f16, Constants
# in external data: test_end_to_end.py gives them their one verdict).
UNLOADABLE = ("marian-fp16-converter", "marian-q4f16", "marian-external-constants")
MERGED = SAMPLES + FIXED_SHAPE_SAMPLES + sorted(ROOT.glob("sample_models/deep/*.onnx")) + [
    p for p in sorted(VARIANTS.glob("*.onnx")) if "encoder" not in p.name and p.stem not in UNLOADABLE]
MERGED_IDS = [f"{p.parent.name}-{p.stem}" for p in MERGED]
OPSET21 = ROOT / "sample_models" / "exports" / "current-marian-opset21"
NUMPY = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "bool": np.bool_}


def _decoder(description: Description) -> tuple[dict[str, TensorContract], list[str]]:
    model = next(m for m in description.models if m.kind == "merged decoder")
    return {t.name: t for t in model.inputs}, [t.name for t in model.outputs]


def _size(contract: TensorContract, role: str, default: int) -> int:
    """A dim's size as the contract declares it (a fixed-shape export fixes batch or source length)."""
    dim = contract.shape[contract.dims.index(role)]
    return dim if isinstance(dim, int) else default


def _feeds(step: Step, inputs: dict[str, TensorContract], *, batch: int, source: int, tokens: np.ndarray,
           past_length: int, presents: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What a client written from the step table feeds: only the table and the declared shapes are read."""
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    new = tokens.shape[1]
    for feed in step.feeds:
        dtype = NUMPY[feed.dtype]
        if feed.input == "input_ids":
            feeds["input_ids"] = tokens.astype(dtype)
        elif feed.input == "encoder_hidden_states":
            hidden = inputs[feed.input].shape[2]
            assert isinstance(hidden, int), "the step table promises a static hidden size"
            feeds[feed.input] = rng.standard_normal((batch, source, hidden)).astype(dtype)
        elif feed.input == "encoder_attention_mask":
            feeds[feed.input] = np.ones((batch, source), dtype)
        elif feed.input in ("attention_mask", "decoder_attention_mask"):
            feeds[feed.input] = np.ones((batch, past_length + new), dtype)
        elif feed.input == "cache_position":
            feeds[feed.input] = np.arange(past_length, past_length + new, dtype=dtype)
        elif feed.input == "position_ids":
            feeds[feed.input] = np.tile(np.arange(past_length, past_length + new, dtype=dtype), (batch, 1))
        elif feed.input == "use_cache_branch":
            feeds[feed.input] = np.array([feed.value == "true"])
        elif feed.input == "past_key_values.*" and not presents:
            assert "0" in feed.shape and "empty" in feed.value
            for name, contract in inputs.items():
                if name.startswith("past_key_values."):
                    heads, head_dim = contract.shape[1], contract.shape[3]
                    assert isinstance(heads, int) and isinstance(head_dim, int)
                    feeds[name] = np.zeros((batch, heads, 0, head_dim), dtype)
        elif feed.input == "past_key_values.*":
            assert "every present.*" in feed.value, feed.value
            feeds.update({name.replace("present.", "past_key_values.", 1): value for name, value in presents.items()})
        else:
            raise AssertionError(f"the test client does not know how to feed {feed.input}: {feed.value}")
    return feeds


def _drive(model: Path, description: Description, steps: int = 4) -> list[int]:
    """Greedy decoding through the described loop; the chosen tokens."""
    inputs, outputs = _decoder(description)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ids = inputs["input_ids"]
    batch = _size(ids, "batch", 1)
    source = _size(inputs["encoder_hidden_states"], "source length", 5) if "encoder_hidden_states" in inputs else 0
    tokens = np.full((batch, 1 if source else 3), 5, np.int64)
    presents: dict[str, np.ndarray] = {}
    chosen, past_length = [], 0
    for number in range(1, steps + 1):
        step = description.steps[0 if number == 1 else 1]
        feeds = _feeds(step, inputs, batch=batch, source=source, tokens=tokens, past_length=past_length,
                       presents=presents)
        assert set(feeds) == set(inputs), f"step {number}: the table misses {set(inputs) - set(feeds)}"
        result = dict(zip(outputs, session.run(outputs, feeds)))
        past_length += tokens.shape[1]
        tokens = result["logits"][:, -1, :].argmax(-1).reshape(batch, 1).astype(np.int64)
        chosen.append(int(tokens[0, 0]))
        presents = {name: value for name, value in result.items() if name.startswith("present.")}
    return chosen


@pytest.mark.parametrize("sample", MERGED, ids=MERGED_IDS)
def test_describe_names_every_input_and_output_with_dtype_and_what_each_dim_is(sample):
    description = describe(sample)

    (model,) = description.models
    assert model.kind == "merged decoder"
    for tensor in model.inputs + model.outputs:
        assert tensor.dtype in NUMPY, tensor
        assert not any(role.startswith("dim ") for role in tensor.dims), tensor  # every dim is named for what it is
    kv = [t for t in model.inputs if t.name.startswith("past_key_values.")]
    assert kv and all(t.dims[:2] == ("batch", "heads") and t.dims[3] == "head_dim" for t in kv)
    assert [s.steps for s in description.steps] == ["1", "2, 3, ..."]
    step1 = {f.input: f for f in description.steps[0].feeds}
    assert step1["use_cache_branch"].value == "false"
    assert step1["past_key_values.*"].shape.split(", ")[2] == "0"  # (batch, heads=H, 0, head_dim=D)


@pytest.mark.parametrize("sample", fast_tier_samples(MERGED))
def test_a_client_written_from_the_description_decodes_the_repaired_sample(sample, tmp_path):
    out = tmp_path / "fixed.onnx"
    repair(sample, out, validate=False)
    original, repaired = describe(sample), describe(out)

    assert original.needs_repair and original.findings
    if any(f.code == "GF101" for f in original.findings):  # feeding presents back is not yet safe
        assert "graphfix repair" in original.steps[1].feeds[-1].value
    assert not repaired.needs_repair
    assert len(_drive(out, repaired)) == 4


def test_the_seed_export_directory_shows_tokens_from_its_configs_and_the_release_it_needs():
    description = describe(OPSET21)

    kinds = {m.path: m.kind for m in description.models}
    assert kinds == {"decoder_model_merged.onnx": "merged decoder", "encoder_model.onnx": "encoder"}
    assert description.tokens["decoder_start_token_id"] == {"value": 95, "from": "generation_config.json"}
    assert description.tokens["eos_token_id"]["value"] == 0
    assert description.tokens["pad_token_id"]["value"] == 95
    step1 = {f.input: f for f in description.steps[0].feeds}
    assert "decoder_start_token_id = 95" in step1["input_ids"].value
    # IR 10 / opset 21: the measured tables say 1.17 refuses it (the seed's 1.16.3 too)
    assert description.loads_on.release == "1.18"
    assert description.loads_on.refused_by.startswith("onnxruntime 1.17:")


@pytest.mark.parametrize(("sample", "release"), [
    ("current/marian.onnx", "1.15"),  # IR 9, opset 18
    ("variants/marian-fp16.onnx", "1.17"),  # 1.15-1.16: no float16 Softmax kernel, fallback fails to load
    ("variants/marian-int4.onnx", "1.16"),  # MatMulNBits has no CPU kernel in 1.15
    ("variants/marian-o2.onnx", "1.18"),  # imports ai.onnx.ml 5
])
def test_the_oldest_release_that_loads_a_sample_comes_from_the_measured_tables(sample, release):
    assert describe(ROOT / "sample_models" / sample).loads_on.release == release


def test_a_repaired_seed_export_retargeted_for_1_16_loads_on_1_16(tmp_path):
    out = tmp_path / "fixed"
    repair_directory(OPSET21, out, target_ort="1.16", validate=False, load_on_target=False)

    assert describe(out).loads_on.release == "1.16"


def test_describe_of_an_encoder_file_lists_its_signature_without_a_loop():
    description = describe(VARIANTS / "vision-trocr-encoder.onnx")

    (model,) = description.models
    assert model.kind == "encoder" and description.steps == [] and not description.needs_repair
    assert next(t for t in model.inputs if t.name == "pixel_values").dims == ("batch", "channels", "height", "width")


def test_describe_json_is_one_document_with_models_steps_and_tokens(cli, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(OPSET21, export)
    result = cli("describe", "--json", export)

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == "graphfix/1" and document["command"] == "describe" and document["ok"]
    assert document["needs_repair"] is True and document["loads_on"]["release"] == "1.18"
    assert [s["steps"] for s in document["steps"]] == ["1", "2, 3, ..."]
    assert {m["kind"] for m in document["models"]} == {"merged decoder", "encoder"}


def test_describe_text_names_the_repair_and_the_loop(cli):
    result = cli("describe", OPSET21)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith(f"needs repair (GF101 x4): graphfix repair {OPSET21} OUT")
    assert lines[1] == "loads in onnxruntime >= 1.18"
    assert "  use_cache_branch bool (1,) = false" in lines
    assert "  past_key_values.* float32 (batch, heads=4, 0, head_dim=8) = empty (zero-length) tensors, all 8 of them" \
        in lines


def test_describe_refuses_a_missing_path(cli, tmp_path):
    result = cli("describe", tmp_path / "nothing.onnx")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
