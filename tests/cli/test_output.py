"""What a person reads: findings grouped one line per code whatever the model's depth, `--verbose` for every change
as graphfix always printed it, `--quiet` for the summary alone, validation text that says which steps held and
which failed, `graphfix explain`, shell completion, and `--help` examples that run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphfix.cli.layout import name_patterns
from graphfix.cli.report import case_line
from graphfix.findings import CODES, EXPLANATIONS
from graphfix.proof.cases import CaseResult

from ..conftest import ROOT, result_lines

GRAPHFIX = Path(sys.executable).with_name("graphfix")
EXPORT = ROOT / "sample_models" / "exports" / "current-marian-opset21"
WIDTH = 100
# `repair` of the legacy Marian sample (2 layers), as a person sees it.
MARIAN_GROUPED = [
    "GF101 x4   present.{0,1}.encoder.{key,value}: dummy (0, 4, 1, 8) -> Identity(past)",
    "GF103      encoder_sequence_length_out: bound to nothing -> encoder_sequence_length",
    "GF104 x4   present.{0,1}.decoder.{key,value}: length declared past + 1 -> past + new tokens",
]


def deep_decoder(layers: int) -> onnx.ModelProto:
    """A merged decoder shaped like optimum 1.x's, `layers` deep: the cache branch returns a dummy Constant for each
    encoder present (GF101), the encoder KV length is `encoder_sequence_length_out` (GF103), decoder presents
    declare `past + 1` (GF104): the legacy Marian sample's findings, at any depth."""
    def value(name, dims, elem=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, elem, dims)

    def dims(kind, declared):
        return ["batch_size", 4, declared if kind == "decoder" else "encoder_sequence_length_out", 8]

    kv = [f"{n}.{kind}.{part}" for n in range(layers) for kind in ("decoder", "encoder") for part in ("key", "value")]
    kind_of = {name: name.split(".")[1] for name in kv}
    past = [value(f"past_key_values.{name}", dims(kind_of[name], "past_decoder_sequence_length")) for name in kv]
    declared = "past_decoder_sequence_length + 1"
    dummy = numpy_helper.from_array(np.zeros((0, 4, 1, 8), np.float32))
    with_past = helper.make_graph(
        [helper.make_node("Identity", [f"past_key_values.{name}"], [f"cached.{name}"]) if kind_of[name] == "decoder"
         else helper.make_node("Constant", [], [f"cached.{name}"], value=dummy) for name in kv], "with_past", [],
        [value(f"cached.{name}", dims(kind_of[name], declared)) for name in kv])
    no_past = helper.make_graph(
        [helper.make_node("Identity", ["encoder_hidden_states"], [f"fresh.{name}"]) for name in kv], "no_past", [],
        [value(f"fresh.{name}", dims(kind_of[name], declared)) for name in kv])
    presents = [value(f"present.{name}", dims(kind_of[name], declared)) for name in kv]
    if_node = helper.make_node("If", ["use_cache_branch"], [p.name for p in presents], name="optimum::if",
                               then_branch=with_past, else_branch=no_past)
    inputs = [value("input_ids", ["batch_size", "decoder_sequence_length"], TensorProto.INT64),
              value("encoder_hidden_states", ["batch_size", "encoder_sequence_length", 32]), *past,
              value("use_cache_branch", [1], TensorProto.BOOL)]
    graph = helper.make_graph([if_node], "merged_decoder", inputs, presents)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def grouped_at_depth(layers: int) -> list[str]:
    """The grouped lines of a legacy-exporter decoder `layers` deep."""
    index, count = ("{0,1}" if layers == 2 else f"{{0..{layers - 1}}}"), f"x{2 * layers}"
    return [f"{'GF101 ' + count:<9}  present.{index}.encoder.{{key,value}}: dummy (0, 4, 1, 8) -> Identity(past)",
            "GF103      encoder_sequence_length_out: bound to nothing -> encoder_sequence_length",
            f"{'GF104 ' + count:<9}  present.{index}.decoder.{{key,value}}: length declared past + 1 -> past + new tokens"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    """Run in an empty directory, so the paths the output names are as short as a user's."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _old_change_line(change: dict) -> str:
    """A change as graphfix printed it before output was grouped (and as --verbose prints it)."""
    where = change["tensor"] or change["node"] or "-"
    return f"{change['code']} {where}: {change['message']}" + (f" -> {change['fix']}" if change["fix"] else "")


# --- grouped by code ------------------------------------------------------------------------------------------------

def test_repair_prints_one_line_per_code_then_a_summary_within_100_columns(in_tmp, marian_legacy, cli):
    shutil.copy(marian_legacy, "decoder_model_merged.onnx")
    result = cli("repair", "decoder_model_merged.onnx", "fixed.onnx")
    assert result.exit_code == 0, result.stderr
    *grouped, summary = result_lines(result.stdout)
    assert grouped == MARIAN_GROUPED == grouped_at_depth(2)  # the real export reads as the synthetic one
    assert summary.startswith("wrote fixed.onnx: 9 changes; proven in onnxruntime ")
    assert "(6 steps, max diff " in summary and "<= 1e-04); " in summary and summary.endswith(" s")
    assert max(map(len, result.stdout.splitlines())) <= WIDTH


@pytest.mark.parametrize("layers", [2, 24])
def test_a_synthetic_decoder_of_any_depth_reads_like_the_two_layer_sample(layers, in_tmp, cli):
    onnx.save(deep_decoder(layers), "deep.onnx")
    result = cli("repair", "--no-validate", "deep.onnx", "fixed.onnx")
    assert result.exit_code == 0, result.stderr
    *grouped, summary = result_lines(result.stdout)
    assert grouped == grouped_at_depth(layers) and len(grouped) == len(MARIAN_GROUPED)
    assert summary.startswith(f"wrote fixed.onnx: {4 * layers + 1} changes; not proven (--no-validate)")
    assert max(map(len, result.stdout.splitlines())) <= WIDTH
    verbose = cli("repair", "--no-validate", "--verbose", "deep.onnx", "fixed2.onnx")
    assert len(result_lines(verbose.stdout)) == 4 * layers + 2  # every change, then the summary


def test_check_groups_per_model_and_ends_with_one_summary_line(in_tmp, marian_legacy, repaired, cli):
    shutil.copy(marian_legacy, "broken.onnx")
    shutil.copy(repaired(marian_legacy), "fixed.onnx")
    onnx.save(deep_decoder(24), "deep.onnx")
    result = cli("check", "broken.onnx", "deep.onnx", "fixed.onnx")
    assert result.exit_code == 1
    *lines, summary = result_lines(result.stdout)
    assert lines == ["broken.onnx: 9 findings", *(f"  {line}" for line in MARIAN_GROUPED),
                     "deep.onnx: 97 findings", *(f"  {line}" for line in grouped_at_depth(24)), "fixed.onnx: ok"]
    assert summary.startswith("checked 3 files: 2 with findings (GF101 x52, GF103 x2, GF104 x52), 1 ok; ")
    assert max(map(len, result.stdout.splitlines())) <= WIDTH
    quiet = cli("check", "--quiet", "broken.onnx", "deep.onnx", "fixed.onnx")
    assert quiet.exit_code == 1 and len(quiet.stdout.splitlines()) == 1
    assert quiet.stdout.startswith("checked 3 files: 2 with findings (GF101 x52, GF103 x2, GF104 x52), 1 ok; ")


def test_verbose_prints_every_change_as_graphfix_always_did(in_tmp, marian_legacy, cli):
    shutil.copy(marian_legacy, "decoder_model_merged.onnx")
    changes = json.loads(cli("repair", "decoder_model_merged.onnx", "a.onnx", "--json").stdout)["changes"]
    verbose = cli("repair", "--verbose", "decoder_model_merged.onnx", "b.onnx").stdout.splitlines()
    assert verbose[:len(changes)] == [_old_change_line(c) for c in changes]
    assert verbose[len(changes)].startswith("validation (plain present->past loop vs full recompute, onnxruntime ")
    checked = json.loads(cli("check", "decoder_model_merged.onnx", "--json").stdout)["results"][0]["findings"]
    lines = result_lines(cli("check", "--verbose", "decoder_model_merged.onnx").stdout)
    assert lines[:-1] == [f"decoder_model_merged.onnx: {_old_change_line(f)}" for f in checked]


def test_quiet_prints_only_the_summary_and_errors_still_reach_stderr(in_tmp, marian_legacy, cli):
    shutil.copy(marian_legacy, "decoder_model_merged.onnx")
    result = cli("repair", "--quiet", "--no-validate", "decoder_model_merged.onnx", "fixed.onnx")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1
    assert result.stdout.startswith("wrote fixed.onnx: 9 changes")
    refused = cli("repair", "--quiet", "missing.onnx", "out.onnx")
    assert refused.exit_code == 2 and refused.stdout == "" and refused.stderr.startswith("error: no such file")
    both = cli("repair", "--quiet", "--verbose", "decoder_model_merged.onnx", "x.onnx")
    assert both.exit_code == 2 and "exclude each other" in both.stderr and not Path("x.onnx").exists()


def test_a_directory_run_groups_per_model_and_keeps_its_table(in_tmp, cli):
    shutil.copytree(EXPORT, "opus-mt")
    result = cli("repair", "--no-validate", "opus-mt", "fixed")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["decoder_model_merged.onnx:",
                         "  GF101 x4   present.{0,1}.encoder.{key,value}: dummy (0, 4, 1, 8) -> Identity(past)"]
    assert any(line.split()[:2] == ["decoder_model_merged.onnx", "GF101x4"] for line in lines)  # the table row
    assert result_lines(result.stdout)[-1].startswith("repaired opus-mt -> fixed: 1 of 1 merged decoder(s) changed")
    verbose = cli("repair", "--no-validate", "--verbose", "opus-mt", "fixed2").stdout.splitlines()
    assert sum(line.startswith("decoder_model_merged.onnx: GF101 present.") for line in verbose) == 4
    quiet = cli("repair", "--no-validate", "--quiet", "opus-mt", "fixed3").stdout.splitlines()
    assert len(quiet) == 1 and quiet[0].startswith("repaired opus-mt -> fixed3: ")


def test_patterns_stand_for_exactly_the_names_they_fold():
    assert name_patterns([f"present.{n}.encoder.{p}" for n in range(6) for p in ("key", "value")]) == [
        "present.{0..5}.encoder.{key,value}"]
    # Not a full product: the names that do not fit stay apart rather than be claimed by the pattern.
    assert name_patterns(["present.0.encoder.key", "present.1.encoder.key", "present.0.encoder.value"]) == [
        "present.{0,1}.encoder.key", "present.0.encoder.value"]
    assert name_patterns(["l.0", "l.1", "l.2", "l.5", "l.7", "l.8", "l.9"]) == ["l.{0..2,5,7..9}"]


# --- validation text ------------------------------------------------------------------------------------------------

def test_a_failed_proof_says_which_steps_held_which_failed_and_in_which_runtime(marian_legacy, cli):
    result = cli("validate", marian_legacy)
    assert result.exit_code == 1
    header, *cases, verdict = result.stdout.splitlines()
    assert header.startswith(f"{marian_legacy}: plain present->past loop vs full recompute (onnxruntime ")
    assert header.endswith(", tolerance 1e-04 x max(1, |logits|)):")
    for line in cases:  # the demo's "2 steps ... tokens 2/2: FAILED: step 3", now unmistakable
        assert "steps 1-2 matched, max diff " in line and "; step 3 FAILED: the present->past loop fails" in line
    assert verdict.startswith("FAILED: batch 1, source length 5, step 3 (steps 1-2 matched, max diff ")


def test_a_proof_that_held_shows_the_worst_difference_against_its_tolerance(marian_legacy, repaired, cli):
    result = cli("validate", repaired(marian_legacy), "--original", marian_legacy)
    assert result.exit_code == 0
    *_, reference, verdict = result.stdout.splitlines()
    assert reference == "  full-recompute logits vs --original: max diff 0: ok"
    assert verdict.startswith("ok: proven in onnxruntime ") and "(6 steps, max diff " in verdict
    assert "<= 1e-04)" in verdict


@pytest.mark.parametrize("case, expected", [
    (CaseResult(1, 5, steps=3, max_abs_diff=0.5, tokens_agree=2, tokens_total=3,
                failed_step=3, failure="logits differ from full recompute by 0.5 (tolerance 0.0001)"),
     "  batch 1, source length 5: steps 1-2 matched; step 3 FAILED: logits differ from full recompute by 0.5 "
     "(tolerance 0.0001)"),
    (CaseResult(3, 11, steps=8, max_abs_diff=2e-8, tokens_agree=24, tokens_total=24,
                failed_step=8,
                failure="present.0.encoder.key has shape (0, 4, 1, 8), unusable as past for batch 3"),
     "  batch 3, source length 11: steps 1-8 matched, max diff 2e-08; FAILED after step 8: present.0.encoder.key "
     "has shape (0, 4, 1, 8), unusable as past for batch 3"),
    (CaseResult(1, 5, steps=8, max_abs_diff=3e-4, tokens_agree=8, tokens_total=8),
     "  batch 1, source length 5: steps 1-8 match full recompute, max diff 0.0003, within tolerance 1e-04 x "
     "max(1, |logits|), tokens 8/8"),
])
def test_a_failed_step_is_never_counted_as_proven(case, expected):
    assert case_line(case, 1e-4) == expected


# --- explain --------------------------------------------------------------------------------------------------------

def test_every_code_has_an_explanation():
    assert sorted(EXPLANATIONS) == sorted(CODES)
    for code, explanation in EXPLANATIONS.items():
        assert all(explanation.entry().values()), code
        assert explanation.example.startswith(f"{code} "), code


@pytest.mark.parametrize("code", sorted(CODES))
def test_explain_code_says_what_breaks_who_writes_it_the_fix_and_why_it_is_safe(code, cli):
    result = cli("explain", code.lower())
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{code}: {CODES[code]}"
    assert [line.split()[0] for line in lines if line and not line.startswith(" ")][1:] == [
        "breaks", "written", "fix", "safe", "example"]
    assert max(map(len, lines)) <= WIDTH


def test_explain_lists_every_code_and_refuses_an_unknown_one(cli):
    listed = cli("explain")
    assert listed.exit_code == 0 and [line.split()[0] for line in listed.stdout.splitlines()[:len(CODES)]] == list(CODES)
    unknown = cli("explain", "GF999")
    assert unknown.exit_code == 2 and unknown.stdout == "" and "unknown finding code 'GF999'" in unknown.stderr
    document = json.loads(cli("explain", "GF101", "--json").stdout)
    assert document["command"] == "explain" and document["codes"][0]["code"] == "GF101"


def test_explain_runs_offline_without_loading_a_runtime():
    script = ("import sys\nfrom graphfix.__main__ import main\nsys.argv = ['graphfix', 'explain', 'GF305']\n"
              "try:\n    main()\nexcept SystemExit:\n    pass\n"
              "print(sorted(m for m in ('onnxruntime', 'numpy', 'onnx.checker') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "http_proxy": "http://0.0.0.0:9", "https_proxy": "http://0.0.0.0:9"})
    assert proc.stdout.splitlines()[0] == "GF305: " + CODES["GF305"] and proc.stdout.splitlines()[-1] == "[]"


# --- shell completion and help examples -----------------------------------------------------------------------------

def test_shell_completion_completes_commands_and_finding_codes():
    # What `--show-completion bash` prints, asked for without it: that option asks shellingham which shell runs
    # graphfix, and fails ("Shell  not supported") when no shell is among the test's parent processes (CI, an IDE).
    shown = subprocess.run([GRAPHFIX], env={**os.environ, "_GRAPHFIX_COMPLETE": "source_bash"}, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and "_graphfix_completion" in shown.stdout

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_GRAPHFIX_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}
        return subprocess.run([GRAPHFIX], env=env, capture_output=True, text=True, timeout=60).stdout.split()

    assert complete("graphfix ex") == ["explain"]
    assert complete("graphfix explain GF30") == ["GF301", "GF302", "GF303", "GF304", "GF305"]


def _examples(command: str) -> list[str]:
    help_text = subprocess.run([GRAPHFIX, command, "--help"], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "COLUMNS": "200"}).stdout
    lines = [line.strip() for line in help_text.splitlines()]
    start = lines.index("Examples:") + 1
    return [line for line in lines[start:lines.index("", start)]]


@pytest.mark.slow  # every help example, run
def test_every_help_example_runs_on_real_samples(tmp_path, marian_legacy):
    commands = ["repair", "check", "describe", "validate", "split", "explain"]  # in the order a user goes through them
    from typer.main import get_command

    from graphfix.cli import app

    assert sorted(get_command(app).commands) == sorted(commands)  # type: ignore[attr-defined]
    shutil.copy(marian_legacy, tmp_path / "decoder_model_merged.onnx")
    (tmp_path / "models" / "en-de").mkdir(parents=True)
    shutil.copy(marian_legacy, tmp_path / "models" / "en-de" / "decoder_model_merged.onnx")
    shutil.copytree(EXPORT, tmp_path / "opus-mt-en-de")
    env = {**os.environ, "PATH": f"{GRAPHFIX.parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        examples = _examples(command)
        assert examples and all(line.startswith(f"graphfix {command}") for line in examples), (command, examples)
        for example in examples:
            ran = subprocess.run(example, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=600)
            # 1 is check's verdict on a model with findings; anything else is an example that does not run.
            assert ran.returncode in (0, 1) and "error:" not in ran.stderr, (example, ran.stdout, ran.stderr)
            assert ran.returncode == (1 if example == "graphfix check models/*/decoder_model_merged.onnx" else 0), \
                (example, ran.stdout)


@pytest.mark.slow  # a six-layer export
def test_a_six_layer_real_export_prints_as_many_lines_as_a_two_layer_one(cli, tmp_path, monkeypatch):
    """sample_models/deep/: the legacy exporter's Marian at opus-mt's depth (6 decoder layers, same tiny widths):
    the grouped output has the two-layer sample's line count, every line within 100 columns; --verbose has a line
    per change."""
    from ..conftest import ROOT

    monkeypatch.chdir(tmp_path)  # the summary names OUT as given: short here, so the width is the lines' own
    outputs = {}
    for name, path in {"2": ROOT / "sample_models" / "legacy" / "marian.onnx",
                       "6": ROOT / "sample_models" / "deep" / "legacy-marian-6-layers.onnx"}.items():
        result = cli("repair", path, f"{name}.onnx")
        assert result.exit_code == 0, result.stderr
        assert all(len(line) <= 100 for line in result.stdout.splitlines()), result.stdout
        outputs[name] = result_lines(result.stdout)
    assert len(outputs["6"]) == len(outputs["2"]) == 4
    assert outputs["6"][0].startswith("GF101 x12  present.{0..5}.encoder.{key,value}")
    verbose = cli("repair", "--verbose", ROOT / "sample_models" / "deep" / "legacy-marian-6-layers.onnx",
                  "v.onnx")
    assert sum(line.startswith("GF") for line in verbose.stdout.splitlines()) == 25  # 12 + 1 + 12 changes
