"""The seeds deploy with Rust `ort` on onnxruntime 1.16.3: the proof must hold in that very runtime, not only in
the newest one. The runtime is installed once with pip into graphfix's cache (about 20 s)."""

from __future__ import annotations

import shutil

import pytest

from graphfix import BadInputError, validate
from graphfix.proof.runtimes import runtime_python

from ..conftest import ROOT

SEEDS_RUNTIME = "1.16.3"


@pytest.fixture(scope="session")
def seeds_runtime():
    runtime_python(SEEDS_RUNTIME)
    return SEEDS_RUNTIME


def test_repaired_sample_decodes_like_full_recompute_in_onnxruntime_1_16_3(sample, repaired, seeds_runtime):
    result = validate(repaired(sample), original=sample, ort_version=seeds_runtime)
    assert result.onnxruntime == SEEDS_RUNTIME
    assert result.ok, result.first_failure
    assert result.max_abs_diff < 1e-4


def test_original_sample_fails_the_plain_loop_in_onnxruntime_1_16_3(sample, seeds_runtime):
    result = validate(sample, ort_version=seeds_runtime)
    assert result.onnxruntime == SEEDS_RUNTIME
    assert not result.ok and "fails in onnxruntime" in result.first_failure


def test_a_malformed_runtime_version_is_refused():
    with pytest.raises(BadInputError, match="X.Y.Z"):
        runtime_python("1.16")


def test_cli_validate_names_the_runtime_it_ran_in(marian_legacy, repaired, seeds_runtime, cli):
    result = cli("validate", repaired(marian_legacy), "--ort-version", seeds_runtime)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"onnxruntime {SEEDS_RUNTIME}" in result.stdout


def _loads_in(runtime: str, model) -> str:
    """'' when that onnxruntime loads the model, else its refusal."""
    import subprocess

    code = "import sys, onnxruntime as o\ntry: o.InferenceSession(sys.argv[1])\nexcept Exception as e: print(e)"
    return subprocess.run([str(runtime_python(runtime)), "-c", code, str(model)],
                          capture_output=True, text=True).stdout.strip()


def _tiny(opset: int, ir: int):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


@pytest.mark.parametrize("opset, ir, loads", [(19, 9, True), (19, 10, False), (20, 9, False)])
def test_the_1_16_row_of_the_compatibility_table_holds_for_the_real_wheel(opset, ir, loads, seeds_runtime, tmp_path):
    from graphfix.targets import parse_release

    target = parse_release(seeds_runtime)
    max_ir, max_opset = target.max_ir, target.max_opset
    assert (opset <= max_opset and ir <= max_ir) == loads
    path = tmp_path / "tiny.onnx"
    path.write_bytes(_tiny(opset, ir).SerializeToString())
    assert (_loads_in(seeds_runtime, path) == "") == loads


def test_an_ir_10_decoder_is_lowered_for_onnxruntime_1_16_and_decodes_there(marian_current, seeds_runtime, tmp_path,
                                                                            cli):
    import onnx

    model = onnx.load(marian_current)
    model.ir_version = 10  # what onnx >= 1.16 stamps when it saves; the current exporter happens to write 9
    stamped = tmp_path / "ir10.onnx"
    onnx.save(model, stamped)
    assert "Unsupported model IR version: 10" in _loads_in(seeds_runtime, stamped)
    result = cli("repair", stamped, tmp_path / "fixed.onnx", "--target-ort", "1.16")
    assert result.exit_code == 0, result.stderr
    assert "GF301" in result.stdout
    assert onnx.load(tmp_path / "fixed.onnx").ir_version == 8  # the lowest opset 18 needs, within 1.16's 9
    assert validate(tmp_path / "fixed.onnx", ort_version=seeds_runtime).ok


