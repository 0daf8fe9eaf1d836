"""Split exports (decoder_model.onnx + decoder_with_past_model.onnx, no merged decoder), as the current Optimum
exporter writes them: `repair DIR OUT` writes one correct merged decoder beside the pair, decoding like the pair in
the current onnxruntime and in 1.16.3; the pair is carried over byte for byte; `check` and `describe` say what the
folder holds and what repair will do."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from graphfix import check, repair_directory
from graphfix.errors import NotAMergedDecoderError
from graphfix.model.merged_decoder import find_merged_decoder
from graphfix.signature import CACHE_FLAG, PAST, PRESENT

from ..conftest import ROOT, sha256

EXPORTS = ROOT / "sample_models" / "exports"
SPLIT_EXPORTS = [EXPORTS / "current-marian", EXPORTS / "current-t5-split", EXPORTS / "current-m2m100-split",
                 EXPORTS / "legacy-marian-split", EXPORTS / "legacy-whisper-split"]
PAIR = ("decoder_model.onnx", "decoder_with_past_model.onnx")
MERGED = "decoder_model_merged.onnx"


@pytest.fixture(scope="module")
def merged_exports(tmp_path_factory):
    """Each split export repaired once into a folder of its own (shared by the tests that only read the result)."""
    done = {}
    for export in SPLIT_EXPORTS:
        out = tmp_path_factory.mktemp("merged") / export.name
        done[export.name] = (out, repair_directory(export, out))
    return done


def _merged_result(result):
    return next(m for m in result.models if m.path == MERGED)


@pytest.mark.parametrize("export", SPLIT_EXPORTS, ids=lambda p: p.name)
def test_a_split_export_repairs_into_a_merged_decoder_that_decodes_like_its_pair(export, merged_exports):
    out, result = merged_exports[export.name]
    merged = _merged_result(result)
    assert merged.result.changes[0].code == "GF401" and merged.result.input == export / "decoder_model.onnx"
    # The legacy exporter's signature names the encoder length apart from the states' and declares the decoder's
    # present length as past + 1: the merged decoder is repaired like Optimum's own (GF103, GF104).
    legacy = {"GF103", "GF104"} <= {c.code for c in merged.result.changes}
    assert legacy == export.name.startswith("legacy-")
    validation = merged.result.validation
    assert validation.ok, validation.first_failure
    assert validation.encoder == str(out / "encoder_model.onnx")  # fed by the export's own encoder
    pair = validation.pair
    assert pair["failure"] is None and pair["tokens_total"] > 0 and pair["tokens_agree"] == pair["tokens_total"]
    assert pair["max_abs_diff"] <= validation.tolerance
    for name in PAIR:  # carried over unchanged
        assert sha256(out / name) == sha256(export / name)
    assert (out / MERGED).stat().st_mode & 0o777 == (export / PAIR[0]).stat().st_mode & 0o777


def _run(session, feeds):
    names = {i.name for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    return dict(zip(outputs, session.run(outputs, {k: v for k, v in feeds.items() if k in names})))


def test_the_merged_decoder_driven_plainly_gives_the_pairs_tokens_and_logits_at_every_step(merged_exports):
    """An independent loop, not graphfix's proof: the merged decoder fed every present as past (the plain client)
    against the pair driven as Optimum drives it (the encoder KV of step 1 kept), greedy, on the export's encoder."""
    export = EXPORTS / "current-marian"
    out, _ = merged_exports[export.name]
    encoder = ort.InferenceSession(str(export / "encoder_model.onnx"))
    first, later = (ort.InferenceSession(str(export / name)) for name in PAIR)
    merged = ort.InferenceSession(str(out / MERGED))
    rng = np.random.default_rng(7)
    source = rng.integers(1, 90, size=(2, 6)).astype(np.int64)
    mask = np.ones_like(source)
    hidden = encoder.run(None, {"input_ids": source, "attention_mask": mask})[0]
    common = {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}
    tokens = np.full((2, 1), 95, dtype=np.int64)  # decoder_start_token_id
    pair_past, plain_past, cross = None, None, {}
    for _ in range(6):
        if pair_past is None:
            theirs = _run(first, {**common, "input_ids": tokens})
            cross = {n.replace("present", "past_key_values", 1): v for n, v in theirs.items() if ".encoder." in n}
            empty = {i.name: np.zeros((2, 4, 0, 8), np.float32) for i in merged.get_inputs() if PAST.match(i.name)}
            ours = _run(merged, {**common, **empty, "input_ids": tokens, CACHE_FLAG: np.array([False])})
        else:
            theirs = _run(later, {**common, **pair_past, **cross, "input_ids": tokens[:, -1:]})
            ours = _run(merged, {**common, **plain_past, "input_ids": tokens[:, -1:], CACHE_FLAG: np.array([True])})
        np.testing.assert_allclose(ours["logits"][:, -1], theirs["logits"][:, -1], atol=1e-5)
        pair_past = {n.replace("present", "past_key_values", 1): v for n, v in theirs.items() if PRESENT.match(n)}
        plain_past = {n.replace("present", "past_key_values", 1): v for n, v in ours.items() if PRESENT.match(n)}
        chosen = ours["logits"][:, -1].argmax(-1)
        assert (chosen == theirs["logits"][:, -1].argmax(-1)).all()
        tokens = np.concatenate([tokens, chosen[:, None]], axis=1)


