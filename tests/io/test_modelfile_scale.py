"""Skeleton loading and streamed writing: the weights are never materialized, yet every payload lands byte for byte.

Timings live in `make bench`; these tests assert what the speed rests on: payloads are left in the file (and
spliced back identically), the skeleton is the same graph as a full load, external data is never read, and a
multi-gigabyte (sparse) external-data model goes through with a small memory footprint.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphfix import repair
from graphfix.io import protowire
from graphfix.io.read import read_model

from ..conftest import sha256

pytestmark = pytest.mark.slow  # big models: make test

PAYLOAD_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")
GIB = 1 << 30


def _tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _tensors(sub)


def _without_payloads(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every payload and every skeleton marker cleared: what is left is the graph structure."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for tensor in _tensors(model.graph):
        marked = any(protowire.is_payload_marker(e.value) for e in tensor.external_data)
        for name in PAYLOAD_FIELDS:
            tensor.ClearField(name)
        if marked:
            tensor.ClearField("external_data")
            tensor.ClearField("data_location")
    return model


def _marked(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in _tensors(model.graph) if any(protowire.is_payload_marker(e.value) for e in t.external_data)]


def test_skeleton_is_the_same_graph_as_a_full_load(sample):
    skeleton = read_model(sample).model
    full = onnx.load(sample)
    assert _marked(skeleton), "the exporter's weight matrices should have been left in the file"
    assert _without_payloads(skeleton).SerializeToString() == _without_payloads(full).SerializeToString()


def test_skeleton_holds_no_large_payload_in_memory(marian_current):
    skeleton = read_model(marian_current).model
    assert skeleton.ByteSize() < marian_current.stat().st_size
    for tensor in _tensors(skeleton.graph):
        without = onnx.TensorProto.FromString(tensor.SerializeToString())
        for name in PAYLOAD_FIELDS:
            without.ClearField(name)
        assert tensor.ByteSize() - without.ByteSize() < protowire.STRIP_AT, tensor.name


def test_unedited_skeleton_splices_back_to_the_input_byte_for_byte(sample):
    pieces = protowire.join(read_model(sample).model.SerializeToString())
    source = sample.read_bytes()
    rebuilt = b"".join(p if isinstance(p, bytes) else source[p.start:p.end] for p in pieces)
    assert rebuilt == source


def test_repair_keeps_every_embedded_payload_byte_identical(marian_current, tmp_path):
    out = tmp_path / "fixed.onnx"
    result = repair(marian_current, out, validate=False)
    assert result.changed
    before = {t.name: t.raw_data for t in _tensors(onnx.load(marian_current).graph) if len(t.raw_data) >= 1024}
    after = {t.name: t.raw_data for t in _tensors(onnx.load(out).graph)}
    assert before and set(before) <= set(after)
    assert all(after[name] == data for name, data in before.items())
    onnx.checker.check_model(os.fspath(out), full_check=True)


def test_typed_data_fields_are_spliced_back_like_raw_data(tmp_path):
    """Payloads in float_data / int64_data (onnx.helper's default) are left in the file and restored identically."""
    weights = np.arange(600, dtype=np.float32)
    ids = np.arange(300, dtype=np.int64) * 1_000_003  # large values: 4-byte varints
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "w"], ["y"])], "typed",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [600])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [600])],
        [onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, [600], weights.tolist()),
         onnx.helper.make_tensor("ids", onnx.TensorProto.INT64, [300], ids.tolist())])
    path = tmp_path / "typed.onnx"
    onnx.save(onnx.helper.make_model(graph), path)
    skeleton = read_model(path).model
    assert {t.name for t in _marked(skeleton)} == {"w", "ids"}
    assert not skeleton.graph.initializer[0].float_data
    source = path.read_bytes()
    pieces = protowire.join(skeleton.SerializeToString())
    rebuilt = onnx.ModelProto.FromString(b"".join(p if isinstance(p, bytes) else source[p.start:p.end] for p in pieces))
    assert np.array_equal(numpy_helper.to_array(rebuilt.graph.initializer[0]), weights)
    assert np.array_equal(numpy_helper.to_array(rebuilt.graph.initializer[1]), ids)


def _external_copy(sample: Path, directory: Path) -> Path:
    directory.mkdir()
    model = onnx.load(sample)
    path = directory / "decoder_model_merged.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="decoder_model_merged.onnx_data", size_threshold=0)
    return path


