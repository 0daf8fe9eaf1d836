"""Each case the default proof keeps (proof/cases.py: 3 steps; batch 1 with source length 5, batch 3 with 11) is
needed: for each, a repaired model broken the way that case exists to catch passes a proof without it and fails the
default proof. And the default proof is cheap: one full recompute per case, not one per step."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from graphfix import repair, validate
from graphfix.proof import cases

from ..conftest import ROOT


@pytest.fixture(scope="module")
def fixed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cases") / "fixed.onnx"
    repair(ROOT / "sample_models" / "current" / "marian.onnx", out, validate=False)
    return out


def _rewired(path: Path, out: Path, outputs: list[str], make: object) -> Path:
    """`path` with each main-graph output in `outputs` computed by `make(inner, name)` from what the If gave."""
    model = onnx.load(path)
    branch = next(n for n in model.graph.node if n.op_type == "If")
    for name in outputs:
        index = list(branch.output).index(name)
        branch.output[index] = f"{name}_inner"
        model.graph.node.extend(make(f"{name}_inner", name))  # type: ignore[operator]
    onnx.save(model, out)
    return out


def test_the_default_proof_is_three_steps_in_two_pairs():
    assert (cases.STEPS, cases.BATCHES, cases.SOURCE_LENGTHS) == (3, (1, 3), (5, 11))


def test_step_3_is_needed_cache_branch_encoder_kv_of_the_right_shape_but_zero(fixed, tmp_path):
    """The legacy exports' bug with the shapes right: the cache branch's encoder presents are zeros. Step 2 still
    reads the real ones (from step 1); step 3 is the first to read the cache branch's own."""
    model = onnx.load(fixed)
    encoder_kv = [o.name for o in model.graph.output if ".encoder." in o.name]

    def zeroed(inner: str, name: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Mul", [inner, "zero"], [f"{name}_zero"]),
                helper.make_node("Where", ["use_cache_branch", f"{name}_zero", inner], [name])]

    broken = _rewired(fixed, tmp_path / "zeroed.onnx", encoder_kv, zeroed)
    model = onnx.load(broken)
    model.graph.initializer.append(helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]))
    onnx.save(model, broken)
    assert validate(broken, steps=2).ok  # without step 3 it passes
    result = validate(broken)
    assert not result.ok and (result.first_failure or "").startswith("batch 1, source length 5: step 3:")


def test_batch_3_is_needed_presents_with_their_batch_rows_mixed_up(fixed, tmp_path):
    """A batch-dim bug: the decoder's presents come back with their rows reversed (nothing changes at batch 1)."""
    model = onnx.load(fixed)
    self_kv = [o.name for o in model.graph.output if ".decoder." in o.name]

    def reversed_rows(inner: str, name: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Slice", [inner, "minus_one", "far", "axis0", "minus_one"], [name])]

    broken = _rewired(fixed, tmp_path / "rows.onnx", self_kv, reversed_rows)
    model = onnx.load(broken)
    model.graph.initializer.extend([helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1]),
                                    helper.make_tensor("far", TensorProto.INT64, [1], [-(2 ** 62)]),
                                    helper.make_tensor("axis0", TensorProto.INT64, [1], [0])])
    onnx.save(model, broken)
    assert validate(broken, batches=(1,), source_lengths=(5, 11)).ok  # without batch 3 it passes
    result = validate(broken)
    assert not result.ok and (result.first_failure or "").startswith("batch 3, source length 11")


@pytest.mark.parametrize("baked", [5, 11])
def test_both_source_lengths_are_needed_an_encoder_length_baked_into_the_graph(fixed, tmp_path, baked):
    """The signature says any source length; a Reshape inside holds the encoder states to the exported one."""
    model = onnx.load(fixed)
    hidden = model.graph.input[[i.name for i in model.graph.input].index("encoder_hidden_states")]
    size = hidden.type.tensor_type.shape.dim[2].dim_value
    model.graph.initializer.append(helper.make_tensor("baked", TensorProto.INT64, [3], [-1, baked, size]))
    model.graph.node.insert(0, helper.make_node("Reshape", ["encoder_hidden_states", "baked"], ["states_baked"]))
    for graph in [a.g for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH]:
        for node in graph.node:
            node.input[:] = ["states_baked" if i == "encoder_hidden_states" else i for i in node.input]
    broken = tmp_path / f"baked{baked}.onnx"
    onnx.save(model, broken)
    assert validate(broken, batches=(1, 3), source_lengths=(baked,)).ok  # with only that length it passes
    result = validate(broken)
    other = 11 if baked == 5 else 5
    assert not result.ok and f"source length {other}:" in (result.first_failure or "")


def test_the_default_proof_runs_each_pair_once_with_one_full_recompute_per_case(fixed, monkeypatch):
    """3 cached steps + 1 full recompute per case, 2 cases; the same in the child (run_proof) as counted here."""
    from graphfix.proof import client_loop
    from graphfix.proof.cases import ProofRequest

    runs: list[tuple[int, int]] = []
    real = client_loop.DecoderSession.run

    def counted(self, tokens, *args, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(tuple(tokens.shape))
        return real(self, tokens, *args, **kwargs)

    monkeypatch.setattr(client_loop.DecoderSession, "run", counted)
    answer = client_loop.run_proof(ProofRequest(model=str(fixed), model_with_past=str(fixed), tolerance=1e-4,
                                                steps=3, pairwise=True))
    assert [(c["batch"], c["source_length"], c["steps"]) for c in answer["cases"]] == [(1, 5, 3), (3, 11, 3)]
    assert runs == [(1, 1), (1, 1), (1, 1), (1, 3), (3, 1), (3, 1), (3, 1), (3, 3)]


def test_full_recompute_is_judged_position_by_position_naming_the_step(fixed, tmp_path):
    """The one full-recompute run's logits at each position are that step's (main's decode verdicts): a no-cache
    path that gives NaN from the second position on is a failed verdict at step 2, not a numpy error and not a
    pass (step 1, one token on that same path, is sound)."""
    def poisoned_after_first(inner: str, name: str) -> list[onnx.NodeProto]:
        return [helper.make_node("Shape", [inner], [f"{name}_shape"]),
                helper.make_node("Gather", [f"{name}_shape", "one"], [f"{name}_length"], axis=0),
                helper.make_node("Range", ["zero_i", f"{name}_length", "one"], [f"{name}_positions"]),
                helper.make_node("Greater", [f"{name}_positions", "zero_i"], [f"{name}_later"]),
                helper.make_node("Where", [f"{name}_later", "nan", "zero_f"], [f"{name}_mask"]),
                helper.make_node("Unsqueeze", [f"{name}_mask", "minus_one"], [f"{name}_column"]),
                helper.make_node("Add", [inner, f"{name}_column"], [f"{name}_poisoned"]),
                helper.make_node("Where", ["use_cache_branch", inner, f"{name}_poisoned"], [name])]

    broken = _rewired(fixed, tmp_path / "nan_full.onnx", ["logits"], poisoned_after_first)
    model = onnx.load(broken)
    model.graph.initializer.extend([helper.make_tensor("one", TensorProto.INT64, [], [1]),
                                    helper.make_tensor("zero_i", TensorProto.INT64, [], [0]),
                                    helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1]),
                                    helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")]),
                                    helper.make_tensor("zero_f", TensorProto.FLOAT, [], [0.0])])
    onnx.save(model, broken)
    result = validate(broken)
    assert not result.ok
    assert (result.first_failure or "").startswith(
        "batch 1, source length 5: step 2: full recompute (no past) returned logits holding NaN"), result.first_failure