def test_the_merged_decoder_is_one_if_on_use_cache_branch_with_the_encoder_kv_passed_through(merged_exports):
    out, _ = merged_exports["current-marian"]
    model = onnx.load(out / MERGED)
    decoder, with_past = (onnx.load(EXPORTS / "current-marian" / name) for name in PAIR)
    flag = next(i for i in model.graph.input if i.name == CACHE_FLAG)
    assert flag.type.tensor_type.elem_type == onnx.TensorProto.BOOL
    assert [d.dim_value for d in flag.type.tensor_type.shape.dim] == [1]
    # Optimum's merged inputs: the decoder's, then what only the decoder with past reads, then the flag.
    expected = [i.name for i in decoder.graph.input]
    expected += [i.name for i in with_past.graph.input if i.name not in expected] + [CACHE_FLAG]
    assert [i.name for i in model.graph.input] == expected
    for value in model.graph.input:
        if PAST.match(value.name):  # (batch, heads, past length, head_dim)
            dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            assert dims[0] == "batch_size" and dims[1] == 4 and isinstance(dims[2], str) and dims[3] == 8
    assert [o.name for o in model.graph.output] == [o.name for o in decoder.graph.output]
    found = find_merged_decoder(model)
    cached = found.cache_branch
    made_by = {o: n for n in cached.node for o in n.output}
    for output in cached.output:
        if ".encoder." in output.name:
            node = made_by[output.name]
            assert node.op_type == "Identity" and node.input == [output.name.replace("present", "past_key_values")]


def test_weights_shared_by_the_pair_are_stored_once(merged_exports):
    out, _ = merged_exports["current-marian"]
    model = onnx.load(out / MERGED)
    weights = [numpy_helper.to_array(t).tobytes() for t in model.graph.initializer]
    assert len(weights) == len(set(weights))  # no two outer weights with the same bytes
    for attr in model.graph.node[0].attribute:  # the branches keep only scalars and 1-D int shapes
        assert all(len(t.dims) == 0 or (len(t.dims) == 1 and t.data_type in (6, 7)) for t in attr.g.initializer)
    pair_bytes = sum((EXPORTS / "current-marian" / name).stat().st_size for name in PAIR)
    # The decoder with past's weights are the decoder's but 4 (its cross-attention K/V projections are unused).
    assert (out / MERGED).stat().st_size < 0.8 * pair_bytes


