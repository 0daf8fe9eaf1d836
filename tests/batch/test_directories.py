"""Model directories: Optimum and onnx-community/transformers.js layouts repaired into drop-in replacements, in
place with backups, in parallel, and in batches from make. The directories are assembled in tmp from the committed
exporter samples and the real Optimum export in sample_models/exports/, plus dummy config and tokenizer files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime
import pytest

from graphfix import check, find_merged_decoders, repair_directory
from graphfix.batch.layouts import VARIANTS, merged_decoder_names
from graphfix.errors import BadInputError, NotAMergedDecoderError

from ..conftest import ROOT, SAMPLES, drain_pty, result_lines, sha256

EXPORT = ROOT / "sample_models" / "exports" / "current-marian"
SIDE_FILES = {"config.json": '{"model_type": "marian"}\n', "generation_config.json": "{}\n",
              "tokenizer.json": '{"version": "1.0"}\n', "tokenizer_config.json": "{}\n", "onnx/README.md": "dummy\n"}


def make_model_dir(root: Path, decoders: dict[str, Path], with_export: bool = True) -> Path:
    """A model directory: `decoders` (relative path -> committed sample), the real export's other models and
    dummy config/tokenizer files."""
    root.mkdir(parents=True)
    for name, text in SIDE_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    if with_export:
        for model in ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"):
            shutil.copy(EXPORT / model, root / model)
    for name, sample in decoders.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample, root / name)
    return root


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_layout_and_variant_name_is_looked_for():
    names = merged_decoder_names()
    assert names[0] == "decoder_model_merged.onnx"
    assert {f"onnx/decoder_model_merged{v}.onnx" for v in VARIANTS} <= set(names)
    assert {"_quantized", "_fp16", "_int8", "_uint8", "_q4", "_q4f16", "_bnb4"} <= set(VARIANTS)


@pytest.mark.slow  # every variant of a directory
def test_a_transformers_js_directory_with_every_variant_is_repaired_in_layout_order(tmp_path):
    # Each variant gets a different real sample, so a mix-up between files would show in the results.
    decoders = {f"onnx/decoder_model_merged{v}.onnx": SAMPLES[i] for i, v in enumerate(VARIANTS)}
    source = make_model_dir(tmp_path / "onnx-community", decoders, with_export=False)
    before = tree(source)
    result = repair_directory(source, tmp_path / "fixed", jobs=2)
    assert [m.path for m in result.models] == list(decoders)
    for model in result.models:
        assert model.result.changed and model.result.validation.ok
        assert model.result.output == tmp_path / "fixed" / model.path
        assert check(tmp_path / "fixed" / model.path).findings == []
    assert tree(source) == before  # input untouched
    assert set(tree(tmp_path / "fixed")) == set(before)
    for name in SIDE_FILES:  # carried over as copies: editing the output never edits the input
        assert not os.path.samefile(source / name, tmp_path / "fixed" / name)
        assert sha256(source / name) == sha256(tmp_path / "fixed" / name)


def test_an_optimum_export_becomes_a_drop_in_replacement_with_external_data_copied_not_linked(tmp_path, marian_current):
    source = make_model_dir(tmp_path / "opus-mt", {"decoder_model_merged.onnx": marian_current})
    # An encoder with its weights in external data, as large exports have (onnx's own converter, no other change).
    encoder = onnx.load(source / "encoder_model.onnx")
    onnx.save(encoder, source / "encoder_model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="encoder_model.onnx_data", size_threshold=0)
    result = repair_directory(source, tmp_path / "out")
    out = tmp_path / "out"
    assert "encoder_model.onnx_data" in result.copied and result.linked == []
    assert "encoder_model.onnx" in result.copied and "decoder_with_past_model.onnx" in result.copied
    assert os.stat(out / "encoder_model.onnx_data").st_nlink == 1
    assert sha256(out / "encoder_model.onnx_data") == sha256(source / "encoder_model.onnx_data")
    onnx.checker.check_model(os.fspath(out / "encoder_model.onnx"), full_check=True)  # refuses linked data
    for name in ("decoder_model.onnx", "decoder_with_past_model.onnx", "config.json"):
        assert not os.path.samefile(source / name, out / name)
        assert sha256(source / name) == sha256(out / name)
    assert check(out / "decoder_model_merged.onnx").findings == []
    assert check(source / "decoder_model_merged.onnx").findings  # the original is still the original


def test_a_merged_decoder_with_external_data_gets_its_own_copy_of_the_data(tmp_path, marian_legacy):
    source = make_model_dir(tmp_path / "big", {}, with_export=False)
    onnx.save(onnx.load(marian_legacy), source / "decoder_model_merged.onnx", save_as_external_data=True,
              location="decoder_model_merged.onnx_data", size_threshold=0)
    repair_directory(source, tmp_path / "out")
    data = tmp_path / "out" / "decoder_model_merged.onnx_data"
    assert data.is_file() and data.stat().st_nlink == 1
    assert sha256(data) == sha256(source / "decoder_model_merged.onnx_data")
    assert check(tmp_path / "out" / "decoder_model_merged.onnx").findings == []


@pytest.mark.slow  # a directory twice
def test_parallel_jobs_give_the_bytes_of_a_sequential_run(tmp_path):
    decoders = {"decoder_model_merged.onnx": SAMPLES[0], "onnx/decoder_model_merged.onnx": SAMPLES[9],
                "onnx/decoder_model_merged_int8.onnx": SAMPLES[3]}
    source = make_model_dir(tmp_path / "m", decoders, with_export=False)
    sequential = repair_directory(source, tmp_path / "one", jobs=1)
    parallel = repair_directory(source, tmp_path / "three", jobs=3)
    assert [m.path for m in parallel.models] == [m.path for m in sequential.models] == list(decoders)
    assert tree(tmp_path / "one") == tree(tmp_path / "three")


def test_a_failing_decoder_leaves_no_output_directory_and_names_the_file(tmp_path, marian_legacy, cli):
    source = make_model_dir(tmp_path / "m", {"onnx/decoder_model_merged.onnx": marian_legacy})
    shutil.copy(EXPORT / "encoder_model.onnx", source / "onnx" / "decoder_model_merged_fp16.onnx")
    named = f"{source / 'onnx' / 'decoder_model_merged_fp16.onnx'}: not a merged decoder"  # its folder named too
    with pytest.raises(NotAMergedDecoderError, match=f"^{re.escape(named)}"):
        repair_directory(source, tmp_path / "out", jobs=2)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no staging debris either
    result = cli("repair", source, tmp_path / "out")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {named}") and "nothing to repair" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_a_directory_without_a_merged_decoder_is_bad_input(tmp_path, cli):
    source = make_model_dir(tmp_path / "encoder-only", {"encoder_model.onnx": EXPORT / "encoder_model.onnx"},
                            with_export=False)  # with the split pair beside it, repair would merge it (GF401)
    for command in (("repair", source, tmp_path / "out"), ("check", source), ("validate", source)):
        result = cli(*command)
        assert result.exit_code == 2, command
        assert result.stderr.startswith(f"error: no merged decoder in directory {source}") and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_existing_output_directory_with_files_is_refused_and_left_alone(tmp_path, marian_legacy):
    source = make_model_dir(tmp_path / "m", {"decoder_model_merged.onnx": marian_legacy})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    with pytest.raises(BadInputError, match="already exists and is not an empty directory"):
        repair_directory(source, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]
    with pytest.raises(BadInputError, match="inside the input"):
        repair_directory(source, source / "fixed")
    (tmp_path / "empty").mkdir()
    repair_directory(source, tmp_path / "empty")  # an empty directory is taken over
    assert check(tmp_path / "empty" / "decoder_model_merged.onnx").findings == []


def test_in_place_repairs_every_decoder_keeps_backups_and_touches_nothing_else(tmp_path, cli):
    decoders = {"decoder_model_merged.onnx": SAMPLES[3], "onnx/decoder_model_merged_quantized.onnx": SAMPLES[12]}
    source = make_model_dir(tmp_path / "m", decoders)
    before = tree(source)
    refused = cli("repair", source, source)
    assert refused.exit_code == 2 and "--in-place" in refused.stderr
    result = cli("repair", source, source, "--in-place")
    assert result.exit_code == 0, result.stderr
    after = tree(source)
    for name in decoders:
        assert after[f"{name}.bak"] == before[name]
        assert after[name] != before[name] and check(source / name).findings == []
    assert {k: v for k, v in after.items() if k not in decoders and not k.endswith(".bak")} == \
        {k: v for k, v in before.items() if k not in decoders}


def test_in_place_refuses_before_replacing_anything_when_a_backup_exists(tmp_path, marian_legacy):
    decoders = {"decoder_model_merged.onnx": marian_legacy, "onnx/decoder_model_merged.onnx": marian_legacy}
    source = make_model_dir(tmp_path / "m", decoders, with_export=False)
    (source / "onnx" / "decoder_model_merged.onnx.bak").write_text("an older backup")
    before = tree(source)
    with pytest.raises(BadInputError, match="backup .*onnx/decoder_model_merged.onnx.bak already exists"):
        repair_directory(source, source, in_place=True)
    assert tree(source) == before


def test_check_and_validate_take_a_directory(tmp_path, marian_legacy, repaired, cli):
    source = make_model_dir(tmp_path / "m", {"decoder_model_merged.onnx": marian_legacy,
                                             "onnx/decoder_model_merged_q4.onnx": repaired(marian_legacy)})
    assert find_merged_decoders(source) == ["decoder_model_merged.onnx", "onnx/decoder_model_merged_q4.onnx"]
    checked = cli("check", source)
    assert checked.exit_code == 1
    assert f"{source / 'onnx/decoder_model_merged_q4.onnx'}: ok" in checked.stdout
    assert f"{source / 'decoder_model_merged.onnx'}: 9 findings" in checked.stdout
    validated = cli("validate", source)
    assert validated.exit_code == 1  # the unrepaired one fails, the repaired one holds
    verdicts = [line for line in validated.stdout.splitlines() if line.startswith(("ok: ", "FAILED"))]
    assert len(verdicts) == 2 and verdicts[0].startswith("FAILED: batch 1") and verdicts[1].startswith("ok: ")


def test_a_directory_run_ends_with_one_table_row_per_decoder(tmp_path, marian_legacy, repaired, cli):
    source = make_model_dir(tmp_path / "m", {"decoder_model_merged.onnx": marian_legacy,
                                             "onnx/decoder_model_merged_uint8.onnx": repaired(marian_legacy)})
    result = cli("repair", source, tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in result.stdout.splitlines()
            if line.strip().startswith(("decoder_model_merged", "onnx/"))}
    ort = onnxruntime.__version__
    assert rows["decoder_model_merged.onnx"].startswith(f"GF101x4 GF103 GF104x4 9 IR 9, opset 14 decodes in {ort} ")
    assert rows["onnx/decoder_model_merged_uint8.onnx"].startswith(f"- 0 IR 9, opset 14 decodes in {ort} ")
    assert result_lines(result.stdout)[-1].startswith(f"repaired {source} -> {tmp_path / 'out'}: 1 of 2")
    assert "\x1b[" not in result.stdout + result.stderr  # no progress or colour codes outside a terminal


def test_progress_is_drawn_on_a_terminal_stderr_only(tmp_path, marian_legacy):
    import pty

    source = make_model_dir(tmp_path / "m", {"decoder_model_merged.onnx": marian_legacy})
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TERM")} | {"TERM": "xterm", "COLUMNS": "120"}
    proc = subprocess.run([sys.executable, "-m", "graphfix", "repair", str(source), str(tmp_path / "out")],
                          stdout=subprocess.PIPE, stderr=secondary, env=env, timeout=120)
    os.close(secondary)
    drawn = drain_pty(primary)
    assert proc.returncode == 0
    assert b"files" in drawn and b"\x1b[" in drawn  # the rich bar, on the terminal
    assert b"\x1b[" not in proc.stdout and b"files" not in proc.stdout.split(b"\n")[-2]


@pytest.mark.slow  # make over a tree
def test_make_repair_is_one_graphfix_run_and_a_rerun_does_nothing_until_an_input_changes(tmp_path, marian_legacy):
    if shutil.which("make") is None:
        pytest.fail("make is needed for the batch target")
    models = tmp_path / "models"
    make_model_dir(models / "opus-mt-en-de", {"decoder_model_merged.onnx": marian_legacy})
    make_model_dir(models / "t5-small", {"onnx/decoder_model_merged.onnx": SAMPLES[16],
                                         "onnx/decoder_model_merged_quantized.onnx": SAMPLES[7]}, with_export=False)
    graphfix = Path(sys.executable).parent / "graphfix"
    command = ["make", "--no-print-directory", "-C", str(ROOT), "repair", f"MODELS={models}", "JOBS=2",
               "ARGS=--quiet --no-validate", f"OUT={tmp_path / 'out'}", f"GRAPHFIX={graphfix}"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(f"{graphfix} repair ") == 1  # one run for the whole tree
    for name in ("opus-mt-en-de/decoder_model_merged.onnx", "t5-small/onnx/decoder_model_merged.onnx",
                 "t5-small/onnx/decoder_model_merged_quantized.onnx"):
        assert check(tmp_path / "out" / name).findings == []
    assert (tmp_path / "out" / "opus-mt-en-de" / "tokenizer.json").is_file()
    report = json.loads((tmp_path / "out-report.json").read_text())
    assert report["exit_code"] == 0 and [m["folder"] for m in report["models"]] == ["opus-mt-en-de", "t5-small"]
    outputs = tree(tmp_path / "out")

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"{graphfix} repair" not in again.stdout
    assert tree(tmp_path / "out") == outputs

    later = os.stat(models / "t5-small" / "config.json").st_mtime + 10
    os.utime(models / "t5-small" / "config.json", (later, later))  # an input changed: the tree is redone
    third = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and third.stdout.count(f"{graphfix} repair ") == 1, third.stderr

    before = tree(models)
    for overlapping, said in ((models, "output is the input"), (tmp_path, "overlaps the input")):
        refused = subprocess.run([*command[:-2], f"OUT={overlapping}", command[-1]], capture_output=True, text=True)
        assert refused.returncode != 0 and said in refused.stderr
    no_out = subprocess.run(command[:-2] + [command[-1]], capture_output=True, text=True)
    assert no_out.returncode != 0 and "usage: make repair" in no_out.stderr
    assert tree(models) == before  # nothing removed or written by a refused run
