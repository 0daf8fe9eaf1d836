"""The input is the input: a source rewritten while it is copied is an error naming it (never a proven mix of two
versions), a source that shrinks is not reported as OUT's fault, no data file the output does not read is written
beside it, and messages name OUT, never a staging path that is gone by the time they are read."""

from __future__ import annotations

import os
import shutil

import onnx
import pytest
from onnx import numpy_helper

from graphfix.errors import BadInputError, ValidationFailedError
from graphfix.io import write
from graphfix.pipeline import repair

from ..conftest import sha256


def rewrite_in_place(path, *, shrink: bool = False) -> None:
    """What another writer does to the file meanwhile: same size (or cut short), new bytes, new mtime."""
    data = bytearray(path.read_bytes())
    with open(path, "r+b") as f:
        if shrink:
            f.truncate(len(data) // 2)
        else:
            data[-64:] = bytes(64)
            f.write(data)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize("shrink", [False, True], ids=["rewritten-same-size", "cut-short"])
def test_a_source_rewritten_while_it_is_copied_is_an_error_naming_it(shrink, tmp_path, marian_legacy, monkeypatch):
    source = tmp_path / "decoder_model_merged.onnx"
    shutil.copy(marian_legacy, source)
    out = tmp_path / "fixed.onnx"
    real = write.write_pieces

    def copy_while_someone_writes(pieces, src_fd, dst, mode=0o644):
        pieces = list(pieces)
        rewrite_in_place(source, shrink=shrink)  # between the read and the end of the copy
        real(pieces, src_fd, dst, mode)

    monkeypatch.setattr(write, "write_pieces", copy_while_someone_writes)
    with pytest.raises(BadInputError, match=f"{source} changed while it was being read"):
        repair(source, out, validate=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def with_only_the_dummies_external(source, directory):
    """The sample re-saved with the cache branch's dummy Constants (what GF101 removes; zero elements) as the only
    external tensors: their data file is all the model reads outside itself, and after the repair nothing."""
    from onnx.external_data_helper import set_external_data

    model = onnx.load(source)
    branches = [a.g for n in model.graph.node if n.op_type == "If" for a in n.attribute]
    dummies = [a.t for b in branches for m in b.node if m.op_type == "Constant" and ".encoder." in m.output[0]
               and m.output[0] in {o.name for o in b.output} for a in m.attribute if a.name == "value"]
    assert dummies, "the sample has no dummy Constant the repair removes"
    for tensor in dummies:
        values = numpy_helper.to_array(tensor)
        for name in ("float_data", "int32_data", "int64_data", "double_data"):
            tensor.ClearField(name)
        tensor.raw_data = values.tobytes()
        set_external_data(tensor, "decoder_model_merged.onnx_data", offset=0, length=len(tensor.raw_data))
        tensor.ClearField("raw_data")
    (directory / "decoder_model_merged.onnx_data").write_bytes(b"")
    path = directory / "decoder_model_merged.onnx"
    onnx.save(model, path)
    return path


def test_no_empty_unreferenced_data_file_is_written_beside_out(tmp_path, marian_current):
    (tmp_path / "in").mkdir(), (tmp_path / "out").mkdir()
    source = with_only_the_dummies_external(marian_current, tmp_path / "in")
    out = tmp_path / "out" / "fixed.onnx"
    repair(source, out, validate=False)
    assert sorted(p.name for p in out.parent.iterdir()) == ["fixed.onnx"], "a data file nothing reads beside OUT"
    onnx.checker.check_model(str(out), full_check=True)


def test_a_failed_proof_names_out_not_the_staging_copy(tmp_path, marian_legacy):
    out = tmp_path / "fixed.onnx"

    def proof_that_fails(staged):
        raise ValidationFailedError(f"onnxruntime cannot load {staged}: broken")

    with pytest.raises(ValidationFailedError) as raised:
        repair(marian_legacy, out, validator=proof_that_fails)
    assert str(out) in str(raised.value) and ".graphfix-" not in str(raised.value)
    assert not out.exists()
    assert sha256(marian_legacy)
