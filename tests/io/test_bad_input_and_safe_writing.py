"""Bad input is refused with one `error:` line and exit 2, touching nothing; writes are atomic and keep the mode.

Every refusal is checked the same way: exit 2, exactly one stderr line starting with `error: ` (no traceback),
empty stdout, no OUT, no `.graphfix-*` temp dir beside OUT, and every file under tmp_path (the input included)
byte-identical afterwards.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphfix import ValidationFailedError, repair

from ..conftest import result_lines, sha256

# --- helpers ---------------------------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, str]:
    """Every file and directory under `root` -> its sha256 (or "dir"): a snapshot of everything a run could touch."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else sha256(p) for p in sorted(root.rglob("*"))}


def debris(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob(".graphfix-*")) if directory.is_dir() else []


def assert_one_error_line(result) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def assert_refused(result, out: Path, *, mentions: str | None = None) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    line = assert_one_error_line(result)
    assert result.stdout == ""
    assert not out.exists()
    assert debris(out.parent) == []
    if mentions is not None:
        assert mentions in line


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())  # no external-data conversion: the proto is written as it is
    return path


def tiny_model(nodes, inputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


X = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])


def model_with_external_data(directory: Path, location: str | None = None) -> Path:
    """A valid single-Add model whose initializer lives in `weights.bin`; then its location is set to `location`."""
    import numpy as np

    weight = numpy_helper.from_array(np.arange(2, dtype=np.float32), "w")
    model = tiny_model([helper.make_node("Add", ["x", "w"], ["y"])], [X], [weight])
    path = directory / "model.onnx"
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
                    size_threshold=0)
    assert (directory / "weights.bin").is_file()
    if location is not None:
        model = onnx.load(path, load_external_data=False)
        (entry,) = [e for e in model.graph.initializer[0].external_data if e.key == "location"]
        entry.value = location
        save(model, path)
    return path


# --- repair IN OUT on bad input: one shape, many cases ------------------------------------------------------------
# Each case gets (tmp_path, sample) and returns (IN, OUT, text the error must mention or None).


def _empty(tmp, sample):
    (tmp / "in").mkdir()
    (tmp / "in" / "model.onnx").touch()
    return tmp / "in" / "model.onnx", tmp / "out" / "model.onnx", "empty"


def _random(seed):
    def case(tmp, sample):
        src = tmp / "in" / "model.onnx"
        src.parent.mkdir()
        src.write_bytes(random.Random(seed).randbytes(4096))
        return src, tmp / "out" / "model.onnx", None
    return case


def _truncated(tmp, sample):
    src = tmp / "in" / "model.onnx"
    src.parent.mkdir()
    data = sample.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    return src, tmp / "out" / "model.onnx", "not an ONNX model"


def _single_add(tmp, sample):
    model = tiny_model([helper.make_node("Add", ["x", "x"], ["y"])], [X])
    return save(model, tmp / "in" / "model.onnx"), tmp / "out" / "model.onnx", "not a merged decoder"


def _cache_flag_without_if(tmp, sample):
    flag = helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])
    model = tiny_model([helper.make_node("Identity", ["x"], ["y"])], [X, flag])
    return save(model, tmp / "in" / "model.onnx"), tmp / "out" / "model.onnx", "not a merged decoder"


def _missing_input(tmp, sample):
    return tmp / "in" / "nope.onnx", tmp / "out" / "model.onnx", "no such file"


def _input_is_directory(tmp, sample):
    (tmp / "in" / "model.onnx").mkdir(parents=True)
    return tmp / "in" / "model.onnx", tmp / "out" / "model.onnx", "directory"


def _output_in_missing_directory(tmp, sample):
    src = tmp / "in" / "model.onnx"
    src.parent.mkdir()
    shutil.copyfile(sample, src)
    return src, tmp / "missing" / "model.onnx", "does not exist"


def _output_in_read_only_directory(tmp, sample):
    src = tmp / "in" / "model.onnx"
    src.parent.mkdir()
    shutil.copyfile(sample, src)
    read_only = tmp / "out"
    read_only.mkdir(mode=0o555)
    read_only.chmod(0o555)
    if not os.access(read_only, os.W_OK):
        return src, read_only / "model.onnx", "not writable"
    # Root writes anywhere: make OUT's directory a regular file instead, which fails for everyone.
    read_only.chmod(0o755)
    read_only.rmdir()
    read_only.write_bytes(b"not a directory")
    return src, read_only / "model.onnx", "does not exist"


def _external_data_missing(tmp, sample):
    src = model_with_external_data(tmp / "in")
    (tmp / "in" / "weights.bin").unlink()
    return src, tmp / "out" / "model.onnx", "'weights.bin'"