def test_an_op_that_cannot_go_below_the_target_opset_is_refused_with_nothing_written(tmp_path, cli):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    graph = helper.make_graph([helper.make_node("Pad", ["x", "pads"], ["y"], name="wrap_pad", mode="wrap")], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])],
                              initializer=[numpy_helper.from_array(np.array([1, 1], np.int64), "pads")])
    export = tmp_path / "export"  # an export whose encoder holds the op: the whole export is retargeted
    export.mkdir()
    shutil.copy(ROOT / "sample_models" / "current" / "marian.onnx", export / "decoder_model_merged.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9),
              export / "encoder_model.onnx")
    refused = cli("repair", export, tmp_path / "out", "--target-ort", "1.15")
    assert refused.exit_code == 2 and len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith(f"error: {export / 'encoder_model.onnx'}: retarget_versions: op Pad at node "
                                     "'wrap_pad'")  # named with its model folder
    assert "> target 18" in refused.stderr
    assert not (tmp_path / "out").exists()


MALFORMED_OR_UNKNOWN = ["abc", "16", "1..16", "1.16.x", "1.16.3.1", "99.1", "0.9", ""]
RELEASE_OPTIONS = {"repair": ("--target-ort",), "check": ("--target-ort",), "validate": ("--ort-version",),
                   "split": ("--ort-version", "--target-ort")}


def _command_line(command: str, option: str, release: str, model, tmp_path) -> list:
    outputs = {"repair": [tmp_path / "out.onnx"], "split": [tmp_path / "split"]}.get(command, [])
    return [command, model, *outputs, option, release]


@pytest.mark.parametrize("release", MALFORMED_OR_UNKNOWN)
@pytest.mark.parametrize("command, option", [(c, o) for c, options in RELEASE_OPTIONS.items() for o in options])
def test_every_malformed_or_unknown_release_is_one_error_line_and_exit_2(command, option, release, marian_current,
                                                                         tmp_path, cli):
    result = cli(*_command_line(command, option, release, marian_current, tmp_path))
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: Invalid value for '{option}': unknown onnxruntime release {release!r}")
    assert "unexpected" not in result.stderr and "X.Y or X.Y.Z" in result.stderr
    assert not (tmp_path / "out.onnx").exists() and not (tmp_path / "split").exists()


@pytest.mark.parametrize("release", ["abc", "1.16.3.1", "99.1"])
@pytest.mark.parametrize("command, option", [(c, o) for c, options in RELEASE_OPTIONS.items() for o in options])
def test_a_refused_release_is_one_json_document_with_json(command, option, release, marian_current, tmp_path, cli):
    import json

    result = cli(*_command_line(command, option, release, marian_current, tmp_path), "--json")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["exit_code"] == 2 and document["command"] == command
    assert f"unknown onnxruntime release {release!r}" in document["error"]


def test_the_library_refuses_the_same_releases_with_the_same_message(marian_current, tmp_path):
    from graphfix import check, repair, split
    from graphfix.targets import parse_release

    for release in MALFORMED_OR_UNKNOWN:
        with pytest.raises(BadInputError) as parsed:
            parse_release(release)
        calls = [(repair, (marian_current, tmp_path / "o.onnx"), {"target_ort": release}),
                 (check, (marian_current,), {"target_ort": release}),
                 (validate, (marian_current,), {"ort_version": release}),
                 (split, (marian_current, tmp_path / "split"), {"ort_version": release})]
        for function, args, keywords in calls:
            with pytest.raises(BadInputError) as refused:
                function(*args, **keywords)
            assert str(refused.value) == str(parsed.value)
    assert not (tmp_path / "o.onnx").exists() and not (tmp_path / "split").exists()


def test_x_y_is_its_newest_patch_and_x_y_z_is_that_release():
    from graphfix.targets import parse_release

    newest = parse_release("1.16")
    assert newest.release == "1.16.3" and str(newest) == "1.16.3"
    assert (newest.max_ir, newest.max_opset) == (9, 19)
    assert newest.float16_gaps == {"Softmax", "LayerNormalization"}
    assert newest.domains is not None and newest.domains.release == "1.16.3" and newest.domains.ml_max_opset == 3
    older = parse_release("1.16.1")
    assert older.release == "1.16.1" and (older.max_ir, older.max_opset) == (9, 19)
    assert parse_release("1.16.3") == newest
    assert parse_release("1.17").float16_gaps == frozenset() and parse_release("1.14").domains is None


