"""The pass contract, enforced by the runner: a pass that reports nothing has changed nothing, a pass that reports
findings has changed the model, and every pass of every pipeline (--target-ort passes included) run a second time
on the real exports finds nothing and changes nothing. Lying passes are built here with onnx.helper."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from graphfix import PassCrashedError, RepairRefusedError
from graphfix.findings import Finding
from graphfix.io.read import read_model
from graphfix.model.merged_decoder import MergedDecoder, PlainModel, find_merged_decoder
from graphfix.passes import (
    ANY_MODEL,
    PIPELINE,
    DecoderPass,
    ModelPass,
    Subject,
    encoder_kv_passthrough,
    order_breach,
    pipeline,
    repair_pass,
    run_passes,
    truthful_kv_shapes,
)
from graphfix.pipeline import find_subject
from graphfix.targets import parse_release

from ..conftest import ROOT, toy_decoder

# Every committed export: merged decoders of both exporter generations and every family, fixed-shape and deep
# decoders, the variants (fp16, int4, int8, O2, encoders) and the files of whole export directories.
EXPORTS = sorted(p for p in (ROOT / "sample_models").glob("*/*.onnx")) + sorted(
    (ROOT / "sample_models" / "exports").glob("*/*.onnx"))
# No committed export writes an attribute its opset made an input (GF303); test_attributes_as_inputs builds one.
NEVER_FIRES_ON_THE_EXPORTS = {"attributes_as_inputs"}


def _decoder() -> MergedDecoder:
    """The toy decoder with its cache branch already passing the past through: nothing for a pass to repair."""
    return find_merged_decoder(toy_decoder([helper.make_node("Identity", ["past_key_values.0.encoder.key"],
                                                             ["dummy"])]))


def test_a_pass_that_changes_the_model_and_reports_nothing_is_refused_naming_it():
    @repair_pass("GF103")
    def renames_quietly(decoder: MergedDecoder) -> list[Finding]:
        decoder.model.graph.input[1].type.tensor_type.shape.dim[2].dim_param = "renamed"
        return []

    with pytest.raises(PassCrashedError, match=r"^unexpected BrokenContract in pass renames_quietly \(after "
                                               r"encoder_kv_passthrough\): reported no finding but changed the model"):
        run_passes(_decoder(), [PIPELINE[0], renames_quietly])


def test_a_pass_that_reports_a_finding_and_changes_nothing_is_refused_naming_it():
    @repair_pass("GF301", scope=ANY_MODEL)
    def claims(subject: Subject) -> list[Finding]:
        return [Finding(code="GF301", message="IR version lowered", fix="lower ir_version")]

    with pytest.raises(PassCrashedError, match=r"^unexpected BrokenContract in pass claims: reported 1 finding\(s\) "
                                               r"\(GF301\) but changed nothing"):
        claims(PlainModel(_decoder().model))


def test_a_pass_held_to_the_contract_runs_as_before():
    @repair_pass("GF301", scope=ANY_MODEL)
    def lowers_ir(subject: Subject) -> list[Finding]:
        if subject.model.ir_version <= 8:
            return []
        subject.model.ir_version = 8
        return [Finding(code="GF301", message="IR version lowered", fix="lower ir_version to 8")]

    model = PlainModel(_decoder().model)
    assert [f.code for f in lowers_ir(model)] == ["GF301"] and lowers_ir(model) == []


def test_passes_are_typed_by_the_subject_they_take():
    assert all(isinstance(p, DecoderPass) for p in PIPELINE)
    assert all(isinstance(p, ModelPass) for p in pipeline(parse_release("1.16"))[len(PIPELINE):])
    assert PIPELINE[0](PlainModel(_decoder().model)) == []  # a merged-decoder pass never runs on another model


def _subject(path: Path) -> Subject:
    return find_subject(read_model(path).model, any_model=True)


@pytest.mark.slow  # every committed export, twice per pass
@pytest.mark.parametrize("target", [None, "1.16"], ids=lambda t: f"target-{t}")
def test_every_pass_of_the_pipeline_changes_nothing_the_second_time_on_every_export(target):
    """As `repair` runs them (in order, on the skeleton it reads), each pass is run twice in a row: the second run
    finds nothing and leaves the model byte for byte as the first left it. A refusal ends that export's run."""
    passes = pipeline(parse_release(target) if target else None)
    fired: Counter[str] = Counter()
    for path in EXPORTS:
        subject = _subject(path)
        for repair in passes:
            try:
                fired[repair.name] += len(run_passes(subject, [repair]))
            except RepairRefusedError:
                break
            after_first = subject.model.SerializeToString()
            assert run_passes(subject, [repair]) == [], (path, repair.name)
            assert subject.model.SerializeToString() == after_first, (path, repair.name)
        else:
            assert run_passes(subject, passes) == [], path  # and the whole pipeline on its own output
    assert {p.name for p in passes} - {name for name, n in fired.items() if n} <= NEVER_FIRES_ON_THE_EXPORTS, fired


def test_debug_holds_the_passes_of_a_cli_run_to_the_contract(cli, monkeypatch, marian_legacy):
    """The comparison costs 3-4% of `repair --no-validate` on opus-mt's depth, so outside the tests it is --debug's."""
    monkeypatch.setenv("GRAPHFIX_CHECK_PASSES", "0")
    assert cli("check", marian_legacy).exit_code == 1 and os.environ["GRAPHFIX_CHECK_PASSES"] == "0"
    assert cli("check", "--debug", marian_legacy).exit_code == 1 and os.environ["GRAPHFIX_CHECK_PASSES"] == "1"


def test_the_hot_path_still_refuses_undeclared_codes_without_comparing_models():
    @repair_pass("GF101")
    def lies(decoder: MergedDecoder) -> list[Finding]:
        return [Finding(code="GF301", message="not mine")]

    with pytest.raises(PassCrashedError, match="undeclared code GF301"):
        run_passes(_decoder(), [lies], check_changes=False)


# --- the declared order -----------------------------------------------------------------------------------------------


def test_both_pipelines_run_in_the_order_their_passes_declare():
    for passes in (PIPELINE, pipeline(parse_release("1.16"))):
        assert order_breach(passes, complete=True) is None
        ensured = set().union(*(p.ensures for p in passes))
        assert all(p.requires <= ensured for p in passes)
    assert truthful_kv_shapes.requires and encoder_kv_passthrough.ensures <= truthful_kv_shapes.requires


def test_a_pass_run_before_the_pass_it_requires_is_refused_before_anything_runs():
    decoder = find_merged_decoder(toy_decoder([helper.make_node("Constant", [], ["dummy"], value=helper.make_tensor(
        "v", TensorProto.FLOAT, [0, 2, 1, 4], []))]))
    before = decoder.model.SerializeToString()
    with pytest.raises(ValueError, match="truthful_kv_shapes requires .* which encoder_kv_passthrough ensures only "
                                         "after it"):
        run_passes(decoder, [truthful_kv_shapes, encoder_kv_passthrough])
    assert decoder.model.SerializeToString() == before


def test_a_pipeline_without_the_pass_a_pass_requires_is_incomplete():
    assert "which no pass before it ensures" in (order_breach([truthful_kv_shapes], complete=True) or "")
    assert order_breach([truthful_kv_shapes], complete=False) is None  # one pass on its own, as the unit tests run it
