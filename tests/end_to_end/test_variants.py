"""Every variant users ship, on samples made by the real exporters and post-processors (sample_models/variants/,
`make variant-samples`): vision and speech encoder-decoders, Pix2Struct, decoder-only merged decoders, fp16,
int4, int8 dynamic with subgraphs, static QDQ, O2-optimized, and a converter's output onnxruntime cannot load."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from graphfix import BadInputError, RepairRefusedError, check, repair, repair_directory, split, validate

from ..conftest import ROOT

VARIANTS = ROOT / "sample_models" / "variants"
MANIFEST = json.loads((VARIANTS / "manifest.json").read_text())
REPAIRABLE = ["vision-trocr", "vision-vit-gpt2", "speech2text", "pix2struct", "gpt2-legacy-merged", "marian-fp16",
              "marian-int4", "marian-int8-dynamic-subgraph", "marian-qdq-static", "marian-o2"]
DECODER_ONLY_KV = ["vision-vit-gpt2", "gpt2-legacy-merged"]  # past_key_values.N.key, no encoder KV


def test_every_variant_named_here_is_a_committed_real_export():
    for name in [*REPAIRABLE, "marian-fp16-converter"]:
        assert (VARIANTS / f"{name}.onnx").is_file(), name
    assert MANIFEST and "versions" in json.dumps(MANIFEST)


@pytest.mark.parametrize("name", REPAIRABLE)
def test_each_variant_repairs_and_its_plain_loop_decodes_like_full_recompute(name, tmp_path):
    out = tmp_path / f"{name}.onnx"
    result = repair(VARIANTS / f"{name}.onnx", out)
    assert result.validation is not None and result.validation.ok, result.validation.first_failure
    assert check(out).findings == []  # a second repair would be a no-op
    if name not in DECODER_ONLY_KV:
        assert "GF101" in {c.code for c in result.changes}


@pytest.mark.parametrize("name", DECODER_ONLY_KV)
def test_a_merged_decoder_without_encoder_kv_has_no_passthrough_to_make(name):
    original = validate(VARIANTS / f"{name}.onnx")
    assert original.ok, original.first_failure  # a plain loop drives it already
    assert "GF101" not in {f.code for f in check(VARIANTS / f"{name}.onnx").findings}


def test_a_directory_holding_a_decoder_only_merged_decoder_repairs(tmp_path):
    source = tmp_path / "gpt2"
    source.mkdir()
    shutil.copy(VARIANTS / "gpt2-legacy-merged.onnx", source / "decoder_model_merged.onnx")
    (source / "config.json").write_text("{}")
    result = repair_directory(source, tmp_path / "out")
    assert [m.path for m in result.models] == ["decoder_model_merged.onnx"] and result.models[0].result.validation.ok


@pytest.mark.parametrize("name", REPAIRABLE)
def test_each_variant_splits_into_a_pair_that_decodes_like_the_merged_decoder(name, tmp_path):
    result = split(VARIANTS / f"{name}.onnx", tmp_path / "split")
    assert result.validation is not None and result.validation.ok, result.validation.first_failure


def test_split_carries_the_main_graph_quantize_nodes_a_branch_reads(tmp_path):
    """quantize_dynamic(EnableSubgraph=True) quantizes encoder_hidden_states once, ahead of the If."""
    split(VARIANTS / "marian-int8-dynamic-subgraph.onnx", tmp_path / "split")
    for name in ("decoder_model.onnx", "decoder_with_past_model.onnx"):
        ops = [n.op_type for n in onnx.load(tmp_path / "split" / name).graph.node]
        assert "DynamicQuantizeLinear" in ops, name


def test_a_converter_output_onnxruntime_cannot_load_gets_onnxruntime_s_reason(cli, tmp_path):
    """onnxruntime.transformers.float16 with keep_io_types=True: graphfix cannot find the cache branch, and the real
    reason is that onnxruntime cannot load the model at all."""
    model = VARIANTS / "marian-fp16-converter.onnx"
    for args in (["check", model], ["check", model, "--target-ort", "1.16"], ["repair", model, tmp_path / "o.onnx"]):
        result = cli(*args)
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert "cannot load marian-fp16-converter.onnx" in result.stderr
        assert "Subgraph output (logits) is an outer scope value being returned directly" in result.stderr
    with pytest.raises(BadInputError, match="outer scope value"):
        check(model)


@pytest.mark.parametrize("name", ["marian-o2", "marian-fp16", "marian-int4"])
def test_optimized_fp16_and_int4_exports_repaired_for_1_16_decode_in_1_16_3(name, tmp_path):
    original = validate(VARIANTS / f"{name}.onnx", ort_version="1.16.3") if name == "marian-int4" else None
    result = repair(VARIANTS / f"{name}.onnx", tmp_path / "out.onnx", target_ort="1.16", validate_on_target=True)
    assert result.validation.ok and result.validation.onnxruntime == "1.16.3", result.validation.first_failure
    codes = {c.code for c in result.changes}
    expected = {"marian-o2": "GF304", "marian-fp16": "GF305", "marian-int4": "GF101"}[name]
    assert expected in codes
    if original is not None:
        assert not original.ok  # the unrepaired int4 export fails the plain loop in 1.16.3 too


@pytest.mark.parametrize("name", ["marian-o2", "marian-fp16"])
def test_without_the_repair_onnxruntime_1_16_3_refuses_them(name):
    with pytest.raises(BadInputError, match="onnxruntime 1.16.3 cannot load"):
        validate(VARIANTS / f"{name}.onnx", ort_version="1.16.3")


def test_a_contrib_op_the_target_lacks_is_refused_naming_op_node_domain_and_release(tmp_path):
    with pytest.raises(RepairRefusedError, match=r"onnxruntime 1\.15\.1 has no contrib op com\.microsoft\.MatMulNBits "
                                                 r"\(node '/model/decoder/layers\.0/.*'"):
        repair(VARIANTS / "marian-int4.onnx", tmp_path / "out.onnx", target_ort="1.15")
    assert not (tmp_path / "out.onnx").exists()


def test_an_opset_21_export_repaired_as_a_directory_for_1_16_loads_and_decodes_in_1_16_3(tmp_path):
    export = ROOT / "sample_models" / "exports" / "current-marian-opset21"
    assert onnx.load(export / "encoder_model.onnx").ir_version == 10  # what 1.16.3 refuses
    result = repair_directory(export, tmp_path / "out", target_ort="1.16", validate_on_target=True)
    by_path = {m.path: m.result for m in result.models}
    assert by_path["decoder_model_merged.onnx"].validation.onnxruntime == "1.16.3"
    assert by_path["decoder_model_merged.onnx"].validation.ok
    assert {"GF301", "GF302"} <= {c.code for c in by_path["encoder_model.onnx"].changes}
    for name in ("encoder_model.onnx", "decoder_model_merged.onnx"):
        model = onnx.load(tmp_path / "out" / name)
        assert model.ir_version <= 9 and model.opset_import[0].version <= 19, name
    # End to end in 1.16.3: the retargeted encoder's output feeds the repaired decoder's plain loop.
    proof = validate(tmp_path / "out" / "decoder_model_merged.onnx", ort_version="1.16.3",
                     encoder=tmp_path / "out" / "encoder_model.onnx")
    assert proof.ok and proof.onnxruntime == "1.16.3" and proof.encoder.endswith("encoder_model.onnx")
    with pytest.raises(BadInputError, match="onnxruntime 1.16.3 cannot load"):  # what it was before
        validate(export / "decoder_model_merged.onnx", ort_version="1.16.3", encoder=export / "encoder_model.onnx")


def test_validate_dir_feeds_each_decoder_from_its_encoder(cli, tmp_path):
    out = tmp_path / "out"
    assert cli("repair", ROOT / "sample_models" / "exports" / "current-marian-opset21", out).exit_code == 0
    result = cli("validate", out, "--json")
    assert result.exit_code == 0, result.stderr
    (model,) = json.loads(result.stdout)["models"]
    assert model["ok"] and model["encoder"] == str(out / "encoder_model.onnx")


# --- the right reference: a divergence the original shares is the model's own -------------------------------------


@pytest.fixture(scope="module")
def repaired_qdq(tmp_path_factory):
    out = tmp_path_factory.mktemp("qdq") / "qdq.onnx"
    repair(VARIANTS / "marian-qdq-static.onnx", out)
    return out


def _proof(model, tolerance, original=None):
    from graphfix.proof.cases import ProofRequest
    from graphfix.proof.client_loop import run_proof

    return run_proof(ProofRequest(model=str(model), model_with_past=str(model), tolerance=tolerance,
                                  judge=str(original) if original else None))


def test_a_divergence_the_original_shares_is_reported_as_the_model_s_own(repaired_qdq):
    """Static QDQ int8 rounds differently on the cached path: at a tolerance below that difference the plain loop
    "fails" against full recompute, yet the original driven as Optimum drives it gives the very same numbers, so
    the repair changed only the wiring and the case holds, naming the original's own difference."""
    tight = 1e-3
    unjudged = _proof(repaired_qdq, tight)
    assert any(case["failure"] and "differ from full recompute" in case["failure"] for case in unjudged["cases"])
    judged = _proof(repaired_qdq, tight, original=VARIANTS / "marian-qdq-static.onnx")
    assert all(case["failure"] is None for case in judged["cases"]), judged["cases"]
    assert max(case["original_differs"] or 0 for case in judged["cases"]) > tight


def test_a_wrong_wiring_is_not_excused_by_the_original(repaired_qdq, tmp_path):
    """Feed present.0.encoder.key from the past *value*: the loop now differs from full recompute and from the
    original's Optimum loop, and the failure says both."""
    from graphfix.model.merged_decoder import find_merged_decoder

    model = onnx.load(repaired_qdq)
    decoder = find_merged_decoder(model)
    passthrough = next(n for n in decoder.cache_branch.node if n.name == "graphfix/present.0.encoder.key/passthrough")
    passthrough.input[0] = "past_key_values.0.encoder.value"
    miswired = tmp_path / "miswired.onnx"
    onnx.save(model, miswired)
    result = _proof(miswired, 1e-3, original=VARIANTS / "marian-qdq-static.onnx")
    failures = [case["failure"] for case in result["cases"] if case["failure"]]
    assert failures and all("and from the original driven as Optimum drives it by" in f for f in failures), failures


def test_repair_judges_with_its_input_so_a_qdq_export_repairs(cli, tmp_path):
    result = cli("repair", VARIANTS / "marian-qdq-static.onnx", tmp_path / "out.onnx")
    assert result.exit_code == 0, result.stderr
