"""What graphfix prints that came from outside (a path, a tensor name, a config value) reaches the terminal escaped,
in one place: no OSC 8 hyperlink, BEL, bidi override (U+202E) or newline of a hostile name acts on the terminal or
splits a line. JSON keeps every name exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import helper

ROOT = Path(__file__).resolve().parents[2]
EXPORT = ROOT / "sample_models" / "exports" / "current-marian-opset21"
HOSTILE = "\x1b]8;;http:evil.example\x07click\x1b]8;;\x07\u202eno.txt\nforged: ok"
OUTPUT = "evil\x1b[31m\u202e\x07name"


def _terminal_safe(text: str) -> bool:
    return all(ch.isprintable() or ch == "\n" for ch in text) and "forged: ok" not in text.splitlines()


@pytest.fixture
def hostile_export(tmp_path) -> Path:
    """An export under a hostile directory name, whose decoder has one more output named with control sequences and
    whose generation_config.json holds them in a value."""
    export = tmp_path / f"models{HOSTILE}"
    shutil.copytree(EXPORT, export)
    decoder = onnx.load(export / "decoder_model_merged.onnx")
    decoder.graph.node.append(helper.make_node("Identity", ["logits"], [OUTPUT]))
    decoder.graph.output.append(helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, None))
    onnx.save(decoder, export / "decoder_model_merged.onnx")
    generation = json.loads((export / "generation_config.json").read_text())
    generation["transformers_version"] = HOSTILE
    (export / "generation_config.json").write_text(json.dumps(generation))
    return export


def test_describe_escapes_names_paths_and_config_values(cli, hostile_export):
    result = cli("describe", hostile_export)
    assert result.exit_code == 0, result.stderr
    assert _terminal_safe(result.stdout), result.stdout
    assert "\\x1b]8;;http:evil.example\\x07click" in result.stdout and "\\u202e" in result.stdout


def test_json_keeps_every_name_exact(cli, hostile_export):
    result = cli("describe", "--json", hostile_export)
    document = json.loads(result.stdout)
    assert HOSTILE in document["path"]
    assert OUTPUT in [output["name"] for model in document["models"] for output in model["outputs"]]


def test_the_wrote_line_and_no_such_file_are_escaped(cli, hostile_export, tmp_path):
    out = tmp_path / f"out{HOSTILE}.onnx"
    repaired = cli("repair", "--no-validate", hostile_export / "decoder_model_merged.onnx", out)
    assert repaired.exit_code == 0, repaired.stderr
    assert _terminal_safe(repaired.stdout + repaired.stderr), repaired.stdout
    assert "wrote " in repaired.stdout
    missing = cli("check", tmp_path / f"gone{HOSTILE}.onnx")
    assert missing.exit_code == 2
    assert _terminal_safe(missing.stdout + missing.stderr), missing.stderr
    assert "no such file" in missing.stderr


def test_the_directory_table_escapes_names(cli, hostile_export, tmp_path):
    result = cli("repair", "--no-validate", "--skip-target-load", hostile_export, tmp_path / f"fixed{HOSTILE}")
    assert result.exit_code == 0, result.stderr
    assert _terminal_safe(result.stdout + result.stderr), result.stdout
