"""A check to trust before deploying: with --target-ort it covers every ONNX model of an export (an encoder the
release refuses is a finding, not "ok"), it walks a tree of model directories, its --json keeps one shape whatever
fails, and every summary names the oldest onnxruntime release that loads the models; one step number everywhere."""

from __future__ import annotations

import json
import shutil

from graphfix import check
from graphfix.findings import EXPLANATIONS

from ..conftest import ROOT

EXPORT = ROOT / "sample_models" / "exports" / "current-marian-opset21"


def test_gf101_names_step_3_as_validate_and_explain_do(marian_legacy):
    (message,) = {f.message.split("; ", 1)[1] for f in check(marian_legacy).findings if f.code == "GF101"}

    assert message == "a client feeding presents back as past fails at step 3"
    assert "crashes at step 3" in EXPLANATIONS["GF101"].breaks


def test_check_with_a_target_is_not_ok_while_the_exports_encoder_cannot_load_there(cli, tmp_path):
    fixed = tmp_path / "fixed"
    assert cli("repair", "--no-validate", "--skip-target-load", "--target-ort", "1.16", EXPORT, fixed).exit_code == 0
    clean = cli("check", "--target-ort", "1.16", fixed)
    assert clean.exit_code == 0, clean.output
    assert "encoder_model.onnx: ok" in clean.stdout  # the encoder is checked too, not only the merged decoder

    shutil.copy(EXPORT / "encoder_model.onnx", fixed / "encoder_model.onnx")  # IR 10 / opset 21 again
    result = cli("check", "--target-ort", "1.16", fixed)

    assert result.exit_code == 1, result.output
    assert f"{fixed / 'encoder_model.onnx'}: 2 findings" in result.stdout
    assert "GF301" in result.stdout and "GF302" in result.stdout


def test_check_walks_a_tree_of_model_directories(cli, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(EXPORT, models / "opus-mt-en-zh")
    (models / "nested" / "opus-mt-en-de" / "onnx").mkdir(parents=True)
    shutil.copy(ROOT / "sample_models" / "current" / "marian.onnx",
                models / "nested" / "opus-mt-en-de" / "onnx" / "decoder_model_merged.onnx")

    result = cli("check", "--json", models)

    assert result.exit_code == 1
    paths = [r["path"] for r in json.loads(result.stdout)["results"]]
    assert paths == [str(models / "nested" / "opus-mt-en-de" / "onnx" / "decoder_model_merged.onnx"),
                     str(models / "opus-mt-en-zh" / "decoder_model_merged.onnx")]


def test_check_json_keeps_its_shape_when_a_path_holds_no_model(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("check", "--json", tmp_path / "empty", EXPORT)

    assert result.exit_code == 2
    document = json.loads(result.stdout)
    # exit 2 is a failure like any other command's (docs/json-schema.md): `error`, `exit_code`, `validation` (null)
    assert set(document) == {"schema", "command", "ok", "exit_code", "error", "results", "validation"}
    first, second = document["results"]
    assert document["exit_code"] == 2 and document["error"] == first["error"] and document["validation"] is None
    assert first["error"].startswith("no merged decoder in directory") and second["findings"]


def test_summaries_name_the_oldest_release_that_loads_the_output_and_suggest_target_ort(cli, tmp_path):
    checked = cli("check", EXPORT).stdout.splitlines()
    repaired = cli("repair", "--no-validate", EXPORT, tmp_path / "fixed").stdout.splitlines()
    retargeted = cli("repair", "--no-validate", "--skip-target-load", "--target-ort", "1.16", EXPORT,
                     tmp_path / "fixed-1.16").stdout.splitlines()
    single = cli("repair", "--no-validate", EXPORT / "decoder_model_merged.onnx", tmp_path / "d.onnx").stdout

    assert checked[-4].startswith("checked 1 file: 1 with findings")  # the summary, what loads it, what is next
    assert checked[-3] == "as it is, it loads in onnxruntime >= 1.18 (older: --target-ort X.Y)"
    assert checked[-2:] == [f"next: graphfix repair {EXPORT} OUT", "next: graphfix explain GF101"]
    assert repaired[-1] == "its models load in onnxruntime >= 1.18 (older: --target-ort X.Y)"
    assert retargeted[-1] == "its models load in onnxruntime >= 1.16"  # asked for 1.16: nothing to suggest
    assert single.splitlines()[-1] == "the output loads in onnxruntime >= 1.18 (older: --target-ort X.Y)"
    assert cli("check", "--quiet", EXPORT).stdout.splitlines()[-1].startswith("checked 1 file")


def test_a_repair_result_carries_the_oldest_release_that_loads_its_output(marian_legacy, tmp_path):
    from graphfix import repair

    assert repair(marian_legacy, tmp_path / "fixed.onnx", validate=False).oldest_onnxruntime == "1.15"


def test_validate_on_1_16_3_keeps_onnxruntimes_reason_to_the_release_it_runs(cli):
    result = cli("validate", "--ort-version", "1.16.3", EXPORT / "decoder_model_merged.onnx")

    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        "cannot load decoder_model_merged.onnx: Opset 21 ... Current official support for domain ai.onnx is till "
        "opset 19"), result.stderr
