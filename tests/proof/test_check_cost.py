"""`check` pays a session only for what its skeleton and the measured tables cannot decide, and only once per file
content and onnxruntime release (issue 31, item 3). Sessions are counted by replacing the one function that
creates them (proof/client_loop.load_session) in this process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from graphfix import BadInputError, check, repair
from graphfix.io.read import read_model
from graphfix.proof import load_verdicts, loadable

from ..conftest import ROOT

VARIANTS = ROOT / "sample_models" / "variants"


@pytest.fixture
def sessions(monkeypatch, tmp_path) -> list[str]:
    """Every onnxruntime session created in this process, by path, in a cache of the test's own."""
    import graphfix.proof.client_loop as client_loop

    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))
    created: list[str] = []
    real = client_loop.load_session

    def counted(path: str) -> object:
        created.append(path)
        return real(path)

    monkeypatch.setattr(client_loop, "load_session", counted)
    return created


@pytest.fixture(scope="module")
def repaired_fp16(tmp_path_factory) -> Path:
    """A float16 merged decoder check calls clean: the tables do not list float16 kernels, so a session decides."""
    out = tmp_path_factory.mktemp("fp16") / "decoder_model_merged.onnx"
    repair(VARIANTS / "marian-fp16.onnx", out, validate=False)
    return out


def test_a_repaired_float32_model_is_ok_without_any_session(sessions, repaired):
    fixed = repaired(ROOT / "sample_models" / "current" / "marian.onnx")
    assert loadable.undecided(read_model(fixed)) is None
    assert check(fixed).ok and check(fixed).ok
    assert sessions == []


def test_load_creates_the_session_the_tables_make_unneeded(sessions, repaired):
    fixed = repaired(ROOT / "sample_models" / "current" / "marian.onnx")
    assert check(fixed, load=True).ok
    assert check(fixed, load=True).ok  # asked for: not answered from memory
    assert len(sessions) == 2


def test_a_session_s_verdict_is_remembered_for_the_same_bytes_and_asked_again_for_others(sessions, repaired_fp16,
                                                                                         tmp_path):
    model = tmp_path / "decoder_model_merged.onnx"
    shutil.copyfile(repaired_fp16, model)
    assert loadable.undecided(read_model(model)) is not None
    assert check(model).ok
    assert len(sessions) == 1
    assert check(model).ok  # unchanged: remembered
    assert len(sessions) == 1
    os.utime(model, (1, 1))  # another mtime, the same bytes: still remembered
    shutil.copyfile(model, tmp_path / "copy.onnx")
    assert check(tmp_path / "copy.onnx").ok
    assert len(sessions) == 1

    changed = onnx.load(model)
    changed.doc_string = "one more byte"
    onnx.save(changed, model)
    assert check(model).ok
    assert len(sessions) == 2  # other bytes: onnxruntime is asked again


def test_verdicts_are_private_and_a_corrupt_or_foreign_entry_is_ignored(sessions, repaired_fp16, tmp_path):
    model = tmp_path / "decoder_model_merged.onnx"
    shutil.copyfile(repaired_fp16, model)
    assert check(model).ok
    directory = tmp_path / "cache" / "load-verdicts"
    (entry,) = directory.glob("*.json")
    assert directory.stat().st_mode & 0o777 == 0o700 and entry.stat().st_mode & 0o777 == 0o600
    assert not list(directory.glob(".verdict-*"))  # nothing staged left behind

    for text in ("{not json", json.dumps({"format": 1, "key": "another", "loads": True}), "[]",
                 json.dumps({"format": 1, "key": entry.stem, "loads": "yes"})):
        entry.write_text(text)
        shutil.rmtree(tmp_path / "cache" / "check-outcomes")  # check's whole outcome is remembered too: not this
        before = len(sessions)
        assert check(model).ok
        assert len(sessions) == before + 1, text  # ignored: the session decided, and its verdict replaced it
    entry.unlink()
    entry.symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text(json.dumps({"format": 1, "key": entry.stem, "loads": True}))
    assert load_verdicts.remembered(entry.stem) is None  # a symlink is not followed


def test_a_remembered_refusal_is_the_same_verdict_named_after_the_file_checked(sessions, tmp_path):
    for name in ("first.onnx", "second.onnx"):
        shutil.copyfile(VARIANTS / "marian-q4f16.onnx", tmp_path / name)
    with pytest.raises(BadInputError, match="cannot load first.onnx: .*does not match expected type"):
        check(tmp_path / "first.onnx")
    loaded = read_model(tmp_path / "second.onnx")
    with pytest.raises(BadInputError, match="cannot load second.onnx: .*does not match expected type"):
        loadable.confirm_loadable(loaded)
    assert len(sessions) == 1


def _one_weight_model(path: Path, stored: int) -> None:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1024], b"\0" * 4096, raw=True)
    weight.raw_data = b"\0" * stored
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_weight_shorter_than_its_shape_is_left_to_onnxruntime(tmp_path):
    whole, short = tmp_path / "whole.onnx", tmp_path / "short.onnx"
    _one_weight_model(whole, 4096)
    _one_weight_model(short, 4092)
    assert loadable.undecided(read_model(whole)) is None
    assert "stored size" in (loadable.undecided(read_model(short)) or "")
    with pytest.raises(BadInputError, match="cannot load short.onnx"):
        loadable.require_loadable(short)


def test_a_domain_or_release_the_tables_do_not_cover_is_left_to_onnxruntime(monkeypatch, tmp_path):
    path = tmp_path / "custom.onnx"
    graph = helper.make_graph([helper.make_node("Mystery", ["x"], ["y"], domain="example.custom")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("example.custom", 1)]), path)
    assert "example.custom" in (loadable.undecided(read_model(path)) or "")
    plain = ROOT / "sample_models" / "current" / "marian.onnx"
    monkeypatch.setattr(load_verdicts, "installed_release", lambda: "1.13.1")
    assert "older than the tables" in (loadable.undecided(read_model(plain)) or "")


def test_the_command_line_check_takes_load(cli, sessions, repaired):
    fixed = repaired(ROOT / "sample_models" / "current" / "marian.onnx")
    assert cli("check", fixed).exit_code == 0 and sessions == []
    result = cli("check", "--load", fixed)
    assert result.exit_code == 0, result.output
    assert sessions == [str(fixed)]
