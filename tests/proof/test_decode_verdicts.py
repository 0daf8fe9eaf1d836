"""Every way a decode step can go wrong is a FAILED verdict at that step, saying what was seen: empty, NaN,
wrong-shaped or non-float logits, a present of the wrong dtype. Never "the decode loop failed to run in the installed
onnxruntime" (that is for an onnxruntime that cannot run at all).

The models are the real exporter's merged decoder with its logits (or a present) rewired through a few onnx.helper
nodes that misbehave only on the cached path (use_cache_branch true): step 1 and full recompute stay sound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
MARIAN = ROOT / "sample_models" / "current" / "marian.onnx"


def _rewired(tmp_path: Path, output: str, nodes: list[onnx.NodeProto], elem_type: int | None = None,
             constants: dict[str, np.ndarray] | None = None) -> Path:
    """MARIAN with graph output `output` recomputed from `<output>_raw` (the If's own) by `nodes`."""
    model = onnx.load(MARIAN)
    graph = model.graph
    for node in graph.node:
        node.output[:] = [f"{name}_raw" if name == output else name for name in node.output]
    graph.node.extend(nodes)
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in (constants or {}).items())
    declared = next(o for o in graph.output if o.name == output)
    declared.type.tensor_type.ClearField("shape")
    if elem_type is not None:
        declared.type.tensor_type.elem_type = elem_type
    path = tmp_path / "decoder_model_merged.onnx"
    onnx.save(model, path)
    return path


def _on_cached_path(name: str, cached: str) -> onnx.NodeProto:
    """`name` = `cached` when use_cache_branch is true, else the If's own `<name>_raw`."""
    return helper.make_node("Where", ["use_cache_branch", cached, f"{name}_raw"], [name])


def empty_logits(tmp_path: Path) -> Path:
    return _rewired(tmp_path, "logits", [
        helper.make_node("Where", ["use_cache_branch", "zero", "huge"], ["end"]),
        helper.make_node("Slice", ["logits_raw", "zero", "end", "one"], ["logits"])],
        constants={"zero": np.array([0], np.int64), "huge": np.array([2**62], np.int64), "one": np.array([1], np.int64)})


def nan_logits(tmp_path: Path) -> Path:
    return _rewired(tmp_path, "logits", [helper.make_node("Add", ["logits_raw", "nan"], ["poisoned"]),
                                         _on_cached_path("logits", "poisoned")],
                    constants={"nan": np.array([np.nan], np.float32)})


def narrower_vocab(tmp_path: Path) -> Path:
    return _rewired(tmp_path, "logits", [
        helper.make_node("Where", ["use_cache_branch", "short", "huge"], ["end"]),
        helper.make_node("Slice", ["logits_raw", "zero", "end", "two"], ["logits"])],
        constants={"zero": np.array([0], np.int64), "short": np.array([95], np.int64),
                   "huge": np.array([2**62], np.int64), "two": np.array([2], np.int64)})


def integer_logits(tmp_path: Path) -> Path:
    return _rewired(tmp_path, "logits", [helper.make_node("Cast", ["logits_raw"], ["logits"], to=TensorProto.INT64)],
                    elem_type=TensorProto.INT64)


def half_present(tmp_path: Path) -> Path:
    return _rewired(tmp_path, "present.0.decoder.key", [
        helper.make_node("Cast", ["present.0.decoder.key_raw"], ["present.0.decoder.key"], to=TensorProto.FLOAT16)],
        elem_type=TensorProto.FLOAT16)


@pytest.mark.parametrize(("build", "seen"), [
    (empty_logits, "empty logits of shape (1, 0, 96)"),
    (nan_logits, "logits holding NaN"),
    (narrower_vocab, "logits of shape (1, 1, 95)"),
    (integer_logits, "logits of dtype int64"),
    (half_present, "present.0.decoder.key of dtype float16"),
], ids=lambda v: getattr(v, "__name__", "")[:0] or None)
def test_a_decode_that_goes_wrong_is_a_failed_verdict_at_its_step_saying_what_was_seen(cli, tmp_path, build, seen):
    model = build(tmp_path)
    result = cli("validate", "-q", model)
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "failed to run" not in result.stdout + result.stderr
    line = result.stdout.splitlines()[0]
    assert "FAILED" in line and seen in line, line
    first_bad_step = "step 1" if build is integer_logits else "step 2"
    assert first_bad_step in line, line
