"""Hostile input (issue 14): no file the command writes is or replaces a file the input reads; every external-data
file is checked once, on the file opened, and copied from that open file; every place ONNX keeps a tensor is
checked; the directory walk never leaves the tree, never loops, never opens a FIFO and never skips what it cannot
read; modes are kept; split and in-place directories are all or nothing. Each refusal: exit 2, one `error:` line,
no OUT, no `.graphfix-*` debris, the input byte-identical.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from graphfix import BadInputError, repair, repair_directory
from graphfix.io.read import read_model
from graphfix.io.write import write_models
from graphfix.model.graph import all_tensors

from ..conftest import ROOT, sha256
from .test_bad_input_and_safe_writing import assert_one_error_line, debris, model_with_external_data, tree

MARIAN = ROOT / "sample_models" / "legacy" / "marian.onnx"


def refused(result, out: Path, mentions: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    line = assert_one_error_line(result)
    assert "unexpected" not in line and mentions in line, line
    assert not out.exists() and debris(out.parent) == []
    return line


def with_external_data(source: Path, directory: Path, *, one_file: bool = True) -> Path:
    """`source` saved into `directory` with every tensor in external data (one file, or one file per tensor)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "decoder_model_merged.onnx"
    onnx.save(onnx.load(source), path, save_as_external_data=True, all_tensors_to_one_file=one_file,
              location="decoder_model_merged.onnx_data" if one_file else None, size_threshold=0)
    return path


def locations(model: onnx.ModelProto) -> list[str]:
    return sorted({e.value for t in all_tensors(model) if t.data_location == TensorProto.EXTERNAL
                   for e in t.external_data if e.key == "location"})


# --- 1. the input is sacred ---------------------------------------------------------------------------------------


def test_an_output_named_like_the_input_s_data_file_is_refused_and_the_data_kept(cli, tmp_path):
    source = with_external_data(MARIAN, tmp_path / "m")
    before = tree(tmp_path)
    result = cli("repair", source, tmp_path / "m" / "decoder_model_merged.onnx_data")
    assert result.exit_code == 2 and "a file the input reads" in assert_one_error_line(result)
    assert tree(tmp_path) == before


def test_in_place_with_data_in_several_files_keeps_each_one_and_a_backup_of_the_model(cli, tmp_path):
    """The staged model is proven beside the data it keeps reading; no `_data.N` is renamed over the input's own."""
    source = with_external_data(MARIAN, tmp_path / "m", one_file=False)
    data = {name: digest for name, digest in tree(tmp_path / "m").items() if not name.endswith(".onnx")}
    assert len(data) > 2
    original = sha256(source)
    result = cli("repair", source, source, "--in-place")
    assert result.exit_code == 0, result.stderr
    after = tree(tmp_path / "m")
    assert {name: after[name] for name in data} == data  # every data file, same name, same bytes
    assert set(after) == set(data) | {"decoder_model_merged.onnx", "decoder_model_merged.onnx.bak"}
    assert after["decoder_model_merged.onnx.bak"] == original
    assert locations(onnx.load(source, load_external_data=False)) == sorted(data)
    assert cli("check", source).exit_code == 0


# --- 2. checked once, on the file opened; copied from that open file ----------------------------------------------


def test_a_data_file_swapped_for_a_symlink_outside_after_reading_never_reaches_out(tmp_path):
    source = with_external_data(MARIAN, tmp_path / "m")
    data = source.with_name("decoder_model_merged.onnx_data")
    genuine = sha256(data)
    secret = tmp_path / "secret"
    secret.write_bytes(b"S" * data.stat().st_size)  # the same size: only the copy's source can tell them apart

    def swap(step: str) -> None:
        if step == "writing":
            moved = data.with_name("moved")
            data.rename(moved)
            data.symlink_to(secret)

    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    repair(source, out, validate=False, on_step=swap)
    assert sha256(out.with_name("model.onnx_data")) == genuine
    assert b"SSSS" not in out.with_name("model.onnx_data").read_bytes()


def test_a_data_file_that_is_a_symlink_inside_the_directory_is_read_through(tmp_path):
    source = with_external_data(MARIAN, tmp_path / "m")
    data = source.with_name("decoder_model_merged.onnx_data")
    (tmp_path / "m" / "weights").mkdir()
    data.rename(tmp_path / "m" / "weights" / "real.bin")
    data.symlink_to("weights/real.bin")
    out = tmp_path / "out.onnx"
    repair(source, out, validate=False)
    assert sha256(tmp_path / "out.onnx_data") == sha256(tmp_path / "m" / "weights" / "real.bin")