CASES = {
    "empty-file": _empty,
    **{f"random-bytes-seed{seed}": _random(seed) for seed in (0, 1, 2)},
    "truncated-sample": _truncated,
    "valid-onnx-single-add": _single_add,
    "cache-flag-without-if": _cache_flag_without_if,
    "missing-input": _missing_input,
    "input-is-directory": _input_is_directory,
    "output-in-missing-directory": _output_in_missing_directory,
    "output-in-read-only-directory": _output_in_read_only_directory,
    "external-data-file-missing": _external_data_missing,
}


@pytest.fixture
def restore_permissions(tmp_path):
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_refused_with_one_error_line_exit_2_and_nothing_written(case, cli, tmp_path, marian_legacy,
                                                                             restore_permissions):
    src, out, mentions = case(tmp_path, marian_legacy)
    if not (tmp_path / "out").exists():
        (tmp_path / "out").mkdir()  # so that only the case's own defect can be the reason
    before = tree(tmp_path)
    result = cli("repair", src, out)
    assert_refused(result, out, mentions=mentions)
    assert tree(tmp_path) == before  # the input byte-identical, and nothing created anywhere


def test_truncated_model_is_refused_with_one_line_and_exit_2(cli, tmp_path, marian_legacy):
    src, out, _ = _truncated(tmp_path, marian_legacy)
    out.parent.mkdir()
    digest = sha256(src)
    assert_refused(cli("repair", src, out), out, mentions=str(src))
    assert sha256(src) == digest