def test_validate_takes_a_release_as_x_y_like_target_ort(marian_legacy, repaired, seeds_runtime, cli):
    result = cli("validate", repaired(marian_legacy), "--ort-version", "1.16")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"onnxruntime {SEEDS_RUNTIME}" in result.stdout


def test_split_can_retarget_and_prove_on_the_release_it_names(marian_current, tmp_path, cli, seeds_runtime):
    import onnx

    result = cli("split", marian_current, tmp_path / "split", "--target-ort", "1.16", "--ort-version", "1.16",
                 "--json")
    assert result.exit_code == 0, result.stderr
    import json

    assert json.loads(result.stdout)["validation"]["onnxruntime"] == SEEDS_RUNTIME
    for name in ("decoder_model.onnx", "decoder_with_past_model.onnx"):
        assert onnx.load(tmp_path / "split" / name).ir_version <= 9


@pytest.mark.slow  # pip resolving a release
def test_a_runtime_pip_cannot_install_is_one_clear_error(marian_current, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))
    result = cli("validate", marian_current, "--ort-version", "1.16.99")  # a known release, a patch PyPI never had
    assert result.exit_code == 2
    announced, refused = result.stderr.splitlines()  # the first use of a release is its own step, then one error line
    assert announced.startswith("installing onnxruntime 1.16.99 into ") and announced.endswith("(first use)")
    assert refused.startswith("error: cannot install onnxruntime==1.16.99")
    assert not any((tmp_path / "cache").glob("onnxruntime-*"))  # no half-made runtime left to be reused


def _export_with_encoder(tmp_path, encoder):
    import onnx

    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(ROOT / "sample_models" / "current" / "marian.onnx", export / "decoder_model_merged.onnx")
    onnx.save(encoder, export / "encoder_model.onnx")
    return export


def test_nothing_lands_that_the_target_release_cannot_load(tmp_path, cli, seeds_runtime):
    """With --target-ort every staged model is loaded in that very release before it lands: here an encoder using
    an op no onnxruntime has (a custom domain), which retargeting cannot see."""
    import onnxruntime
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    encoder = helper.make_model(helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
                                                  "encoder", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
                                ir_version=8)
    export = _export_with_encoder(tmp_path, encoder)
    refused = cli("repair", export, tmp_path / "out", "--target-ort", "1.16")
    assert refused.exit_code == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith(f"error: {export / 'encoder_model.onnx'}: onnxruntime 1.16.3 cannot load "
                                     "encoder_model.onnx: ")
    assert "com.example:Frobnicate(-1) is not a registered function/op" in refused.stderr
    assert not (tmp_path / "out").exists()
    # Skipping the load on the target leaves the proof in the installed onnxruntime, which refuses it too.
    installed = cli("repair", export, tmp_path / "out", "--target-ort", "1.16", "--skip-target-load")
    assert installed.exit_code == 1 and f"onnxruntime {onnxruntime.__version__} cannot load" in installed.stderr
    unproven = cli("repair", export, tmp_path / "out", "--target-ort", "1.16", "--skip-target-load", "--no-validate")
    assert unproven.exit_code == 0, unproven.stderr


def test_a_target_release_no_python_here_can_install_is_refused_before_writing_unless_skipped(
        marian_current, tmp_path, cli, monkeypatch):
    """1.14 has wheels for CPython 3.8-3.10 only, and this machine is made to have none of those."""
    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("GRAPHFIX_PYTHON", "")
    out = tmp_path / "out.onnx"
    refused = cli("repair", marian_current, out, "--target-ort", "1.14")
    assert refused.exit_code == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "onnxruntime 1.14.1 has wheels for CPython 3.8-3.10 only" in refused.stderr
    assert "--skip-target-load" in refused.stderr
    assert not out.exists()
    assert cli("repair", marian_current, out, "--target-ort", "1.14", "--skip-target-load").exit_code == 0
