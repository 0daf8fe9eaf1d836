"""Nothing is replaced silently, and an output never shares storage with its input unless the user asks.

An existing OUT is replaced only with `--force`: `repair *.onnx` in an export folder expands to `repair
decoder_model_merged.onnx encoder_model.onnx`, and swapped arguments name the original as OUT; both must cost
nothing. OUT is a regular file or absent, never a device, FIFO or socket (as root a rename would replace the node).
A repaired model folder copies its side files (reflink where the filesystem can): editing the output's config.json
never edits the input's. `--in-place` on a model with nothing to repair writes nothing; a stale `.bak` (identical to
IN, what an interrupted run leaves) is recognised, not an obstacle.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

from ..conftest import ROOT, sha256

EXPORT = ROOT / "sample_models" / "exports" / "current-marian"


def one_error_line(result) -> str:
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_an_existing_output_is_replaced_only_with_force(tmp_path, marian_legacy, cli):
    out = tmp_path / "fixed.onnx"
    out.write_bytes(b"last week's output\n")
    line = one_error_line(cli("repair", "--no-validate", marian_legacy, out))
    assert str(out) in line and "--force" in line
    assert out.read_bytes() == b"last week's output\n"
    assert cli("repair", "--no-validate", "--force", marian_legacy, out).exit_code == 0
    assert cli("check", out).exit_code == 0


def test_repair_star_dot_onnx_in_an_export_folder_leaves_the_encoder_alone(tmp_path, marian_legacy, cli):
    export = tmp_path / "export"
    shutil.copytree(EXPORT, export)
    shutil.copy(marian_legacy, export / "decoder_model_merged.onnx")
    before = {p.name: sha256(p) for p in export.iterdir()}
    names = sorted(str(p) for p in export.glob("decoder_model_merged.onnx")) + [str(export / "encoder_model.onnx")]
    line = one_error_line(cli("repair", *names))  # what the shell makes of `repair decoder_model_merged.onnx e*.onnx`
    assert "encoder_model.onnx already exists" in line
    assert {p.name: sha256(p) for p in export.iterdir()} == before


def test_swapped_arguments_leave_the_original_alone(tmp_path, marian_legacy, cli):
    original = tmp_path / "original.onnx"
    shutil.copy(marian_legacy, original)
    fixed = tmp_path / "fixed.onnx"
    assert cli("repair", "--no-validate", original, fixed).exit_code == 0
    digest = sha256(original)
    one_error_line(cli("repair", "--no-validate", fixed, original))
    assert sha256(original) == digest


def special_file(kind: str, path: Path) -> Path:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(str(path))
        listening.close()
    else:  # a device node like /dev/null (the real one must never be at stake in a test)
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return path


@pytest.mark.parametrize("kind", ["device", "fifo", "socket"])
def test_an_output_that_is_not_a_regular_file_is_refused_even_with_force(kind, tmp_path, marian_legacy, cli):
    out = special_file(kind, tmp_path / "out.onnx")
    mode = out.lstat().st_mode
    line = one_error_line(cli("repair", "--no-validate", "--force", marian_legacy, out))
    assert str(out) in line and "not a regular file" in line
    assert out.lstat().st_mode == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


# --- --in-place -------------------------------------------------------------------------------------------------


def test_in_place_on_a_model_with_nothing_to_repair_writes_nothing(tmp_path, marian_legacy, repaired, cli):
    model = tmp_path / "decoder_model_merged.onnx"
    shutil.copy(repaired(marian_legacy), model)
    inode = model.stat().st_ino
    result = cli("repair", "--in-place", model, model)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("nothing to repair")
    assert model.stat().st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.name], "no backup of an unchanged model"


def test_a_stale_backup_identical_to_the_input_is_not_an_obstacle(tmp_path, marian_legacy, cli):
    model = tmp_path / "decoder_model_merged.onnx"
    shutil.copy(marian_legacy, model)
    shutil.copy(marian_legacy, tmp_path / "decoder_model_merged.onnx.bak")  # a run killed before it landed
    result = cli("repair", "--in-place", "--no-validate", model, model)
    assert result.exit_code == 0, result.stderr
    assert sha256(tmp_path / "decoder_model_merged.onnx.bak") == sha256(marian_legacy)
    assert cli("check", model).exit_code == 0


def test_a_backup_of_something_else_is_kept_and_refused(tmp_path, marian_legacy, cli):
    model = tmp_path / "decoder_model_merged.onnx"
    shutil.copy(marian_legacy, model)
    (tmp_path / "decoder_model_merged.onnx.bak").write_bytes(b"the user's own backup\n")
    line = one_error_line(cli("repair", "--in-place", "--no-validate", model, model))
    assert "already exists and differs" in line
    assert (tmp_path / "decoder_model_merged.onnx.bak").read_bytes() == b"the user's own backup\n"
    assert sha256(model) == sha256(marian_legacy)


# --- storage sharing ------------------------------------------------------------------------------------------


def inodes(directory: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(directory).as_posix(): (p.stat().st_dev, p.stat().st_ino)
            for p in directory.rglob("*") if p.is_file()}


@pytest.fixture
def export(tmp_path, marian_legacy) -> Path:
    folder = tmp_path / "opus-mt"
    shutil.copytree(EXPORT, folder)
    shutil.copy(marian_legacy, folder / "decoder_model_merged.onnx")
    (folder / "tokenizer.json").write_text('{"model": "tiny"}\n')
    return folder


def test_a_repaired_folder_shares_no_file_with_its_input(export, tmp_path, cli):
    out = tmp_path / "fixed"
    result = cli("repair", "--no-validate", export, out)
    assert result.exit_code == 0, result.stderr
    source, output = inodes(export), inodes(out)
    assert set(output) == set(source)
    assert not set(output.values()) & set(source.values()), "an output file is the input's own inode"
    config = (export / "config.json").read_text()
    with open(out / "config.json", "a") as edited:  # edited in place, as an editor or `>>` does
        edited.write("\n")
    assert (export / "config.json").read_text() == config


def test_link_data_shares_the_side_files_when_asked(export, tmp_path, cli):
    out = tmp_path / "fixed"
    assert cli("repair", "--no-validate", "--link-data", export, out).exit_code == 0
    source, output = inodes(export), inodes(out)
    assert output["config.json"] == source["config.json"]
    assert output["encoder_model.onnx"] == source["encoder_model.onnx"]


def test_a_folder_repaired_into_a_setgid_shared_folder_takes_its_group_like_cp_r(export, tmp_path, cli):
    if os.geteuid() != 0:
        pytest.skip("giving a folder another group needs root")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, -1, 65534)  # nogroup: a group that is not the user's own
    shared.chmod(0o2775)
    (export / "onnx").mkdir()
    shutil.copy(export / "decoder_model_merged.onnx", export / "onnx" / "decoder_model_merged.onnx")
    result = cli("repair", "--no-validate", export, shared / "fixed")
    assert result.exit_code == 0, result.stderr
    made = [shared / "fixed", *(shared / "fixed").rglob("*")]
    assert {p.relative_to(shared).as_posix(): p.stat().st_gid for p in made if p.stat().st_gid != 65534} == {}
    assert all(p.stat().st_mode & stat.S_ISGID for p in made if p.is_dir())
