"""`check` remembers its whole outcome per skeleton content, options, onnxruntime release and graphfix code
(proof/load_verdicts.py): an unchanged model is answered without a parse, the passes or a proof of loadability, and
the answer is the first run's, to the byte; any change to the model or the options is judged again (issue 31)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import onnx
import pytest

from graphfix import BadInputError, check
from graphfix import pipeline as pipeline_module
from graphfix.proof import load_verdicts

from ..conftest import ROOT

MARIAN = ROOT / "sample_models" / "current" / "marian.onnx"


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "check-outcomes"


@pytest.fixture
def parses(monkeypatch) -> list[Path]:
    """Every skeleton `check` parses (a remembered outcome parses none)."""
    seen: list[Path] = []
    real = pipeline_module.parse_skeleton

    def counted(skeleton):  # type: ignore[no-untyped-def]
        seen.append(skeleton.path)
        return real(skeleton)

    monkeypatch.setattr(pipeline_module, "parse_skeleton", counted)
    return seen


def _copy(source: Path, tmp_path: Path, name: str = "decoder_model_merged.onnx") -> Path:
    (tmp_path / "m").mkdir(exist_ok=True)
    shutil.copyfile(source, tmp_path / "m" / name)
    return tmp_path / "m" / name


def test_an_unchanged_model_is_answered_from_memory_with_the_first_run_s_result(cache, parses, repaired, tmp_path):
    for source in (repaired(MARIAN), MARIAN):  # ok, and with findings
        model = _copy(source, tmp_path)
        first = check(model).to_dict()
        count = len(parses)
        assert check(model).to_dict() == first
        assert len(parses) == count  # not parsed again
    (entry, *_) = cache.glob("*.json")
    assert cache.stat().st_mode & 0o777 == 0o700 and entry.stat().st_mode & 0o777 == 0o600
    assert not list(cache.glob(".verdict-*"))


def test_the_command_line_says_the_same_from_memory(cli, cache, parses, tmp_path):
    model = _copy(MARIAN, tmp_path)
    runs = [cli("check", "--json", model), cli("check", "--json", model)]
    assert [r.exit_code for r in runs] == [1, 1]
    assert json.loads(runs[0].stdout) == json.loads(runs[1].stdout)
    texts = [cli("check", "--verbose", model).output for _ in range(2)]
    assert len(parses) == 1
    seconds = re.compile(r"\b[0-9]+(\.[0-9]+)? ?(s|ms)\b")
    assert seconds.sub("T", texts[0]) == seconds.sub("T", texts[1])


def _edited(model: Path, edit) -> None:  # type: ignore[no-untyped-def]
    proto = onnx.load(model)
    edit(proto)
    onnx.save(proto, model)


@pytest.mark.parametrize("edit", ["shape", "type", "op"])
def test_a_changed_model_is_judged_again(cache, parses, repaired, tmp_path, edit):
    model = _copy(repaired(MARIAN), tmp_path)
    assert check(model).ok and check(model).ok and len(parses) == 1

    def shape(proto: onnx.ModelProto) -> None:  # a fixed batch in the signature: GF201
        dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
        dim.dim_value = 1

    def type_(proto: onnx.ModelProto) -> None:  # a float64 output no node makes: onnxruntime refuses it
        proto.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.DOUBLE

    def op(proto: onnx.ModelProto) -> None:  # an op no runtime knows
        proto.graph.node[0].op_type = "NoSuchOp"

    _edited(model, {"shape": shape, "type": type_, "op": op}[edit])
    try:
        changed = check(model)
        assert not changed.ok
    except BadInputError:
        pass  # onnxruntime's refusal: judged again as well
    assert len(parses) == 2


def test_other_options_are_judged_on_their_own(cache, parses, repaired, tmp_path):
    model = _copy(repaired(MARIAN), tmp_path)
    plain = check(model).to_dict()
    targeted = check(model, target_ort="1.16").to_dict()
    assert len(parses) == 2
    assert check(model).to_dict() == plain and check(model, target_ort="1.16").to_dict() == targeted
    assert len(parses) == 2
    check(model, load=True)  # asks onnxruntime: never answered from memory
    assert len(parses) == 3


def test_a_corrupt_foreign_or_other_code_s_entry_is_ignored(cache, parses, repaired, tmp_path, monkeypatch):
    model = _copy(repaired(MARIAN), tmp_path)
    first = check(model).to_dict()
    (entry,) = cache.glob("*.json")
    sound = json.loads(entry.read_text())
    for text in ("{not json", "[]", json.dumps({**sound, "key": "another"}), json.dumps({**sound, "format": 0}),
                 json.dumps({**sound, "outcome": {**sound["outcome"], "findings": [{"code": 1}]}})):
        entry.write_text(text)
        count = len(parses)
        assert check(model).to_dict() == first
        assert len(parses) == count + 1, text
    load_verdicts.code_fingerprint.cache_clear()
    monkeypatch.setattr(load_verdicts, "code_fingerprint", lambda: "other code")
    count = len(parses)
    check(model)
    assert len(parses) == count + 1  # another graphfix never trusts this one's entries


def test_external_data_is_measured_on_every_run(cache, parses, repaired, tmp_path):
    model = _copy(repaired(MARIAN), tmp_path)
    proto = onnx.load(model)
    onnx.save(proto, model, save_as_external_data=True, location=f"{model.name}_data", size_threshold=1024)
    assert check(model).ok and check(model).ok and len(parses) == 1
    data = model.parent / f"{model.name}_data"
    data.write_bytes(data.read_bytes()[:-1])
    with pytest.raises(BadInputError, match="is truncated"):
        check(model)
    data.unlink()
    with pytest.raises(BadInputError, match="missing external data file"):
        check(model)


def _outcome(path: Path) -> object:
    try:
        return check(path, any_model=True).to_dict()["findings"]
    except BadInputError as err:
        return str(err).replace(path.name, "NAME")


def test_a_payload_stored_in_another_field_is_judged_again(cache, tmp_path, monkeypatch):
    """The skeleton keeps a payload's byte range, not its field: the same bytes under another tag (int64_data for a
    float tensor) have the same skeleton, and must not take the raw_data file's outcome."""
    from .test_check_cost import _one_weight_model

    raw = tmp_path / "raw.onnx"
    _one_weight_model(raw, 4096)
    data = raw.read_bytes()
    header = b"\x4a\x80\x20"  # raw_data, 4096 bytes
    assert data.count(header) == 1
    other = tmp_path / "other.onnx"
    other.write_bytes(data.replace(header, b"\x3a\x80\x20"))  # int64_data, the same 4096 bytes
    assert check(raw, any_model=True).ok
    remembered = _outcome(other)
    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "fresh"))
    assert remembered == _outcome(other)
