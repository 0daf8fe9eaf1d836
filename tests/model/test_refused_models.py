"""Merged decoders graphfix must refuse rather than guess at: one `error:` line, exit 2, nothing written.

- A present whose past input is missing (names that do not line up): the mapping is by name, never by position,
  so the output is named and nothing is repaired.
- A model onnxruntime refuses to load. The common real case: a generic fp16 converter (onnxconverter-common's
  `convert_float_to_float16`, run here on real exporter output) casts inside the `If` branches and leaves their
  declared float32 outputs, which onnxruntime's type inference rejects. `validate` and `repair` report it as
  onnxruntime's refusal, with onnxruntime's reason, exit 2.
"""

from __future__ import annotations

import warnings

import onnx
import onnxruntime
import pytest

from ..conftest import ROOT, sha256
from ..io.test_bad_input_and_safe_writing import assert_one_error_line, debris, tree


def rename_everywhere(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    """Rename a main-graph input and every read of it, in the main graph and every subgraph (the If branches read
    past_key_values.* from the outer scope), so the model stays a consistent graph with a different name."""
    def visit(graph: onnx.GraphProto) -> None:
        for value in graph.input:
            if value.name == old:
                value.name = new
        for node in graph.node:
            node.input[:] = [new if name == old else name for name in node.input]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)
    visit(model.graph)
    return model


@pytest.mark.parametrize("generation", ["legacy", "current"])
def test_a_present_whose_past_input_is_missing_is_refused_naming_the_output(generation, cli, tmp_path):
    model = onnx.load(ROOT / "sample_models" / generation / "marian.onnx")
    assert any(i.name == "past_key_values.1.encoder.key" for i in model.graph.input)
    src = tmp_path / "in" / "model.onnx"
    src.parent.mkdir()
    onnx.save(rename_everywhere(model, "past_key_values.1.encoder.key", "past_key_values.1.cross_attention.key"), src)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    before = tree(tmp_path)

    result = cli("repair", src, out)
    assert result.exit_code == 2, result.stdout
    line = assert_one_error_line(result)
    assert "present.1.encoder.key" in line and "no input past_key_values.1.encoder.key" in line
    assert result.stdout == "" and not out.exists() and debris(out.parent) == []

    checked = cli("check", src)
    assert checked.exit_code == 2
    assert "present.1.encoder.key" in assert_one_error_line(checked)
    assert tree(tmp_path) == before


# --- a model onnxruntime refuses to load --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fp16_misconverted(tmp_path_factory):
    """Real exporter output run through the generic fp16 converter people reach for; onnxruntime refuses it."""
    from onnxconverter_common import float16

    directory = tmp_path_factory.mktemp("fp16")
    made = {}
    for generation in ("legacy", "current"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the float32 number -inf will be truncated to -10000.0"
            converted = float16.convert_float_to_float16(onnx.load(ROOT / "sample_models" / generation / "marian.onnx"))
        made[generation] = directory / f"{generation}-marian-fp16.onnx"
        onnx.save(converted, made[generation])
    return made


def ort_refusal(path) -> str:
    with pytest.raises(Exception) as refused:
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return " ".join(str(refused.value).split())


@pytest.mark.parametrize("generation", ["legacy", "current"])
def test_validate_reports_a_model_onnxruntime_refuses_with_its_reason_and_exit_2(generation, fp16_misconverted, cli):
    model = fp16_misconverted[generation]
    refusal = ort_refusal(model)
    assert "TypeInferenceError" in refusal  # the converter's known breakage, not some other defect

    result = cli("validate", model)
    assert result.exit_code == 2 and result.stdout == ""
    line = assert_one_error_line(result)
    assert line.startswith(f"error: onnxruntime {onnxruntime.__version__} cannot load {model.name}: ")
    # onnxruntime's own reason, down to the type clash it names
    reason = refusal.split("failed:", 1)[1]
    assert reason.split(" does not match ")[0] in line, line
    assert "does not match" in line or "bound to different types" in line, line


@pytest.mark.parametrize("generation", ["legacy", "current"])
def test_repair_of_a_model_onnxruntime_refuses_exits_2_writes_nothing_and_keeps_the_input(generation,
                                                                                           fp16_misconverted, cli,
                                                                                           tmp_path):
    model = fp16_misconverted[generation]
    digest = sha256(model)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"old output")

    result = cli("repair", "--force", model, out)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    line = assert_one_error_line(result)
    assert f"onnxruntime {onnxruntime.__version__} cannot load" in line and "TypeInferenceError" in line, line
    assert out.read_bytes() == b"old output"
    assert debris(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert sha256(model) == digest
