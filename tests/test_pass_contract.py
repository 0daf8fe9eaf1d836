"""The pass contract, enforced by the runner: a pass that reports nothing has changed nothing, a pass that reports
findings has changed the model, and every pass of every pipeline (--target-ort passes included) run a second time
on the real exports finds nothing and changes nothing. Lying passes are built here with onnx.helper."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from graphfix import PassCrashedError, RepairRefusedError
from graphfix.findings import Finding
from graphfix.io.read import read_model
from graphfix.model.merged_decoder import MergedDecoder, PlainModel, find_merged_decoder
from graphfix.passes import ANY_MODEL, PIPELINE, DecoderPass, ModelPass, Subject, pipeline, repair_pass, run_passes
from graphfix.pipeline import find_subject
from graphfix.targets import parse_release

from .conftest import ROOT

# Every committed export: merged decoders of both exporter generations and every family, fixed-shape and deep
# decoders, the variants (fp16, int4, int8, O2, encoders) and the files of whole export directories.
EXPORTS = sorted(p for p in (ROOT / "sample_models").glob("*/*.onnx")) + sorted(
    (ROOT / "sample_models" / "exports").glob("*/*.onnx"))
# No committed export writes an attribute its opset made an input (GF303); test_attributes_as_inputs builds one.
NEVER_FIRES_ON_THE_EXPORTS = {"attributes_as_inputs"}


def _decoder() -> MergedDecoder:
    def value(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["b", 2, "s", 4])

    cache = helper.make_graph([helper.make_node("Identity", ["past_key_values.0.encoder.key"], ["k"])], "cache", [],
                              [value("k")])
    no_cache = helper.make_graph([helper.make_node("Identity", ["encoder_hidden_states"], ["k2"])], "no_cache", [],
                                 [value("k2")])
    graph = helper.make_graph(
        [helper.make_node("If", ["use_cache_branch"], ["present.0.encoder.key"], then_branch=cache,
                          else_branch=no_cache)], "decoder",
        [helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1]), value("encoder_hidden_states"),
         value("past_key_values.0.encoder.key")], [value("present.0.encoder.key")])
    return find_merged_decoder(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


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
