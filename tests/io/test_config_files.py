"""An export's config files are read one way (io/config_files.py) by describe and by the proof's encoder inputs:
regular files only, of a bounded size, JSON of any depth a clean error, and every value the proof sizes an input
from checked (a positive integer, of a sane size, agreeing with what the graph itself declares) before anything is
allocated. A hostile config is one `error:` line naming the file and the key."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPORTS = ROOT / "sample_models" / "exports"


def _copy(tmp_path: Path, name: str) -> Path:
    export = tmp_path / name
    shutil.copytree(EXPORTS / name, export)
    return export


def _edit(path: Path, **changes) -> None:
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _graphfix(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """graphfix in a process of its own, under a 4 GB address-space limit: a config that steers it into allocating
    for ever fails the test instead of the machine."""
    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    return subprocess.run([sys.executable, "-m", "graphfix", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limited)


def _one_error_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert "out of memory" not in lines[0] and "unexpected" not in lines[0], lines[0]
    return lines[0]


def test_describe_refuses_a_fifo_named_config_json_instead_of_blocking(tmp_path):
    export = _copy(tmp_path, "current-marian-opset21")
    (export / "config.json").unlink()
    os.mkfifo(export / "config.json")
    _one_error_line(_graphfix("describe", export, timeout=30), "config.json", "not a regular file")


def test_describe_refuses_a_config_json_linked_to_dev_zero(tmp_path):
    export = _copy(tmp_path, "current-marian-opset21")
    (export / "generation_config.json").unlink()
    (export / "generation_config.json").symlink_to("/dev/zero")
    _one_error_line(_graphfix("describe", export), "generation_config.json", "not a regular file")


def test_a_config_larger_than_any_config_is_refused(tmp_path):
    export = _copy(tmp_path, "current-marian-opset21")
    (export / "config.json").write_text(json.dumps({"padding": "x" * (8 << 20)}))
    _one_error_line(_graphfix("describe", export), "config.json", "larger than")


def test_json_nested_deeper_than_any_config_is_a_clean_error(tmp_path):
    export = _copy(tmp_path, "current-marian-opset21")
    (export / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    _one_error_line(_graphfix("describe", export), "config.json", "nested")


def test_a_token_id_that_is_not_an_integer_is_refused_naming_file_and_key(tmp_path):
    export = _copy(tmp_path, "current-marian-opset21")
    _edit(export / "generation_config.json", decoder_start_token_id="\x1b]8;;x\x07")
    _one_error_line(_graphfix("describe", export), "generation_config.json", "decoder_start_token_id")


@pytest.mark.parametrize(("value", "why"), [
    ({"height": 1_000_000, "width": 1_000_000}, "larger than"),
    ({"height": -32, "width": 32}, "not a positive integer"),
    ({"height": 32.5, "width": 32}, "not a positive integer"),
], ids=["absurd", "negative", "non-integer"])
def test_an_image_size_the_proof_cannot_feed_is_refused_before_anything_is_allocated(tmp_path, value, why):
    export = _copy(tmp_path, "current-trocr")
    _edit(export / "preprocessor_config.json", size=value)
    _one_error_line(_graphfix("validate", export), "preprocessor_config.json", "'size'", why)


@pytest.mark.parametrize(("key", "value"), [("num_mel_bins", 80), ("num_mel_bins", 10**9),
                                            ("max_source_positions", 10**9)])
def test_a_config_value_contradicting_the_encoders_declared_dims_is_refused(tmp_path, key, value):
    export = _copy(tmp_path, "current-whisper-128-mel")  # its encoder declares input_features [batch, 128, 3000]
    _edit(export / "config.json", **{key: value})
    _one_error_line(_graphfix("validate", export), "config.json", repr(key))


def test_a_config_value_contradicting_the_first_convolution_is_refused(tmp_path):
    export = _copy(tmp_path, "current-trocr")
    config = json.loads((export / "config.json").read_text())
    config["encoder"]["num_channels"] = 4  # its patch embedding's Conv reads 3 channels
    (export / "config.json").write_text(json.dumps(config))
    line = _one_error_line(_graphfix("validate", export), "config.json (its encoder) key 'num_channels'")
    assert "Conv reads 3" in line
