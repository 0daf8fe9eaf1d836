"""The shape of graphfix as a contract: one client loop for every proof, one commit path for every writer, passes
held to what they declare, one error layer for every way a command can end, and stages that import only what they
need. Edge cases are built with onnx.helper in a few lines each; the main path uses the committed samples."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from graphfix import NotAMergedDecoderError, PassCrashedError, RepairRefusedError
from graphfix.findings import CODES, Finding
from graphfix.model.graph import all_graphs
from graphfix.model.merged_decoder import PlainModel, find_merged_decoder
from graphfix.passes import ANY_MODEL, PIPELINE, pipeline, repair_pass, run_passes
from graphfix.proof.cases import ProofRequest
from graphfix.proof.child import PACKAGE
from graphfix.targets import parse_release

from ..conftest import ROOT, proof_process_command

# --- one client loop ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_cache_path_broken(tmp_path) -> Path:
    """current/bart.onnx with the two inputs of /model/decoder/Reshape swapped (found by `make fuzz`): it loads and
    its first step runs, but full recompute over a longer prefix fails inside onnxruntime."""
    model = onnx.load(ROOT / "sample_models" / "current" / "bart.onnx")
    reshape = next(n for g, _ in all_graphs(model.graph) for n in g.node if n.name == "/model/decoder/Reshape")
    reshape.input[0], reshape.input[1] = reshape.input[1], reshape.input[0]
    source = tmp_path / "decoder_model_merged.onnx"
    onnx.save(model, source)
    return source


def test_split_and_repair_give_the_same_verdict_when_full_recompute_fails(cli, tmp_path, no_cache_path_broken):
    """They used to run two decode loops: repair called this a validation failure (exit 1), split printed
    `error: unexpected Fail: [ONNXRuntimeError] ...` (exit 2)."""
    repaired = cli("repair", no_cache_path_broken, tmp_path / "out.onnx")
    split = cli("split", no_cache_path_broken, tmp_path / "split")
    for result in (repaired, split):
        assert result.exit_code == 1, result.stderr
        assert len(result.stderr.splitlines()) == 1
        assert "full recompute (no past) fails in onnxruntime: Reshape node '/model/decoder/Reshape'" in result.stderr
        assert "unexpected" not in result.stderr
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "split").exists()


def test_split_proof_can_run_in_another_onnxruntime_like_validate(marian_current, tmp_path):
    """One loop, one request: the split pair's proof takes --ort-version as validate does (the release installed
    here is enough to show the path; test_target_runtime runs real old releases)."""
    import onnxruntime

    from graphfix import split

    result = split(marian_current, tmp_path / "split", ort_version=onnxruntime.__version__)
    assert result.validation is not None and result.validation.ok
    assert result.validation.onnxruntime == onnxruntime.__version__
    assert result.validation.original is not None and result.validation.original["max_abs_diff"] == 0.0


def test_the_proof_process_imports_only_the_client_loop_and_its_standard_library_modules(marian_current, repaired):
    """What runs inside an isolated runtime: graphfix's folder as the package, under `python -I`; of graphfix it
    imports the client loop and the few modules it names, never a stage that needs onnx."""
    model = str(repaired(marian_current))
    request = ProofRequest(model=model, model_with_past=model, tolerance=1e-4, steps=3, batches=(1,),
                           source_lengths=(5,)).to_json()
    command = proof_process_command("from graphfix.proof.client_loop import serve; serve(60); "
                                    "print(sorted(m for m in sys.modules if m.startswith('graphfix')))")
    proc = subprocess.run(command, input=request + "\n", capture_output=True, text=True, check=True)
    answer, modules = proc.stdout.splitlines()
    assert json.loads(answer)["result"]["cases"][0]["failure"] is None
    assert set(eval(modules)) == {"graphfix", "graphfix.errors", "graphfix.signature", "graphfix.proof",
                                  "graphfix.proof.cases", "graphfix.proof.client_loop", "graphfix.proof.paths"}


def test_the_client_loop_imports_nothing_beyond_numpy_onnxruntime_and_graphfix_standard_library_modules():
    source = (PACKAGE / "proof" / "client_loop.py").read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
    stdlib = set(sys.stdlib_module_names)
    allowed = {"numpy", "onnxruntime", "__future__", "..errors", "..signature", ".cases", ".paths"}
    assert {name for name in imported if name not in stdlib} <= allowed


# --- passes as a contract -------------------------------------------------------------------------------------------


def _merged_decoder() -> onnx.ModelProto:
    def value(name, dims=("b", 2, "s", 4)):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))

    branch = helper.make_graph([helper.make_node("Identity", ["past_key_values.0.encoder.key"], ["k"])], "cache",
                               [], [value("k")])
    other = helper.make_graph([helper.make_node("Identity", ["encoder_hidden_states"], ["k2"])], "no_cache", [],
                              [value("k2")])
    graph = helper.make_graph(
        [helper.make_node("If", ["use_cache_branch"], ["present.0.encoder.key"], then_branch=branch,
                          else_branch=other)], "decoder",
        [helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1]), value("encoder_hidden_states"),
         value("past_key_values.0.encoder.key")], [value("present.0.encoder.key")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_every_pass_has_a_name_a_scope_and_only_documented_codes():
    for repair in (*PIPELINE, *pipeline(parse_release("1.16"))[len(PIPELINE):]):
        assert repair.name and repair.codes and repair.codes <= set(CODES), repair
    assert [p.name for p in pipeline(parse_release("1.16"))] == [
        "encoder_kv_passthrough", "fixed_shapes", "kv_dim_names", "truthful_kv_shapes", "attributes_as_inputs",
        "float16_fallbacks", "retarget_domains", "retarget_versions"]


def test_a_pass_cannot_declare_an_undocumented_code():
    with pytest.raises(ValueError, match="GF999"):
        repair_pass("GF999")(lambda subject: [])


def test_a_refusal_names_the_pass_and_keeps_its_type():
    @repair_pass("GF101")
    def refuses(subject):
        raise RepairRefusedError("ambiguous mapping")

    with pytest.raises(RepairRefusedError, match="^refuses: ambiguous mapping$"):
        run_passes(find_merged_decoder(_merged_decoder()), [refuses])


def test_a_crashing_pass_is_named_with_the_passes_before_it_and_labelled_unexpected():
    @repair_pass("GF101")
    def crashes(subject):
        return [][1]

    decoder = find_merged_decoder(_merged_decoder())
    with pytest.raises(PassCrashedError, match=r"^unexpected IndexError in pass crashes \(after "
                                               r"encoder_kv_passthrough, fixed_shapes\)"):
        run_passes(decoder, [*PIPELINE[:2], crashes])


def test_a_finding_with_an_undeclared_code_is_a_bug_of_the_pass():
    @repair_pass("GF101")
    def lies(subject):
        return [Finding(code="GF301", message="not mine")]

    with pytest.raises(PassCrashedError, match="undeclared code GF301"):
        run_passes(find_merged_decoder(_merged_decoder()), [lies])


def test_merged_decoder_passes_do_not_run_on_other_models_and_any_model_passes_do():
    seen = []

    @repair_pass("GF301", scope=ANY_MODEL)
    def everywhere(subject):
        seen.append("everywhere")
        return []

    encoder = PlainModel(helper.make_model(helper.make_graph([], "encoder", [], [])))
    assert run_passes(encoder, [*PIPELINE, everywhere]) == [] and seen == ["everywhere"]


def test_check_refuses_a_model_that_is_not_a_merged_decoder_unless_the_target_needs_something_of_it(tmp_path):
    """One verdict per model: --target-ort used to turn "not a merged decoder" (exit 2) into "ok". A model the
    target release loads as it is keeps that verdict; one it refuses (IR 10 in onnxruntime 1.16) is findings: the
    file is deployed with the decoder, and "not a merged decoder" would hide that the release refuses it."""
    from graphfix import check

    def encoder(ir_version: int) -> Path:
        path = tmp_path / f"encoder_ir{ir_version}.onnx"
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "encoder",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        onnx.save(helper.make_model(graph, ir_version=ir_version, opset_imports=[helper.make_opsetid("", 17)]), path)
        return path

    for target in (None, "1.16"):
        with pytest.raises(NotAMergedDecoderError):
            check(encoder(8), target_ort=target)
    with pytest.raises(NotAMergedDecoderError):
        check(encoder(10))
    assert check(encoder(10), target_ort="1.16").findings


# --- one error layer ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, mentions", [
    (["repair"], "missing argument SOURCE"),
    (["repair", "a.onnx"], "missing argument OUT (see: graphfix repair --help)"),
    (["repair", "a.onnx", "b.onnx", "--jobs", "0"], "--jobs"),
    (["check", "--no-such-option", "a.onnx"], "No such option"),
    (["frobnicate"], "No such command"),
], ids=["no-arguments", "missing-out", "jobs-0", "unknown-option", "unknown-command"])
def test_a_usage_error_is_one_error_line_and_exit_2(cli, args, mentions):
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1, result.stderr
    assert mentions in result.stderr and "╭" not in result.stderr
    assert result.stdout == ""


def test_a_usage_error_with_json_is_one_json_document_on_stdout(cli):
    result = cli("repair", "a.onnx", "b.onnx", "--jobs", "0", "--json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["exit_code"] == 2 and "--jobs" in document["error"]
    assert document["command"] == "repair"


def test_a_path_with_a_newline_is_still_one_error_line(cli, tmp_path):
    result = cli("check", tmp_path / "two\nlines.onnx")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and "two\\nlines" in result.stderr


def test_help_paragraphs_are_written_to_be_rendered():
    """Hard-wrapped docstrings made rich re-wrap each source line on its own: ragged help."""
    from typer.main import get_command

    from graphfix.cli import app

    group = get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for paragraph in (command.help or "").split("\n\n"):
            if not paragraph.startswith("Example"):
                assert "\n" not in paragraph, (name, paragraph)
        assert command.epilog and "Exit codes" in command.epilog


# --- stages import only what they need ------------------------------------------------------------------------------


def test_repair_without_validation_imports_neither_numpy_nor_onnx_proper(tmp_path, marian_legacy):
    script = ("import sys\nfrom graphfix.__main__ import main\nsys.argv = ['graphfix', 'repair', '--no-validate', "
              f"{str(marian_legacy)!r}, {str(tmp_path / 'out.onnx')!r}]\n"
              "try:\n    main()\nexcept SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'onnx', 'onnxruntime')))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert (tmp_path / "out.onnx").exists()
    assert eval(proc.stdout.splitlines()[-1]) == ["onnx.onnx_ml_pb2"]  # the generated classes alone


def test_the_package_tree_shows_the_stages():
    stages = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert stages == ["batch", "cli", "io", "model", "passes", "process", "proof", "targets"]


def test_no_module_imports_a_private_name_from_a_dependency():
    """typer._click, concurrent.futures' internals and the like tie graphfix to one release of a dependency."""
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module != "__future__":
                names = [*node.module.split("."), *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [part for alias in node.names for part in alias.name.split(".")]
            else:
                continue
            if any(name.startswith("_") and not name.startswith("__") for name in names) and \
                    not (isinstance(node, ast.Import) and node.names[0].name == "_thread"):
                private.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert private == []
