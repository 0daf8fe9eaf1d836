"""`graphfix split`: a merged decoder becomes decoder_model.onnx + decoder_with_past_model.onnx, each branch a model
of its own, proven by the two-file client loop and equal to the merged decoder's logits."""

from __future__ import annotations

import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from graphfix import split, validate_split
from graphfix.errors import NotAMergedDecoderError
from graphfix.proof.cases import STEPS
from graphfix.signature import CACHE_FLAG, PAST, PRESENT

from ..conftest import FIXED_SHAPE_SAMPLES, ROOT, SAMPLES, sha256

EXPORT = ROOT / "sample_models" / "exports" / "current-marian"


def _all_ops(graph: onnx.GraphProto) -> set[str]:
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops |= _all_ops(attr.g)
    return ops


def test_each_sample_splits_into_a_pair_that_decodes_like_full_recompute_and_like_the_merged_decoder(sample, tmp_path):
    result = split(sample, tmp_path / "split")
    assert result.validation.ok, result.validation.first_failure
    assert [c.steps for c in result.validation.cases] == [STEPS, STEPS]  # both default cases, every step
    # The no-cache path is the merged decoder's own nodes and weights: not one number may move.
    assert result.validation.original == {"max_abs_diff": 0.0, "failure": None}
    for path in (result.decoder, result.decoder_with_past):
        onnx.checker.check_model(os.fspath(path), full_check=True)


def test_fixed_shape_exports_split_into_dynamic_pairs(tmp_path):
    for sample in FIXED_SHAPE_SAMPLES:
        result = split(sample, tmp_path / sample.stem)
        assert result.validation.ok and "GF201" in {c.code for c in result.changes}


def test_each_model_holds_its_branch_the_inputs_it_reads_and_each_weight_once(marian_legacy, tmp_path):
    result = split(marian_legacy, tmp_path)
    merged = onnx.load(marian_legacy)
    merged_weights = {t.name: numpy_helper.to_array(t) for t in merged.graph.initializer}
    merged_inputs = [i.name for i in merged.graph.input]
    for path, reads_past in ((result.decoder, False), (result.decoder_with_past, True)):
        model = onnx.load(path)
        graph = model.graph
        assert "If" not in _all_ops(graph) and CACHE_FLAG not in {i.name for i in graph.input}
        inputs = [i.name for i in graph.input]
        assert inputs == [name for name in merged_inputs if name in inputs]  # the merged order, a subset
        assert any(PAST.match(name) for name in inputs) == reads_past
        assert [o.name for o in graph.output] == [o.name for o in merged.graph.output]
        names = [t.name for t in graph.initializer]
        assert len(names) == len(set(names))
        read = {name for node in graph.node for name in node.input}
        assert set(names) <= read  # only the weights the branch reads
        for tensor in graph.initializer:
            np.testing.assert_array_equal(numpy_helper.to_array(tensor), merged_weights[tensor.name])
        assert model.opset_import == merged.opset_import
    # The with-past decoder of Optimum's own export takes no encoder_hidden_states either.
    assert "encoder_hidden_states" not in [i.name for i in onnx.load(result.decoder_with_past).graph.input]


def _feeds(session, **values):
    return {i.name: values[i.name] for i in session.get_inputs() if i.name in values}


def test_the_pair_gives_the_repaired_merged_decoders_logits_at_every_step(marian_current, repaired, tmp_path):
    """An independent loop (not graphfix's validator): the split pair and the repaired merged decoder, each driven
    the way its clients drive it, on the same inputs."""
    result = split(marian_current, tmp_path)
    no_past, with_past, merged = (ort.InferenceSession(os.fspath(p), providers=["CPUExecutionProvider"])
                                  for p in (result.decoder, result.decoder_with_past, repaired(marian_current)))
    rng = np.random.default_rng(7)
    hidden = rng.standard_normal((2, 6, 32)).astype(np.float32)
    mask = np.ones((2, 6), dtype=np.int64)
    mask[1, -1] = 0
    tokens = rng.integers(4, 90, size=(2, 6), dtype=np.int64)
    common = {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}
    empty = {i.name: np.zeros((2, 4, 0, 8), np.float32) for i in merged.get_inputs() if PAST.match(i.name)}
    pair_past = merged_past = None
    for step in range(6):
        ids = tokens[:, : step + 1] if step == 0 else tokens[:, step:step + 1]
        if step == 0:
            pair = dict(zip([o.name for o in no_past.get_outputs()],
                            no_past.run(None, _feeds(no_past, input_ids=ids, **common))))
            one = dict(zip([o.name for o in merged.get_outputs()], merged.run(None, _feeds(
                merged, input_ids=ids, use_cache_branch=np.array([False]), **common, **empty))))
        else:
            pair = dict(zip([o.name for o in with_past.get_outputs()],
                            with_past.run(None, _feeds(with_past, input_ids=ids, **common, **pair_past))))
            one = dict(zip([o.name for o in merged.get_outputs()], merged.run(None, _feeds(
                merged, input_ids=ids, use_cache_branch=np.array([True]), **common, **merged_past))))
        np.testing.assert_allclose(pair["logits"], one["logits"], atol=1e-5)
        pair_past = {k.replace("present", "past_key_values"): v for k, v in pair.items() if PRESENT.match(k)}
        merged_past = {k.replace("present", "past_key_values"): v for k, v in one.items() if PRESENT.match(k)}


def test_validate_split_catches_a_with_past_model_that_drops_the_encoder_kv(tmp_path):
    """Optimum's own decoder_with_past_model.onnx returns no encoder presents (its client keeps them from step 1):
    a plain two-file client has nothing to feed back, and the validator says which input is missing."""
    result = validate_split(EXPORT / "decoder_model.onnx", EXPORT / "decoder_with_past_model.onnx")
    assert not result.ok and "past_key_values.0.encoder.key" in result.first_failure


def test_cli_split_writes_both_files_and_reports_the_proof(marian_legacy, tmp_path, cli):
    result = cli("split", marian_legacy, tmp_path / "split")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["decoder_model.onnx", "decoder_with_past_model.onnx"]
    assert "logits equal the merged decoder's" in result.stdout.splitlines()[-1]
    assert result.stdout.splitlines()[-1].startswith(f"split {marian_legacy} -> ")


def test_a_model_that_is_not_a_merged_decoder_is_refused_and_nothing_is_written(tmp_path, cli):
    encoder = tmp_path / "encoder_model.onnx"
    shutil.copy(EXPORT / "encoder_model.onnx", encoder)
    digest = sha256(encoder)
    with pytest.raises(NotAMergedDecoderError):
        split(encoder, tmp_path / "split")
    result = cli("split", encoder, tmp_path / "split")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: not a merged decoder") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "split").exists() and sha256(encoder) == digest


def test_split_into_an_existing_directory_touches_nothing_else_there(marian_legacy, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    split(marian_legacy, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "decoder_model.onnx",
                                                          "decoder_with_past_model.onnx"]


@pytest.mark.parametrize("index", [0, len(SAMPLES) - 1])
def test_split_outputs_load_in_onnxruntime_without_if_support_needed(index, tmp_path):
    result = split(SAMPLES[index], tmp_path)
    for path in (result.decoder, result.decoder_with_past):
        assert "If" not in _all_ops(onnx.load(path).graph)
        ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