def test_repairing_a_repaired_split_export_again_changes_nothing(merged_exports, tmp_path):
    out, _ = merged_exports["current-t5-split"]
    again = repair_directory(out, tmp_path / "again")
    assert not again.changed and sha256(tmp_path / "again" / MERGED) == sha256(out / MERGED)
    assert check(out).findings == []


@pytest.mark.parametrize("export", SPLIT_EXPORTS, ids=lambda p: p.name)
def test_a_split_export_merges_and_decodes_like_its_pair_in_onnxruntime_1_16(export, tmp_path):
    result = repair_directory(export, tmp_path / "out", target_ort="1.16", validate_on_target=True)
    validation = _merged_result(result).result.validation
    assert validation.ok and validation.onnxruntime == "1.16.3", validation.first_failure
    assert validation.pair["failure"] is None and validation.pair["tokens_agree"] == validation.pair["tokens_total"]
    for name in PAIR:  # the pair is carried over as it is, whatever the target
        assert sha256(tmp_path / "out" / name) == sha256(export / name)


def test_a_split_pair_with_external_data_merges_into_one_data_file_as_optimum_lays_it_out(tmp_path):
    """Above 2 GB a split pair arrives with external data (and Optimum cannot merge it); onnx's own
    save_as_external_data makes the small pair look so. The merged weights go to one decoder_model_merged.onnx_data."""
    export = tmp_path / "export"
    shutil.copytree(EXPORTS / "current-marian", export)
    for name in PAIR:
        model = onnx.load(export / name)
        onnx.save_model(model, export / name, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{name}_data", size_threshold=0)
    result = repair_directory(export, tmp_path / "out")
    validation = _merged_result(result).result.validation
    assert validation.ok and validation.pair["failure"] is None, validation.first_failure
    out = tmp_path / "out"
    assert (out / "decoder_model_merged.onnx_data").is_file()
    locations = {e.value for t in onnx.load(out / MERGED, load_external_data=False).graph.initializer
                 for e in t.external_data if e.key == "location"}
    assert locations == {"decoder_model_merged.onnx_data"}
    # Hardlinked from the merge's draft, not copied twice; one link left, which onnx >= 1.23's loader requires.
    assert (out / "decoder_model_merged.onnx_data").stat().st_nlink == 1
    assert (out / "decoder_model_merged.onnx_data").stat().st_mode & 0o777 == (export / PAIR[0]).stat().st_mode & 0o777
    onnx.checker.check_model(onnx.load(out / MERGED), full_check=True)
    for name in PAIR:
        assert sha256(out / name) == sha256(export / name) and sha256(out / f"{name}_data") == sha256(
            export / f"{name}_data")
    data = (out / "decoder_model_merged.onnx_data").stat().st_size
    assert data < 0.8 * sum((export / f"{name}_data").stat().st_size for name in PAIR)


def test_check_says_the_folder_holds_a_split_export_and_repair_merges_it(cli):
    result = cli("check", EXPORTS / "current-marian")
    assert result.exit_code == 1
    assert "GF401" in result.stdout and "split export (decoder_model + decoder_with_past_model)" in result.stdout
    assert "next: graphfix repair " in result.stdout
    verbose = cli("check", "--verbose", EXPORTS / "current-marian")
    assert "a split export: decoder_model.onnx + decoder_with_past_model.onnx and no decoder_model_merged.onnx" \
        in verbose.stdout
    alone = cli("check", EXPORTS / "current-marian" / "decoder_with_past_model.onnx")
    assert alone.exit_code == 2 and "run `graphfix repair` on its model folder" in alone.stderr


def test_describe_lists_the_pair_and_says_repair_merges_it(cli):
    result = cli("describe", EXPORTS / "current-t5-split")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].endswith("needs repair (GF401): graphfix repair " + str(EXPORTS / "current-t5-split") + " OUT")
    assert any(line.startswith("decoder_model.onnx (split decoder without past;") for line in lines)
    assert any(line.startswith("decoder_with_past_model.onnx (split decoder with past;") for line in lines)


