"""Proof by decoding, in onnxruntime, with no PyTorch and no original weights.

Inputs are synthesized from the model's own signature and the plain present->past loop is compared with full
recompute step by step (decode_loop.py). `ort_version` runs that same loop inside an isolated environment holding
exactly that onnxruntime release (ort_runtimes.py), e.g. 1.16.3, which the seeds' Rust `ort` deploys.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import onnx_proto as onnx

from .decode_cases import BATCHES, SOURCE_LENGTHS, STEPS, CaseResult
from .errors import BadInputError
from .modelfile import read_model
from .ort_runtimes import runtime_python
from .signature import PAST

_QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "MatMulNBits", "DequantizeLinear",
                  "QuantizeLinear", "QAttention", "DynamicQuantizeMatMul"}


@dataclass
class ValidationResult:
    model: str
    tolerance: float
    onnxruntime: str = ""
    cases: list[CaseResult] = field(default_factory=list)
    original: dict | None = None  # with --original: max diff of first-step and full-recompute logits

    @property
    def ok(self) -> bool:
        return all(c.failure is None for c in self.cases) and not (self.original or {}).get("failure")

    @property
    def first_failure(self) -> str | None:
        for case in self.cases:
            if case.failure:
                return f"batch {case.batch}, source length {case.source_length}: {case.failure}"
        return (self.original or {}).get("failure")

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.cases), default=0.0)

    def to_dict(self) -> dict:
        return {"model": self.model, "ok": self.ok, "onnxruntime": self.onnxruntime, "tolerance": self.tolerance,
                "max_abs_diff": self.max_abs_diff, "first_failure": self.first_failure,
                "cases": [asdict(c) for c in self.cases], "original": self.original}


def _tolerance(model: onnx.ModelProto) -> float:
    ops = {n.op_type for n in model.graph.node}
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops |= {n.op_type for n in attr.g.node}
    if ops & _QUANTIZED_OPS:  # int8 weights: the cached and full paths round differently
        return 5e-2
    past = next((v for v in model.graph.input if PAST.match(v.name)), None)
    return 1e-2 if past is not None and past.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else 1e-4


def _run_in(python: Path, request: dict) -> dict:
    """The decode loop in another onnxruntime: only the graphfix package is put on its path, never installed."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run([str(python), "-m", "graphfix.decode_loop", json.dumps(request)],
                          capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BadInputError(f"the decode loop failed to run in {python.parent.parent.name}: {tail}")
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise BadInputError(answer["error"])
    return answer["result"]


def validate(model: str | os.PathLike, original: str | os.PathLike | None = None, *, steps: int = STEPS,
             batches: Sequence[int] = BATCHES, source_lengths: Sequence[int] = SOURCE_LENGTHS, seed: int = 0,
             ort_version: str | None = None) -> ValidationResult:
    """Prove that the plain present->past loop on the merged decoder `model` decodes like full recompute (see
    decode_loop.py); with `original`, that first-step and full-recompute logits equal that model's. Returns the
    figures whether or not it held (`.ok`); raises BadInputError when the model cannot be read or loaded."""
    path = os.fspath(model)
    loaded = read_model(path)  # the same refusals as repair, before onnxruntime sees the file
    if original is not None:
        read_model(original)
    request = {"model": os.path.abspath(path), "original": os.path.abspath(original) if original else None,
               "tolerance": _tolerance(loaded.model), "steps": steps, "batches": list(batches),
               "source_lengths": list(source_lengths), "seed": seed}
    if ort_version:
        answer = _run_in(runtime_python(ort_version), request)
    else:
        from .decode_loop import run_cases  # numpy and onnxruntime

        answer = run_cases(**request)
    return ValidationResult(model=path, tolerance=request["tolerance"], onnxruntime=answer["onnxruntime"],
                            cases=[CaseResult(**c) for c in answer["cases"]], original=answer["original"])