# --- 3. every tensor place ----------------------------------------------------------------------------------------


def external(name: str, location: str, length: int = 8) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[length // 4],
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _sparse(tensor: TensorProto) -> onnx.SparseTensorProto:
    indices = helper.make_tensor(f"{tensor.name}_indices", TensorProto.INT64, [2], [0, 1])
    return onnx.SparseTensorProto(values=tensor, indices=indices, dims=[4])


def _in_sparse_initializer(model, tensor):
    model.graph.sparse_initializer.append(_sparse(tensor))


def _in_training_info(model, tensor):
    info = model.training_info.add()
    info.initialization.CopyFrom(helper.make_graph([], "init", [], [], initializer=[tensor]))
    info.algorithm.CopyFrom(helper.make_graph([], "algo", [], []))


def _function_with(attribute: onnx.AttributeProto) -> onnx.FunctionProto:
    node = helper.make_node("Holder", [], ["y"], domain="local")
    node.attribute.append(attribute)
    return helper.make_function("local", "f", [], ["y"], [node], [helper.make_opsetid("", 17)])


def _in_a_function_s_tensor_attribute(model, tensor):
    model.functions.append(_function_with(helper.make_attribute("value", tensor)))


def _in_a_function_s_tensors_attribute(model, tensor):
    model.functions.append(_function_with(helper.make_attribute("values", [tensor])))


def _in_a_function_s_sparse_tensor_attribute(model, tensor):
    model.functions.append(_function_with(helper.make_attribute("sparse", _sparse(tensor))))


def _in_a_function_s_sparse_tensors_attribute(model, tensor):
    model.functions.append(_function_with(helper.make_attribute("sparses", [_sparse(tensor)])))


PLACES = {"sparse_initializer": _in_sparse_initializer, "training_info": _in_training_info,
          "function-TENSOR": _in_a_function_s_tensor_attribute, "function-TENSORS": _in_a_function_s_tensors_attribute,
          "function-SPARSE_TENSOR": _in_a_function_s_sparse_tensor_attribute,
          "function-SPARSE_TENSORS": _in_a_function_s_sparse_tensors_attribute}


def marian_with(place, tensor: TensorProto, directory: Path) -> Path:
    model = onnx.load(MARIAN)
    place(model, tensor)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "decoder_model_merged.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("place", PLACES.values(), ids=PLACES.keys())
@pytest.mark.parametrize("location", ["../secret.bin", "absolute"])
def test_an_escaping_location_is_refused_in_every_tensor_place(place, location, cli, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    if location == "absolute":
        location = str(secret)
    source = marian_with(place, external("hidden", location), tmp_path / "m")
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    before = tree(tmp_path)
    refused(cli("repair", source, out), out, repr(location))
    result = cli("check", source)
    assert result.exit_code == 2 and repr(location) in assert_one_error_line(result)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("place", PLACES.values(), ids=PLACES.keys())
def test_in_directory_data_in_every_tensor_place_is_carried_beside_out(place, tmp_path):
    source = marian_with(place, external("hidden", "extra.bin"), tmp_path / "m")
    (tmp_path / "m" / "extra.bin").write_bytes(b"E" * 8)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    repair(source, out, validate=False)
    written = locations(onnx.load(out, load_external_data=False))
    assert written == ["model.onnx_data"]
    assert (out.parent / "model.onnx_data").read_bytes() == b"E" * 8


# --- 4. the directory walk ----------------------------------------------------------------------------------------


def model_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(MARIAN, root / "decoder_model_merged.onnx")
    (root / "config.json").write_text("{}\n")
    (root / "onnx").mkdir()
    (root / "onnx" / "README.md").write_text("dummy\n")
    return root


def graphfix_process(*args, timeout: float = 120, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The CLI in its own process, with a timeout: a walk that never ends fails the test instead of hanging it."""
    return subprocess.run([*prefix, sys.executable, "-m", "graphfix", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def assert_process_refused(result: subprocess.CompletedProcess, out: Path, mentions: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unexpected" not in lines[0], result.stderr
    assert mentions in lines[0], lines[0]
    assert not out.exists() and debris(out.parent) == []


def test_two_links_to_the_directory_itself_are_refused_as_a_loop_not_walked_forever(tmp_path):
    source = model_dir(tmp_path / "m")
    (source / "a").symlink_to(".")
    (source / "onnx" / "b").symlink_to("..")
    result = graphfix_process("repair", source, tmp_path / "out", "--no-validate", timeout=60)
    assert_process_refused(result, tmp_path / "out", "symlink loop")


def test_a_fifo_in_the_model_directory_is_refused_never_opened(tmp_path):
    source = model_dir(tmp_path / "m")
    os.mkfifo(source / "onnx" / "pipe")
    result = graphfix_process("repair", source, tmp_path / "out", "--no-validate", timeout=60)
    assert_process_refused(result, tmp_path / "out", "is a FIFO")


@pytest.mark.parametrize("target", ["file", "directory"])
def test_a_symlink_to_something_outside_the_model_directory_is_refused(target, cli, tmp_path):
    source = model_dir(tmp_path / "m")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    (source / "onnx" / "leak").symlink_to(outside / "secret.txt" if target == "file" else outside)
    out = tmp_path / "out"
    refused(cli("repair", source, out, "--no-validate"), out, "outside the model directory")


def test_a_symlink_inside_the_tree_is_carried_as_its_file(tmp_path):
    source = model_dir(tmp_path / "m")
    (source / "tokenizer.json").symlink_to("onnx/README.md")
    repair_directory(source, tmp_path / "out", validate=False)
    assert (tmp_path / "out" / "tokenizer.json").read_text() == "dummy\n"


WITHOUT_DAC_OVERRIDE = ("setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search")


def test_an_unreadable_subdirectory_fails_loudly_instead_of_being_left_out(tmp_path):
    source = model_dir(tmp_path / "m")
    (source / "onnx" / "locked").mkdir()
    (source / "onnx" / "locked" / "weights.txt").write_text("needed\n")
    (source / "onnx" / "locked").chmod(0)
    # root reads anything while it has CAP_DAC_OVERRIDE: run the CLI without it, as any user would be
    prefix = WITHOUT_DAC_OVERRIDE if os.geteuid() == 0 else ()
    try:
        result = graphfix_process("repair", source, tmp_path / "out", "--no-validate", prefix=prefix)
    finally:
        (source / "onnx" / "locked").chmod(0o755)
    assert_process_refused(result, tmp_path / "out", "cannot read directory")
    assert "locked" in result.stderr


# --- 5. what ended in "unexpected ..." ----------------------------------------------------------------------------


def _wire(number: int, payload: bytes) -> bytes:
    from graphfix.io.protowire import encode_varint

    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload


def ifs_nested(depth: int) -> bytes:
    """A model whose If nests `depth` deep (built on the wire: onnx.helper itself cannot nest that deep)."""
    from graphfix.io.protowire import encode_varint

    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]).SerializeToString()
    leaf = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], []).SerializeToString()
    graph = leaf
    for _ in range(depth):
        branch = _wire(1, b"then_branch") + _wire(6, graph) + encode_varint(20 << 3) + encode_varint(5)
        node = _wire(1, b"use_cache_branch") + _wire(2, b"y") + _wire(4, b"If") + _wire(5, branch)
        graph = _wire(1, node) + _wire(12, y)
    head = helper.make_model(helper.make_graph([], "main", [], []), opset_imports=[helper.make_opsetid("", 17)])
    head.ClearField("graph")
    return head.SerializeToString() + _wire(7, graph)


def _location_with_nul(tmp):
    return model_with_external_data(tmp / "in", "weights\0.bin"), "NUL byte"


def _offset(value):
    def case(tmp):
        src = model_with_external_data(tmp / "in")
        model = onnx.load(src, load_external_data=False)
        entry = model.graph.initializer[0].external_data.add()
        entry.key, entry.value = "offset", value
        src.write_bytes(model.SerializeToString())
        return src, "bad offset"
    return case


def _nested_400_deep(tmp):
    (tmp / "in").mkdir()
    src = tmp / "in" / "model.onnx"
    src.write_bytes(ifs_nested(400))
    return src, "nested more than"


def _location_too_long(tmp):
    return model_with_external_data(tmp / "in", "w" * 300), "File name too long"


def _data_file_is_a_fifo(tmp):
    src = model_with_external_data(tmp / "in")
    (tmp / "in" / "weights.bin").unlink()
    os.mkfifo(tmp / "in" / "weights.bin")
    return src, "not a regular file"


LEFTOVERS = {"location-with-a-nul": _location_with_nul, "offset-not-a-number": _offset("abc"),
             "negative-offset": _offset("-8"), "ifs-nested-400-deep": _nested_400_deep,
             "location-too-long": _location_too_long, "data-file-is-a-fifo": _data_file_is_a_fifo}


@pytest.mark.parametrize("case", LEFTOVERS.values(), ids=LEFTOVERS.keys())
def test_hostile_fields_are_one_line_exit_2_never_unexpected(case, cli, tmp_path):
    src, mentions = case(tmp_path)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    before = {p: p.lstat().st_mtime_ns for p in tmp_path.rglob("*")}
    for args in (("repair", src, out), ("check", src)):
        refused(cli(*args), out, mentions)
    assert {p: p.lstat().st_mtime_ns for p in tmp_path.rglob("*")} == before


def test_an_output_name_too_long_is_one_line(cli, tmp_path):
    out = tmp_path / ("x" * 300 + ".onnx")
    refused(cli("repair", MARIAN, out), tmp_path / "out.onnx", "File name too long")
    assert debris(tmp_path) == []


def folder_with_path_length(root: Path, length: int) -> Path:
    """A chain of folders under `root` whose path is `length` characters long."""
    folder = root
    while len(str(folder)) < length:
        folder = folder / ("d" * min(200, length - len(str(folder)) - 1))
    folder.mkdir(parents=True)
    assert len(str(folder)) == length
    return folder


def test_an_output_whose_path_nears_path_max_is_repaired_and_leaves_nothing(cli, tmp_path):
    """The staging directory beside OUT adds its name to OUT's path: a short one, so that an OUT path a few dozen
    characters under PATH_MAX (4096) can still be staged."""
    out = folder_with_path_length(tmp_path, 4040) / "decoder_model_merged.onnx"
    result = cli("repair", MARIAN, out)
    assert result.exit_code == 0, result.output
    assert cli("check", out).exit_code == 0
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def test_an_in_place_repair_of_a_name_at_name_max_is_done(cli, tmp_path):
    """IN.bak, at 255 characters, is as long as a name can be: the temp file it is copied to first must not be
    longer."""
    model = tmp_path / ("x" * (255 - len(".onnx.bak")) + ".onnx")
    shutil.copyfile(MARIAN, model)
    result = cli("repair", model, model, "--in-place")
    assert result.exit_code == 0, result.output
    assert sha256(model.with_name(model.name + ".bak")) == sha256(MARIAN)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([model.name, model.name + ".bak"])


def test_an_output_directory_that_is_a_symlink_is_refused(cli, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    source = model_dir(tmp_path / "m")
    result = cli("repair", source, tmp_path / "link", "--no-validate")
    assert result.exit_code == 2 and "is a symlink" in assert_one_error_line(result)
    assert (tmp_path / "link").is_symlink() and list((tmp_path / "real").iterdir()) == []
    assert debris(tmp_path) == []


def test_a_file_removed_from_the_model_directory_mid_run_is_one_line(tmp_path):
    source = model_dir(tmp_path / "m")

    def remove_the_readme(name: str, step: str, done: int) -> None:
        if name == "config.json" and step == "copying":
            (source / "onnx" / "README.md").unlink()

    with pytest.raises(BadInputError, match="onnx/README.md"):
        repair_directory(source, tmp_path / "out", validate=False, on_progress=remove_the_readme)
    assert not (tmp_path / "out").exists() and debris(tmp_path) == []


# --- 7. modes -----------------------------------------------------------------------------------------------------


def test_out_keeps_the_modes_of_the_model_and_of_its_data(tmp_path):
    source = with_external_data(MARIAN, tmp_path / "m")
    source.chmod(0o640)
    source.with_name("decoder_model_merged.onnx_data").chmod(0o600)
    out = tmp_path / "out.onnx"
    old = os.umask(0o022)
    try:
        repair(source, out, validate=False)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "out.onnx_data").stat().st_mode & 0o777 == 0o600


def test_a_model_directory_keeps_its_subdirectory_and_file_modes(tmp_path):
    source = model_dir(tmp_path / "m")
    (source / "onnx").chmod(0o700)
    (source / "config.json").chmod(0o600)
    onnx.save(onnx.load(MARIAN), source / "onnx" / "decoder_model_merged.onnx", save_as_external_data=True,
              location="decoder_model_merged.onnx_data", size_threshold=0)
    (source / "onnx" / "decoder_model_merged.onnx_data").chmod(0o600)
    repair_directory(source, tmp_path / "out", validate=False)
    out = tmp_path / "out"
    assert (out / "onnx").stat().st_mode & 0o777 == 0o700
    assert (out / "config.json").stat().st_mode & 0o777 == 0o600
    assert (out / "onnx" / "decoder_model_merged.onnx_data").stat().st_mode & 0o777 == 0o600


# --- 8. all or nothing --------------------------------------------------------------------------------------------


def test_split_into_a_directory_where_decoder_model_onnx_is_a_directory_writes_nothing(cli, tmp_path):
    out = tmp_path / "split"
    (out / "decoder_model.onnx").mkdir(parents=True)
    result = cli("split", MARIAN, out)
    assert result.exit_code == 2 and "decoder_model.onnx is a directory" in assert_one_error_line(result)
    assert sorted(p.name for p in out.iterdir()) == ["decoder_model.onnx"]


def test_when_a_later_rename_fails_the_earlier_ones_are_undone(tmp_path):
    """The check before writing passed; the second destination turned into a directory while the pair was being
    proven: neither lands, and an old first file is back."""
    loaded = read_model(MARIAN)
    first, second = tmp_path / "decoder_model.onnx", tmp_path / "decoder_with_past_model.onnx"
    first.write_bytes(b"old first")

    def second_becomes_a_directory(staged):
        second.mkdir()

    with pytest.raises(BadInputError, match="cannot write"):
        write_models({first: None, second: None}, loaded, [second_becomes_a_directory])
    assert first.read_bytes() == b"old first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decoder_model.onnx", "decoder_with_past_model.onnx"]
    assert list(second.iterdir()) == []


def test_an_in_place_directory_repair_failing_on_its_third_decoder_puts_the_first_two_back(cli, tmp_path):
    from .test_bad_input_and_safe_writing import failing_validation

    source = tmp_path / "m"
    names = ["decoder_model_merged.onnx", "onnx/decoder_model_merged.onnx", "onnx/decoder_model_merged_fp16.onnx"]
    for name in names:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(MARIAN, source / name)
    before = tree(tmp_path)
    calls = []

    def third_fails(path):
        calls.append(path)
        if len(calls) < 3:
            from types import SimpleNamespace

            return SimpleNamespace(model=str(path), ok=True, onnxruntime="test", first_failure=None,
                                   to_dict=lambda: {"ok": True})
        return failing_validation(path)

    result = cli("repair", source, source, "--in-place", validator=third_fails)
    assert result.exit_code == 1, result.stderr
    line = assert_one_error_line(result)
    assert line.startswith(f"error: {source / names[2]}: ")  # the decoder named with its model folder
    assert f"put back from their .bak: {names[0]}, {names[1]}" in line
    assert tree(tmp_path) == before  # every decoder the original again, no .bak left


def test_a_hugging_face_cache_snapshot_whose_files_link_into_its_blobs_repairs(tmp_path, marian_legacy):
    """The hub client stores every file of a snapshot as a symlink into the repository's blobs/: those links leave
    the snapshot directory but not the repository, and are the commonest model directory there is. Links that leave
    the repository are still refused."""
    import onnx

    from graphfix import repair_directory

    repo = tmp_path / "hub" / "models--Helsinki-NLP--opus-mt-en-de"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "blobs").mkdir(parents=True)
    (snapshot / "onnx").mkdir(parents=True)
    model = onnx.load(marian_legacy)
    onnx.save(model, repo / "blobs" / "decoder", save_as_external_data=True, location="decoder_data",
              size_threshold=0)  # the model's data is a blob of its own, found by name beside the link below
    (repo / "blobs" / "config").write_text("{}\n")
    (snapshot / "onnx" / "decoder_model_merged.onnx").symlink_to("../../../blobs/decoder")
    (snapshot / "onnx" / "decoder_data").symlink_to("../../../blobs/decoder_data")
    (snapshot / "config.json").symlink_to("../../blobs/config")
    result = repair_directory(snapshot, tmp_path / "out")
    assert [m.path for m in result.models] == ["onnx/decoder_model_merged.onnx"]
    assert result.models[0].result.validation.ok
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not the model's")
    (snapshot / "stray.txt").symlink_to(outside)
    with pytest.raises(BadInputError, match="outside the model directory"):
        repair_directory(snapshot, tmp_path / "out2")
