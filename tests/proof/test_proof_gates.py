"""The seams between stages, each one typed value: the RepairOptions every entry point takes, the proof as gates
write_models runs in order on the staged files, the ProofRequest that crosses into the child process, and a
checker gate that reads skeletons, never weights."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from graphfix import BadInputError, RepairOptions, ValidationFailedError, parse_release, repair, repair_directory
from graphfix.io.read import read_model
from graphfix.io.write import write_models
from graphfix.proof.cases import SOURCE, EncoderFeeds, LoadRequest, ProofRequest, request_from_json
from graphfix.proof.gates import (
    CheckerGate,
    DecodeGate,
    Evidence,
    LoadGate,
    checker_failure,
    proof_gates,
)

from ..conftest import ROOT, proof_process_command

EVERY_SAMPLE = sorted(p for p in (ROOT / "sample_models").rglob("*.onnx"))

# --- RepairOptions --------------------------------------------------------------------------------------------------


def test_repair_options_are_one_frozen_value_and_keywords_change_single_fields():
    options = RepairOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.validate = False  # type: ignore[misc]
    changed = options.but(validate=False, target_ort="1.16", data_mode="copy")
    assert changed == RepairOptions(validate=False, target_ort=parse_release("1.16"), data_mode="copy")
    assert options == RepairOptions()  # unchanged
    with pytest.raises(TypeError):
        options.but(not_an_option=True)
    with pytest.raises(BadInputError, match="--validate-on-target needs --target-ort"):
        RepairOptions(validate_on_target=True)
    assert RepairOptions(target_ort=parse_release("1.16"), validate_on_target=True).proof_runtime == parse_release("1.16")


def test_the_api_and_directory_repair_take_the_same_options(marian_legacy, tmp_path):
    options = RepairOptions(validate=False, data_mode="copy")
    by_value = repair(marian_legacy, tmp_path / "a.onnx", options)
    by_keywords = repair(marian_legacy, tmp_path / "b.onnx", validate=False, data_mode="copy")
    assert by_value.validation is None and by_keywords.validation is None
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    (tmp_path / "model").mkdir()
    shutil.copy(marian_legacy, tmp_path / "model" / "decoder_model_merged.onnx")
    directory = repair_directory(tmp_path / "model", tmp_path / "fixed", options, jobs=2)  # options cross processes
    assert directory.models[0].result.validation is None
    assert (tmp_path / "fixed" / "decoder_model_merged.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()


# --- gates ------------------------------------------------------------------------------------------------------


class Recording:
    """A gate that records its call (and the staged files it saw) and, if asked, refuses."""

    def __init__(self, calls: list[str], name: str, refuse: bool = False):
        self.calls, self.step, self.refuse = calls, name, refuse

    def __call__(self, staged):
        self.calls.append(self.step)
        assert all(path.is_file() for path in staged.values())  # complete staged files, before anything lands
        if self.refuse:
            raise ValidationFailedError(f"{self.step} refused")


def test_the_gates_run_in_order_on_the_staged_files_and_a_failing_gate_lands_nothing(marian_legacy, tmp_path):
    loaded = read_model(marian_legacy)
    calls: list[str] = []
    steps: list[str] = []
    out = tmp_path / "out.onnx"
    gates = [Recording(calls, "first"), Recording(calls, "second", refuse=True), Recording(calls, "third")]
    with pytest.raises(ValidationFailedError, match="second refused"):
        write_models({out: None}, loaded, gates, on_step=steps.append)
    assert calls == ["first", "second"] and steps == ["first", "second"]
    assert list(tmp_path.iterdir()) == []  # no output, no staging directory
    write_models({out: None}, loaded, [Recording(calls, "first"), Recording(calls, "third")])
    assert calls[2:] == ["first", "third"] and out.read_bytes() == marian_legacy.read_bytes()


def test_repair_and_split_assemble_the_same_gates_in_the_documented_order(marian_current, tmp_path,
                                                                        monkeypatch):
    import graphfix.proof.gates as gates_module

    monkeypatch.setattr(gates_module, "_installed_for_load", lambda target: target)  # no pip in this test
    loaded = read_model(marian_current)
    outputs = {tmp_path / "out.onnx": loaded.model}
    target = parse_release("1.16")

    def kinds(options, decode=True):
        evidence = Evidence()
        gate = DecodeGate(tmp_path / "out.onnx", marian_current, options.proof_runtime, evidence) if decode else None
        return [(type(g).__name__, getattr(g, "runtime", None)) for g in
                proof_gates(options, loaded, outputs, gate, evidence)]

    # the proof is sent on its way first, runs in its process while the checker runs here, and is waited for after
    sent = ("SendDecode", None)
    assert kinds(RepairOptions()) == [sent, ("CheckerGate", None), ("DecodeGate", None)]
    assert kinds(RepairOptions(target_ort=target)) == [sent, ("CheckerGate", None), ("DecodeGate", None),
                                                       ("LoadGate", target)]
    assert kinds(RepairOptions(target_ort=target, validate_on_target=True)) == [sent, ("CheckerGate", None),
                                                                             ("DecodeGate", target)]
    assert kinds(RepairOptions(target_ort=target, load_on_target=False)) == [sent, ("CheckerGate", None),
                                                                             ("DecodeGate", None)]
    assert kinds(RepairOptions(validate=False, target_ort=target)) == [("LoadGate", target)]
    assert kinds(RepairOptions(validate=False)) == []
    # a model with no decode loop of its own (an encoder) is loaded instead, on the target when there is one
    assert kinds(RepairOptions(), decode=False) == [("CheckerGate", None), ("LoadGate", None)]
    assert kinds(RepairOptions(target_ort=target, validate_on_target=True), decode=False) == [("CheckerGate", None),
                                                                                           ("LoadGate", target)]


@pytest.mark.parametrize("path", EVERY_SAMPLE, ids=[str(p.relative_to(ROOT / "sample_models")) for p in EVERY_SAMPLE])
def test_the_checker_on_the_weightless_skeleton_agrees_with_the_full_check(path, tmp_path):
    try:
        onnx.checker.check_model(str(path), full_check=True)
        full = True
    except Exception:
        full = False
    assert (checker_failure(read_model(path).model, tmp_path) is None) == full


def test_an_output_the_checker_refuses_lands_nothing_when_the_input_passed(marian_legacy, tmp_path):
    loaded = read_model(marian_legacy)
    broken = onnx.ModelProto()
    broken.CopyFrom(loaded.model)
    broken.graph.node[0].input.append("no_such_value")
    out = tmp_path / "out.onnx"
    gate = CheckerGate(loaded.model, {out: broken})
    with pytest.raises(ValidationFailedError, match="repaired model fails onnx.checker: .*no_such_value"):
        write_models({out: broken}, loaded, [gate])
    assert list(tmp_path.iterdir()) == []
    CheckerGate(broken, {out: broken})({out: tmp_path / "staged.onnx"})  # an input that failed it is not held to it
    assert list(tmp_path.iterdir()) == []  # the checker's scratch files are gone


def test_a_checker_refusal_ends_the_proof_that_runs_beside_it(marian_legacy, tmp_path, monkeypatch):
    """The proof's process is started before the write and sent the staged file before the checker runs (they
    overlap); when the checker refuses the output, that process is ended with the run and nothing lands."""
    import os

    import graphfix.proof.gates as gates_module
    from graphfix.proof import child as proof_child
    from graphfix.proof import runtimes

    proof_child.close_idle()  # an earlier test's idle process would be taken instead of a recorded one
    verdicts = iter(["refused for this test", None])  # the output's, then the input's (which passes)
    monkeypatch.setattr(gates_module, "checker_failure", lambda model, scratch: next(verdicts))
    children = []

    class RecordedChild(runtimes.RuntimeChild):
        def __init__(self, release):
            super().__init__(release)
            children.append((self, self._proc.pid))

    monkeypatch.setattr(runtimes, "RuntimeChild", RecordedChild)
    with pytest.raises(ValidationFailedError, match="repaired model fails onnx.checker: refused for this test"):
        repair(marian_legacy, tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []
    [(child, pid)] = children  # one process, started before the write and sent the proof before the checker ran
    assert child._sent and child._proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended and reaped


def test_a_weight_payload_that_changed_shape_fails_the_checker_gate(marian_legacy, tmp_path):
    """The skeleton check cannot see a payload's size; what keeps the guarantee is that each payload keeps the
    shape and type the input's checker verdict covered."""
    loaded = read_model(marian_legacy)
    edited = onnx.ModelProto()
    edited.CopyFrom(loaded.model)
    stripped = next(t for t in edited.graph.initializer if t.data_location == TensorProto.EXTERNAL)
    stripped.dims[0] += 1
    with pytest.raises(ValidationFailedError, match="a weight payload changed its shape or type"):
        CheckerGate(loaded.model, {tmp_path / "out.onnx": edited})({tmp_path / "out.onnx": tmp_path / "staged.onnx"})