@pytest.mark.parametrize("data_mode", ["clone", "copy"])
def test_external_data_lands_as_an_independent_identical_file_onnx_can_load(marian_current, tmp_path, data_mode):
    src = _external_copy(marian_current, tmp_path / "in")
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "fixed.onnx"
    repair(src, out, validate=False, data_mode=data_mode)
    data = out.with_name("fixed.onnx_data")
    assert sha256(data) == sha256(src.with_name("decoder_model_merged.onnx_data"))
    assert data.stat().st_nlink == 1 and not os.path.samefile(data, src.with_name("decoder_model_merged.onnx_data"))
    onnx.checker.check_model(os.fspath(out), full_check=True)  # onnx refuses hardlinked data
    assert onnx.load(out).graph.initializer


def test_link_data_hardlinks_the_external_data_when_asked(marian_current, tmp_path):
    src = _external_copy(marian_current, tmp_path / "in")
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "fixed.onnx"
    repair(src, out, validate=False, data_mode="link")
    assert os.path.samefile(out.with_name("fixed.onnx_data"), src.with_name("decoder_model_merged.onnx_data"))


def test_copy_data_and_link_data_together_are_refused(cli, marian_current, tmp_path):
    result = cli("repair", marian_current, tmp_path / "x.onnx", "--copy-data", "--link-data")
    assert result.exit_code == 2
    assert not (tmp_path / "x.onnx").exists()


def _data_segments(path: Path) -> list[tuple[int, int]]:
    segments, pos, size = [], 0, path.stat().st_size
    with open(path, "rb") as file:
        fd = file.fileno()
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            segments.append((start, end))
            pos = end
    return segments


def _point_at(tensor: onnx.TensorProto, offset: int, length: int) -> None:
    for name in PAYLOAD_FIELDS:
        tensor.ClearField(name)
    for key, value in (("location", "decoder_model_merged.onnx_data"), ("offset", offset), ("length", length)):
        tensor.external_data.add(key=key, value=str(value))
    tensor.data_location = onnx.TensorProto.EXTERNAL


def _sparse_external_model(sample: Path, directory: Path) -> Path:
    """The real decoder's graph with its weights external, behind a 2.5 GiB unused tensor that is all hole."""
    directory.mkdir()
    model = onnx.load(sample)
    data_path = directory / "decoder_model_merged.onnx_data"
    padding_elements = (5 * GIB // 2) // 4
    with open(data_path, "wb") as data:
        offset = padding_elements * 4
        padding = onnx.TensorProto(name="graphfix_test/hole", data_type=onnx.TensorProto.FLOAT, dims=[padding_elements])
        _point_at(padding, 0, offset)  # the file's first 2.5 GiB, never written: a hole
        for tensor in model.graph.initializer:
            payload = tensor.raw_data or numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data
            offset = (offset + 4095) // 4096 * 4096
            data.seek(offset)
            data.write(payload)
            _point_at(tensor, offset, len(payload))
            offset += len(payload)
        model.graph.initializer.append(padding)
    path = directory / "decoder_model_merged.onnx"
    onnx.save(model, path)
    return path


def test_a_model_with_more_than_2_gib_of_external_data_is_repaired_without_reading_it(marian_current, tmp_path):
    src = _sparse_external_model(marian_current, tmp_path / "in")
    src_data = src.with_name("decoder_model_merged.onnx_data")
    assert src_data.stat().st_size > 2 * GIB and src_data.stat().st_blocks * 512 < 64 << 20
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "fixed.onnx"
    # The child reports its own VmHWM: ru_maxrss would inherit this (large, long-lived) pytest process's peak,
    # because Linux folds the pre-exec memory's high-water mark into the child's.
    script = ("import re, sys\nfrom graphfix.cli import app\ntry:\n    app()\nfinally:\n"
              "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]\n"
              "    print(hwm, file=sys.stderr)")
    child = subprocess.run([sys.executable, "-c", script, "repair", "--no-validate", os.fspath(src), os.fspath(out)],
                           capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    peak_kib = int(child.stderr.strip().splitlines()[-1])
    # Reading the 2.5 GiB tensor (even as zeros from the hole) would take gigabytes; onnx + numpy alone take ~80 MB.
    assert peak_kib * 1024 < 400 << 20
    out_data = out.with_name("fixed.onnx_data")
    assert out_data.stat().st_size == src_data.stat().st_size
    assert out_data.stat().st_blocks * 512 < 64 << 20, "holes were filled in: the copy wrote 2.5 GiB of zeros"
    assert _data_segments(out_data) == _data_segments(src_data)
    with open(src_data, "rb") as a, open(out_data, "rb") as b:
        for start, end in _data_segments(src_data):
            assert os.pread(a.fileno(), end - start, start) == os.pread(b.fileno(), end - start, start)
    onnx.checker.check_model(os.fspath(out))
    repaired = onnx.load(out, load_external_data=False)
    assert any(t.name == "graphfix_test/hole" for t in repaired.graph.initializer)