def _ort_converter_decoder() -> onnx.ModelProto:
    """A graph with the I/O names onnxruntime's T5 converter gives its decoder (an edge case built here, not the
    converter's output): self and cross past inputs, self presents out."""
    def value(name, elem=onnx.TensorProto.FLOAT, shape=("batch", 4, "past", 8)):
        return helper.make_tensor_value_info(name, elem, list(shape))

    inputs = [value("input_ids", onnx.TensorProto.INT64, ("batch", 1)),
              value("encoder_attention_mask", onnx.TensorProto.INT64, ("batch", "source")),
              value("past_key_self_0"), value("past_value_self_0"), value("past_key_cross_0"),
              value("past_value_cross_0")]
    nodes = [helper.make_node("Identity", ["past_key_self_0"], ["present_key_self_0"]),
             helper.make_node("Identity", ["past_value_self_0"], ["present_value_self_0"]),
             helper.make_node("Cast", ["input_ids"], ["logits"], to=onnx.TensorProto.FLOAT)]
    outputs = [value("logits", shape=("batch", 1)), value("present_key_self_0"), value("present_value_self_0")]
    graph = helper.make_graph(nodes, "t5_decoder", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_an_onnxruntime_converter_decoder_is_named_with_how_its_own_client_drives_it(tmp_path, cli):
    path = tmp_path / "t5_decoder.onnx"
    onnx.save(_ort_converter_decoder(), path)
    with pytest.raises(NotAMergedDecoderError) as refused:
        check(path)
    message = str(refused.value)
    assert "onnxruntime's own converter" in message and "past_key_self_*" in message
    assert "feeds present_key_self_N back as past_key_self_N" in message and "BeamSearch" in message
    assert "a decoder without past" not in message
    result = cli("check", path)
    assert result.exit_code == 2 and "onnxruntime's own converter" in result.stderr


def test_a_quantized_split_pair_merges_into_the_quantized_merged_decoder(tmp_path):
    """onnxruntime's quantize_dynamic on each file of the pair, as users quantize split exports; the variant keeps
    its suffix and is fed by the export's encoder."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(EXPORTS / "current-marian" / "encoder_model.onnx", export)
    for name in PAIR:
        quantize_dynamic(EXPORTS / "current-marian" / name, export / name.replace(".onnx", "_quantized.onnx"),
                         weight_type=QuantType.QInt8)
    result = repair_directory(export, tmp_path / "out")
    merged = next(m for m in result.models if m.path == "decoder_model_merged_quantized.onnx")
    assert merged.result.changes[0].code == "GF401" and merged.encoder == "encoder_model.onnx"
    assert merged.result.validation.ok and merged.result.validation.pair["failure"] is None, \
        merged.result.validation.first_failure


def test_weights_too_large_for_one_file_go_to_one_data_file_and_decode_the_same(tmp_path):
    """The 2 GB switch, at a limit of 0 bytes (a >2 GB pair is not made in `make test`): the same merge, every weight
    in decoder_model_merged.onnx_data, the same logits as the single-file merge."""
    from graphfix.io.merged_pair import write_merged_pair
    from graphfix.io.read import read_model

    export = EXPORTS / "current-marian"
    paths = {}
    for limit in (None, 0):
        out = tmp_path / f"limit-{limit}" / MERGED
        out.parent.mkdir()
        pair = [read_model(export / name) for name in PAIR]
        write_merged_pair(*pair, out, **({} if limit is None else {"inline_limit": limit}))
        paths[limit] = out
    assert not (tmp_path / "limit-None" / f"{MERGED}_data").exists()
    assert (tmp_path / "limit-0" / f"{MERGED}_data").stat().st_size > 100_000
    onnx.checker.check_model(str(paths[0]), full_check=True)
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 96, (2, 3)).astype(np.int64),
             "encoder_hidden_states": rng.standard_normal((2, 5, 32)).astype(np.float32),
             "encoder_attention_mask": np.ones((2, 5), np.int64), CACHE_FLAG: np.array([False])}
    feeds.update({f"past_key_values.{layer}.{kind}.{part}": np.zeros((2, 4, 0, 8), np.float32)
                  for layer in range(2) for kind in ("decoder", "encoder") for part in ("key", "value")})
    one, split = (ort.InferenceSession(str(paths[limit])).run(["logits"], feeds)[0] for limit in (None, 0))
    np.testing.assert_array_equal(one, split)


def _tiny_decoder(outputs: list[str], past: bool) -> onnx.ModelProto:
    """A decoder with the given outputs, each an Identity of input_ids as float (an edge case built here)."""
    inputs = [helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, ["batch", "new"])]
    if past:
        inputs.append(helper.make_tensor_value_info("past_key_values.0.decoder.key", onnx.TensorProto.FLOAT,
                                                    ["batch", 1, "past", 1]))
    nodes = [helper.make_node("Cast", ["input_ids"], [name], to=onnx.TensorProto.FLOAT) for name in outputs]
    values = [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs]
    graph = helper.make_graph(nodes, "decoder", inputs, values)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_pair_that_is_not_one_decoder_split_in_two_is_refused_naming_the_pair_and_the_condition(tmp_path, cli):
    export = tmp_path / "export"
    export.mkdir()
    onnx.save(_tiny_decoder(["logits", "present.0.decoder.key"], past=False), export / "decoder_model.onnx")
    onnx.save(_tiny_decoder(["logits", "present.0.decoder.key", "attentions"], past=True),
              export / "decoder_with_past_model.onnx")
    result = cli("repair", export, tmp_path / "out")
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert result.stderr.strip() == (
        "error: decoder_model.onnx + decoder_with_past_model.onnx: cannot merge the split decoders: "
        "decoder_with_past_model.onnx outputs 'attentions', which decoder_model.onnx does not")
    assert not any(p.name.startswith(".graphfix-") for p in tmp_path.iterdir())  # no staging debris


def test_check_reports_exactly_the_changes_repair_makes_of_a_split_export(merged_exports):
    export = EXPORTS / "legacy-marian-split"
    _, result = merged_exports[export.name]
    checked = check(export)
    assert [f.code for f in checked.findings] == [c.code for c in _merged_result(result).result.changes]
    assert checked.models[0].path == export / MERGED  # what repair will write, said where it will be


def test_a_tree_of_model_folders_counts_a_split_export_as_a_model_folder(tmp_path):
    from graphfix.batch.tree import repair_tree

    tree = tmp_path / "models"
    shutil.copytree(EXPORTS / "current-t5-split", tree / "t5")
    shutil.copytree(EXPORTS / "current-marian-opset21", tree / "marian")
    checked = check(tree)
    assert [m.path.relative_to(tree).as_posix() for m in checked.models] == [
        "marian/decoder_model_merged.onnx", "t5/decoder_model_merged.onnx"]
    assert checked.models[1].findings[0].code == "GF401"
    repaired = repair_tree(tree, tmp_path / "out")
    outcomes = {m.folder: m for m in repaired.models}
    assert outcomes["t5"].outcome == "repaired" and (tmp_path / "out" / "t5" / MERGED).is_file()
    assert _merged_result(outcomes["t5"].result).result.changes[0].code == "GF401"


def test_a_merge_over_the_file_size_limit_is_one_error_line_exit_2_and_leaves_nothing(tmp_path):
    import resource
    import subprocess
    import sys

    limit = 250 * 1024  # above each file carried over, below the merged decoder (about 300 KB)

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    export = EXPORTS / "current-marian"
    result = subprocess.run([sys.executable, "-m", "graphfix", "repair", str(export), str(tmp_path / "out")],
                            capture_output=True, text=True, preexec_fn=apply)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.splitlines() == [
        f"error: cannot write {tmp_path / 'out' / MERGED} (merging decoder_model.onnx + decoder_with_past_model.onnx): "
        "File too large"]
    assert list(tmp_path.iterdir()) == []  # no OUT, no staging directory