def test_a_load_gate_loads_every_staged_file(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    good = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    bad = helper.make_model(helper.make_graph([helper.make_node("Nope", ["x"], ["y"], domain="x.y")], "g", [x], [y]),
                            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("x.y", 1)], ir_version=8)
    onnx.save(good, tmp_path / "good.onnx")
    onnx.save(bad, tmp_path / "bad.onnx")
    evidence = Evidence()
    LoadGate(None, evidence)({Path("a"): tmp_path / "good.onnx"})
    assert evidence.loaded_on
    with pytest.raises(ValidationFailedError, match="cannot load bad.onnx"):
        LoadGate(None, evidence)({Path("a"): tmp_path / "good.onnx", Path("b"): tmp_path / "bad.onnx"})


# --- ProofRequest -----------------------------------------------------------------------------------------------


def test_the_proof_request_round_trips_through_the_child_with_one_name_per_idea(tmp_path):
    """Written by the host, read in the proof process: every field arrives under the
    name it left with."""
    feeds = EncoderFeeds(shapes={"input_features": [80, SOURCE], "pixel_values": [3, 32, 32]}, vocab=None,
                         said_by={"input_features": "config's feature size", "pixel_values": "config image_size"})
    request = ProofRequest(model="/m/decoder.onnx", model_with_past="/m/decoder_with_past.onnx", tolerance=1e-2,
                           reference="/m/merged.onnx", judge="/m/original.onnx", encoder="/m/encoder.onnx",
                           encoder_feeds=feeds, release="1.16.3", steps=3, batches=(1, 2), source_lengths=(4,),
                           seed=7, pair=("/m/decoder_model.onnx", "/m/decoder_with_past_model.onnx"))
    assert request_from_json(request.to_json()) == request
    assert request_from_json(LoadRequest("/m/encoder.onnx", "1.16.3").to_json()) == LoadRequest("/m/encoder.onnx",
                                                                                               "1.16.3")
    command = proof_process_command("import json, dataclasses; from graphfix.proof.cases import request_from_json; "
                                    "print(json.dumps(dataclasses.asdict(request_from_json(sys.argv[1]))))")
    proc = subprocess.run([*command, request.to_json()], capture_output=True, text=True, check=True)
    read = json.loads(proc.stdout)
    assert read == {**dataclasses.asdict(request), "batches": [1, 2], "source_lengths": [4],
                    "pair": ["/m/decoder_model.onnx", "/m/decoder_with_past_model.onnx"]}
    assert set(read) == {"model", "model_with_past", "tolerance", "reference", "judge", "encoder", "encoder_feeds",
                         "release", "steps", "batches", "source_lengths", "seed", "pairwise", "pair"}


def test_the_child_refuses_a_request_meant_for_another_release(marian_current, tmp_path):
    import onnxruntime

    request = LoadRequest(str(marian_current), release="1.16.3" if onnxruntime.__version__ != "1.16.3" else "1.17.3")
    command = proof_process_command("from graphfix.proof.client_loop import main; main(sys.argv[1])")
    proc = subprocess.run([*command, request.to_json()], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout) == {
        "error": f"the proof meant for onnxruntime {request.release} ran in {onnxruntime.__version__}"}
