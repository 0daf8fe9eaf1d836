"""The product promise, on every committed sample from both Optimum exporter generations."""

from __future__ import annotations

import onnx
import pytest

from graphfix import check, repair, validate
from graphfix.model.merged_decoder import find_merged_decoder
from graphfix.proof.cases import STEPS

from ..conftest import result_lines, sha256


def _node_bytes(graph: onnx.GraphProto) -> list[bytes]:
    return [n.SerializeToString() for n in graph.node]


def test_plain_loop_fails_on_every_original_sample(sample):
    result = validate(sample)
    assert not result.ok
    assert "present->past loop fails in onnxruntime" in result.first_failure
    # Step 1 (no cache) and the first cached step run; the dummy fed back at the next step is what crashes.
    assert result.cases[0].failed_step == 3


def test_legacy_marian_fails_with_the_seeds_reshape_error(marian_legacy):
    assert "Reshape node '/model/decoder/layers.0/encoder_attn/" in validate(marian_legacy).first_failure


def test_current_marian_fails_with_a_matmul_error(marian_current):
    assert "MatMul" in validate(marian_current).first_failure


def test_repaired_sample_decodes_like_full_recompute(sample, repaired):
    result = validate(repaired(sample))
    assert result.ok, result.first_failure
    assert {c.batch for c in result.cases} == {1, 3}
    assert len({c.source_length for c in result.cases}) == 2
    assert all(c.steps == STEPS for c in result.cases)  # every step of each case ran (proof/cases.py)
    assert result.max_abs_diff < 1e-4
    assert all(c.tokens_agree == c.tokens_total for c in result.cases)


def test_repaired_sample_keeps_first_step_and_full_recompute_logits_of_the_original(sample, repaired):
    result = validate(repaired(sample), original=sample)
    assert result.ok and result.original["max_abs_diff"] == 0.0


def test_repair_touches_only_the_dummies_and_declared_shapes(sample, repaired):
    before, after = onnx.load(sample), onnx.load(repaired(sample))
    assert [i.SerializeToString() for i in after.graph.initializer] == \
        [i.SerializeToString() for i in before.graph.initializer]
    assert after.ir_version == before.ir_version and after.opset_import == before.opset_import
    old, new = find_merged_decoder(before), find_merged_decoder(after)
    assert new.cache_attr == old.cache_attr
    assert _node_bytes(new.no_cache_branch) == _node_bytes(old.no_cache_branch)
    kept = [n for n in _node_bytes(old.cache_branch) if n in set(_node_bytes(new.cache_branch))]
    removed = [n for n in old.cache_branch.node if n.SerializeToString() not in set(kept)]
    added = [n for n in new.cache_branch.node if n.SerializeToString() not in set(kept)]
    encoder_presents = [k for k in old.present if k[1] == "encoder"]
    assert {n.op_type for n in removed} == {"Constant"} and len(removed) == len(encoder_presents)
    assert [n.op_type for n in added] == ["Identity"] * len(encoder_presents)
    assert sorted(n.input[0] for n in added) == sorted(f"past_key_values.{k[0]}.encoder.{k[2]}" for k in encoder_presents)
    assert all(i.SerializeToString() == j.SerializeToString() for i, j in zip(old.cache_branch.initializer, new.cache_branch.initializer))


def test_repaired_encoder_presents_declare_the_shape_of_their_past(sample, repaired):
    model = onnx.load(repaired(sample))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(model.graph.input) + list(model.graph.output)}
    hidden_length = dims["encoder_hidden_states"][1]
    for name, shape in dims.items():
        if name.startswith("present.") and ".encoder." in name:
            assert shape == dims[name.replace("present", "past_key_values")]
            assert shape[2] == hidden_length
        if name.startswith("present.") and ".decoder." in name:
            assert shape[2] == f"{dims[name.replace('present', 'past_key_values')][2]} + {dims['input_ids'][1]}"


def test_repaired_sample_passes_the_full_onnx_checker(sample, repaired):
    onnx.checker.check_model(str(sample), full_check=True)
    onnx.checker.check_model(str(repaired(sample)), full_check=True)


def test_repair_is_a_noop_on_a_repaired_model(sample, repaired, tmp_path):
    once = repaired(sample)
    assert check(once).findings == []
    again = repair(once, tmp_path / "again.onnx", validate=False)
    assert again.changes == []
    assert sha256(tmp_path / "again.onnx") == sha256(once)


