"""`graphfix describe` tells a client the facts it gets wrong otherwise: inputs and outputs in the model's order in
the text as in the JSON (Rust ort 1.16.3's `Session::run` is positional), the forced first token of M2M100 / NLLB /
mBART-50 in the step table, and start / forced / end token ids that are no token of the vocabulary."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from graphfix import BadInputError, describe
from graphfix.cli.report import describe_lines
from graphfix.export_contract import token_warnings
from graphfix.io import onnx_proto as onnx

from ..conftest import ROOT

EXPORTS = ROOT / "sample_models" / "exports"
CLIENT_EXPORTS = ["legacy-marian", "current-marian-opset21", "current-t5", "current-m2m100"]
DEEP = ROOT / "sample_models" / "deep" / "legacy-marian-6-layers.onnx"


def expand(pattern: str) -> list[str]:
    """Brace expansion as the text output folds names: `a.{0..2}.{key,value}`."""
    match = re.search(r"\{([^}]*)\}", pattern)
    if not match:
        return [pattern]
    values: list[str] = []
    for part in match[1].split(","):
        low, _, high = part.partition("..")
        values += [str(n) for n in range(int(low), int(high) + 1)] if high else [part]
    return [name for value in values
            for name in expand(pattern[:match.start()] + value + pattern[match.end():])]


def listed_names(lines: list[str], model_path: str, direction: str) -> list[str]:
    """The tensor names the text lists for one model and direction (`in ` / `out`), in the order it lists them,
    with each `for each layer N in ...` block unfolded layer by layer."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{model_path} ("))
    names: list[str] = []
    layers: list[str] | None = None
    block: list[str] = []
    for line in lines[start + 1:]:
        if not line.startswith("  in  ") and not line.startswith("  out "):
            break
        if not line.startswith(f"  {direction} "):
            continue
        row = line[6:]
        if layers is not None and row.startswith("  "):
            block.append(row.strip().split(": ")[0])
            continue
        if layers is not None:
            names += [name for layer in layers for pattern in block for name in expand(pattern.replace(".N.",
                                                                                                      f".{layer}."))]
            layers, block = None, []
        heading = re.match(r"for each layer N in (\S+), in this order:", row)
        if heading:
            layers = expand(heading[1])
        else:
            names.append(row.split(": ")[0])
    if layers is not None:
        names += [name for layer in layers for pattern in block for name in expand(pattern.replace(".N.",
                                                                                                  f".{layer}."))]
    return names


@pytest.mark.parametrize("export", CLIENT_EXPORTS)
def test_the_text_lists_every_input_and_output_in_the_models_order_as_the_json_does(export):
    description = describe(EXPORTS / export)
    lines = describe_lines(description)

    for contract in description.models:
        model = onnx.load(str(EXPORTS / export / contract.path), load_external_data=False)
        assert [t.name for t in contract.inputs] == [v.name for v in model.graph.input]
        assert [t.name for t in contract.outputs] == [v.name for v in model.graph.output]
        assert listed_names(lines, contract.path, "in ") == [v.name for v in model.graph.input]
        assert listed_names(lines, contract.path, "out") == [v.name for v in model.graph.output]


def test_the_merged_decoders_cache_flag_is_listed_last_where_the_model_has_it():
    lines = describe_lines(describe(EXPORTS / "current-marian-opset21"))

    inputs = listed_names(lines, "decoder_model_merged.onnx", "in ")
    assert inputs[-1] == "use_cache_branch"


def test_the_kv_rows_stay_as_many_on_a_deep_decoder():
    deep = [line for line in describe_lines(describe(DEEP)) if line.startswith(("  in ", "  out"))]
    shallow = [line for line in describe_lines(describe(ROOT / "sample_models" / "legacy" / "marian.onnx"))
               if line.startswith(("  in ", "  out"))]

    assert len(deep) == len(shallow)
    assert any("for each layer N in {0..5}, in this order:" in line for line in deep)


def test_the_step_table_forces_the_first_token_when_the_config_names_one():
    description = describe(EXPORTS / "current-m2m100")

    first, later = description.steps
    assert "forced_bos_token_id = 5 (generation_config.json)" in first.then
    assert "forced" not in later.then
    assert any("forced_bos_token_id = 5" in line for line in describe_lines(description))


def test_the_step_table_does_not_force_anything_without_forced_bos_token_id():
    description = describe(EXPORTS / "current-marian-opset21")

    assert all("forced" not in step.then for step in description.steps)
    assert description.steps[0].then.startswith("pick the next token from logits")


def _with_config(tmp_path: Path, export: str, **changes: object) -> Path:
    folder = tmp_path / export
    shutil.copytree(EXPORTS / export, folder)
    for name in ("config.json", "generation_config.json"):
        config = json.loads((folder / name).read_text())
        config.update(changes)
        (folder / name).write_text(json.dumps(config))
    return folder


def test_a_start_token_outside_the_vocabulary_is_warned_about_not_handed_to_the_client(tmp_path):
    folder = _with_config(tmp_path, "current-marian-opset21", decoder_start_token_id=1_000_000_000)

    description = describe(folder)

    assert description.warnings == [
        "decoder_start_token_id 1000000000 (generation_config.json) is outside the vocabulary 0..95 (the logits' "
        "declared vocabulary dim): check generation_config.json before writing the loop from it"]
    assert "warning: decoder_start_token_id 1000000000" in "\n".join(describe_lines(description))
    assert description.to_dict()["warnings"] == description.warnings


def test_forced_and_end_token_ids_outside_the_vocabulary_are_warned_about_one_by_one(tmp_path):
    folder = _with_config(tmp_path, "current-m2m100", forced_bos_token_id=96, eos_token_id=[2, 250001, 250002])

    warnings = describe(folder).warnings

    assert [w.split(" (")[0] for w in warnings] == ["forced_bos_token_id 96", "eos_token_id 250001, 250002"]


def test_a_negative_token_id_is_refused_naming_its_file_and_key(tmp_path):
    folder = _with_config(tmp_path, "current-m2m100", eos_token_id=[2, -1])

    with pytest.raises(BadInputError, match="eos_token_id.* not a token id"):
        describe(folder)


def test_the_vocabulary_comes_from_config_when_the_logits_leave_it_symbolic():
    tokens = {"decoder_start_token_id": {"value": 50, "from": "config.json"},
              "eos_token_id": {"value": 2, "from": "config.json"}}

    assert token_warnings(tokens, (40, "config.json's vocab_size")) == [
        "decoder_start_token_id 50 (config.json) is outside the vocabulary 0..39 (config.json's vocab_size): "
        "check config.json before writing the loop from it"]
    assert token_warnings(tokens, None) == []  # no vocabulary known: nothing to check against


@pytest.mark.parametrize("export", CLIENT_EXPORTS)
def test_the_sample_exports_tokens_are_all_in_the_vocabulary(export):
    assert describe(EXPORTS / export).warnings == []