@pytest.mark.parametrize("location", ["absolute", "../../outside/secret.bin"])
def test_external_data_outside_the_model_directory_is_refused_naming_the_location(location, cli, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.bin"
    secret.write_bytes(b"\0" * 64)  # big enough for the tensor, so only the location can be the reason
    stat = secret.stat()
    if location == "absolute":
        location = str(secret)
    src = model_with_external_data(tmp_path / "in" / "model", location)
    assert (src.parent / location).resolve() == secret
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    before = tree(tmp_path)

    assert_refused(cli("repair", src, out), out, mentions=repr(location))
    assert tree(tmp_path) == before
    assert sorted(outside.iterdir()) == [secret]
    assert (secret.stat().st_mtime_ns, secret.stat().st_size) == (stat.st_mtime_ns, stat.st_size)
    # check and validate refuse it the same way
    for command in ("check", "validate"):
        result = cli(command, src)
        assert result.exit_code == 2
        assert repr(location) in assert_one_error_line(result)
    assert tree(tmp_path) == before


def test_output_equal_to_input_without_in_place_is_refused_and_the_input_kept(cli, tmp_path, marian_legacy):
    src = tmp_path / "model.onnx"
    shutil.copyfile(marian_legacy, src)
    digest = sha256(src)
    for out in (src, tmp_path / "." / "model.onnx"):
        result = cli("repair", src, out)
        assert result.exit_code == 2 and result.stdout == ""
        assert "--in-place" in assert_one_error_line(result)
        assert sha256(src) == digest
        assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no .bak, no temp dir


# --- check and validate -------------------------------------------------------------------------------------------


def test_check_of_an_empty_file_exits_2_with_an_error_line(cli, tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.touch()
    result = cli("check", empty)
    assert result.exit_code == 2
    assert "empty" in assert_one_error_line(result)


def test_check_of_a_clean_repaired_model_exits_0(cli, repaired, marian_legacy):
    result = cli("check", repaired(marian_legacy))
    assert result.exit_code == 0, result.stdout
    assert f"{repaired(marian_legacy)}: ok" in result.stdout.splitlines()
    assert result.stderr == ""


def test_check_of_a_broken_sample_exits_1_and_lists_one_line_per_code(cli, marian_legacy):
    result = cli("check", marian_legacy)
    assert result.exit_code == 1
    lines = result_lines(result.stdout)
    assert lines[0] == f"{marian_legacy}: 9 findings"
    assert [line.split()[0] for line in lines[1:-1]] == ["GF101", "GF103", "GF104"]
    assert lines[-1].startswith("checked 1 file: 1 with findings (GF101 x4, GF103, GF104 x4);")
    assert result.stderr == ""


def test_check_of_a_broken_and_an_unreadable_path_exits_2(cli, tmp_path, marian_legacy):
    result = cli("check", marian_legacy, tmp_path / "missing.onnx")
    assert result.exit_code == 2
    assert "  GF101 x4 " in result.stdout and "1 unreadable" in result_lines(result.stdout)[-1]
    assert "missing.onnx" in assert_one_error_line(result)


def test_validate_of_a_missing_path_exits_2_with_one_error_line(cli, tmp_path):
    result = cli("validate", tmp_path / "missing.onnx")
    assert result.exit_code == 2 and result.stdout == ""
    assert "no such file" in assert_one_error_line(result)


# --- --in-place -----------------------------------------------------------------------------------------------------


def test_in_place_keeps_a_byte_identical_backup_and_leaves_a_clean_model(cli, tmp_path, marian_legacy):
    src = tmp_path / "model.onnx"
    shutil.copyfile(marian_legacy, src)
    original = sha256(src)

    result = cli("repair", src, src, "--in-place")
    assert result.exit_code == 0, result.stderr
    backup = tmp_path / "model.onnx.bak"
    assert sha256(backup) == original
    assert sha256(src) != original
    assert cli("check", src).exit_code == 0
    assert debris(tmp_path) == []


def test_a_second_in_place_repair_has_nothing_to_repair_and_keeps_the_first_backup(cli, tmp_path, marian_legacy):
    src = tmp_path / "model.onnx"
    shutil.copyfile(marian_legacy, src)
    assert cli("repair", src, src, "--in-place").exit_code == 0
    before = tree(tmp_path)

    result = cli("repair", src, src, "--in-place")
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith("nothing to repair")
    assert tree(tmp_path) == before


def test_in_place_is_refused_when_a_different_backup_already_exists(cli, tmp_path, marian_legacy):
    src = tmp_path / "model.onnx"
    shutil.copyfile(marian_legacy, src)
    (tmp_path / "model.onnx.bak").write_bytes(b"another model\n")
    before = tree(tmp_path)

    result = cli("repair", src, src, "--in-place")
    assert result.exit_code == 2 and result.stdout == ""
    assert "model.onnx.bak" in assert_one_error_line(result)
    assert tree(tmp_path) == before


def test_in_place_with_another_output_is_refused(cli, tmp_path, marian_legacy):
    out = tmp_path / "out.onnx"
    assert_refused(cli("repair", marian_legacy, out, "--in-place"), out, mentions="--in-place")


# --- atomic replace -----------------------------------------------------------------------------------------------


def failing_validation(path, *args, **kwargs):
    """Stands in for the decode proof (repair's `validator` seam): a result that did not hold (duck-typed like
    ValidationResult)."""
    return SimpleNamespace(model=str(path), ok=False, first_failure="step 2: simulated divergence",
                           to_dict=lambda: {"ok": False})


def test_repair_with_force_over_an_existing_output_replaces_it(cli, tmp_path, marian_legacy):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old output")
    result = cli("repair", "--force", marian_legacy, out)
    assert result.exit_code == 0, result.stderr
    assert b"old output" not in out.read_bytes()
    assert cli("check", out).exit_code == 0
    assert debris(tmp_path) == []


def test_failed_validation_leaves_the_old_output_byte_identical(tmp_path, marian_legacy):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old output")
    with pytest.raises(ValidationFailedError, match="simulated"):
        repair(marian_legacy, out, validator=failing_validation, force=True)
    assert out.read_bytes() == b"old output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp dir, no data file


def test_failed_validation_exits_1_via_the_cli_and_writes_nothing(cli, tmp_path, marian_legacy):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old output")
    result = cli("repair", "--force", marian_legacy, out, validator=failing_validation)
    assert result.exit_code == 1
    assert "simulated" in assert_one_error_line(result)
    assert out.read_bytes() == b"old output"
    assert debris(tmp_path) == []


def crashing_validation(path, *args, **kwargs):
    raise RuntimeError("simulated bug")


def interrupted_validation(path, *args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("fake_validate, exit_code", [(failing_validation, 1), (crashing_validation, 2),
                                                      (interrupted_validation, 130)],
                         ids=["validation-fails", "unexpected-error", "ctrl-c"])
def test_failed_in_place_repair_leaves_the_input_and_no_backup(fake_validate, exit_code, cli, tmp_path, marian_legacy):
    src = tmp_path / "model.onnx"
    shutil.copyfile(marian_legacy, src)
    before = tree(tmp_path)
    result = cli("repair", src, src, "--in-place", validator=fake_validate)
    assert result.exit_code == exit_code
    assert_one_error_line(result)
    assert tree(tmp_path) == before  # IN untouched, and the IN.bak made beforehand removed again


# --- file mode ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("needs_repair", [True, False], ids=["repaired", "nothing-to-repair"])
def test_output_keeps_the_input_file_mode(needs_repair, cli, tmp_path, marian_legacy, repaired):
    src = tmp_path / "in.onnx"
    shutil.copyfile(marian_legacy if needs_repair else repaired(marian_legacy), src)
    src.chmod(0o640)
    out = tmp_path / "out.onnx"
    result = cli("repair", src, out)
    assert result.exit_code == 0, result.stderr
    assert result_lines(result.stdout)[-1].startswith("wrote" if needs_repair else "nothing to repair")
    assert out.stat().st_mode & 0o777 == 0o640