def test_two_repairs_give_identical_bytes(marian_legacy, tmp_path):
    first = repair(marian_legacy, tmp_path / "a.onnx", validate=False)
    repair(marian_legacy, tmp_path / "b.onnx", validate=False)
    assert first.changed and sha256(tmp_path / "a.onnx") == sha256(tmp_path / "b.onnx")


def test_check_reports_what_repair_changes(sample, tmp_path):
    findings = check(sample).findings
    changes = repair(sample, tmp_path / "out.onnx", validate=False).changes
    assert findings == changes
    codes = {f.code for f in findings}
    assert "GF101" in codes
    if sample.parent.name == "legacy":
        assert {"GF103", "GF104"} <= codes  # encoder_sequence_length_out and `past + 1`
    assert all(f.tensor and f.message and f.fix for f in findings)


def test_repair_never_modifies_its_input(sample, tmp_path):
    digest = sha256(sample)
    repair(sample, tmp_path / "out.onnx")
    assert sha256(sample) == digest


def test_external_data_is_written_beside_the_output_with_a_relative_location(marian_current, tmp_path):
    src_dir, out_dir = tmp_path / "src", tmp_path / "out"
    src_dir.mkdir(), out_dir.mkdir()
    model = onnx.load(marian_current)
    onnx.save_model(model, src_dir / "decoder_model_merged.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="decoder_model_merged.onnx_data", size_threshold=0)
    result = repair(src_dir / "decoder_model_merged.onnx", out_dir / "fixed.onnx")
    assert result.changed and result.validation.ok
    written = onnx.load(out_dir / "fixed.onnx", load_external_data=False)
    locations = {e.value for t in written.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"fixed.onnx_data"}
    assert sha256(out_dir / "fixed.onnx_data") == sha256(src_dir / "decoder_model_merged.onnx_data")
    assert sorted(p.name for p in out_dir.iterdir()) == ["fixed.onnx", "fixed.onnx_data"]


@pytest.mark.parametrize("command", ["check", "validate"])
def test_cli_exits_1_on_a_broken_sample_and_0_once_repaired(command, marian_legacy, repaired, cli):
    broken, fixed = cli(command, marian_legacy), cli(command, repaired(marian_legacy))
    assert (broken.exit_code, fixed.exit_code) == (1, 0), broken.stdout + fixed.stdout


def test_cli_repair_prints_one_line_per_code_and_a_summary(marian_legacy, tmp_path, cli):
    result = cli("repair", marian_legacy, tmp_path / "out.onnx")
    assert result.exit_code == 0, result.stderr
    lines = result_lines(result.stdout)
    assert [line.split()[0] for line in lines[:-1]] == ["GF101", "GF103", "GF104"]
    assert lines[-1].startswith(f"wrote {tmp_path / 'out.onnx'}: 9 changes; proven in onnxruntime ")


def test_cli_repair_of_a_repaired_model_says_nothing_to_repair(marian_legacy, repaired, tmp_path, cli):
    result = cli("repair", repaired(marian_legacy), tmp_path / "copy.onnx")
    assert result.exit_code == 0 and "nothing to repair" in result.stdout
    assert sha256(tmp_path / "copy.onnx") == sha256(repaired(marian_legacy))


def test_cli_json_is_one_document_on_stdout(marian_legacy, tmp_path, cli):
    import json

    document = json.loads(cli("repair", marian_legacy, tmp_path / "o.onnx", "--json").stdout)
    assert document["schema"] == "graphfix/1" and document["ok"] and document["validation"]["ok"]
    assert {c["code"] for c in document["changes"]} == {"GF101", "GF103", "GF104"}
    checked = json.loads(cli("check", marian_legacy, "--json").stdout)
    assert checked["results"][0]["findings"][0]["fix"]


def test_a_dynamically_quantized_decoder_is_repaired_including_the_dummy_shape_its_quantizer_declared(
        marian_current, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = tmp_path / "decoder_model_merged_quantized.onnx"
    quantize_dynamic(marian_current, quantized, weight_type=QuantType.QInt8)
    assert not validate(quantized).ok
    # onnxruntime's quantizer runs shape inference, which writes the dummy's (0, 4, 1, 8) into the branch outputs.
    assert {f.code for f in check(quantized).findings} == {"GF101", "GF102"}
    result = repair(quantized, tmp_path / "fixed.onnx")
    assert result.validation.ok and check(tmp_path / "fixed.onnx").findings == []
