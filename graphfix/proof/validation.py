"""Proof by decoding, in onnxruntime, with no PyTorch and no original weights.

Inputs are synthesized from the model's own signature and the plain present->past loop (client_loop.py) is
compared with full recompute step by step: on a merged decoder (`validate`) or on a split pair (`validate_split`),
always in a child process: the installed onnxruntime's or, with `ort_version`, an isolated interpreter holding
exactly that release (runtimes.py), e.g. 1.16.3, which the seeds' Rust `ort` deploys. A crash or an exhausted memory
limit there stays there. Both run the same loop with the same inputs, refusals, tolerances and messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import onnx_proto as onnx
from ..io.read import read_model
from ..model.graph import op_types
from ..signature import PAST
from ..targets import TargetRuntime, as_target
from .cases import BATCHES, SOURCE_LENGTHS, STEPS, CaseResult, ProofRequest
from .encoder_inputs import encoder_feeds

if TYPE_CHECKING:
    from .child import RuntimeChild

_QUANTIZED_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "MatMulNBits", "DequantizeLinear",
                  "QuantizeLinear", "QAttention", "DynamicQuantizeMatMul"}


@dataclass
class ValidationResult:
    model: str
    tolerance: float
    onnxruntime: str = ""
    cases: list[CaseResult] = field(default_factory=list)
    original: dict[str, Any] | None = None  # against a reference model: max diff of full-recompute logits
    encoder: str | None = None  # the export's encoder that fed the decoder, when the proof ran end to end
    # Against the split pair the model was merged from: max diff of logits, tokens agreeing, failure.
    pair: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return (all(c.failure is None for c in self.cases) and not (self.original or {}).get("failure")
                and not (self.pair or {}).get("failure"))

    @property
    def first_failure(self) -> str | None:
        for case in self.cases:
            if case.failure:
                where = f"batch {case.batch}, source length {case.source_length}: step {case.failed_step}"
                return f"{where}: {case.failure}"
        failure: str | None = (self.original or {}).get("failure") or (self.pair or {}).get("failure")
        return failure

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.cases), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "ok": self.ok, "onnxruntime": self.onnxruntime, "tolerance": self.tolerance,
                "max_abs_diff": self.max_abs_diff, "first_failure": self.first_failure,
                "cases": [asdict(c) for c in self.cases], "original": self.original, "encoder": self.encoder,
                "pair": self.pair}


def tolerance_for(model: onnx.ModelProto) -> float:
    """How far the cached path may round differently from full recompute, by what the model computes in."""
    if op_types(model.graph) & _QUANTIZED_OPS:  # int8/int4 weights: the cached and full paths round differently
        return 5e-2
    past = next((v for v in model.graph.input if PAST.match(v.name)), None)
    return 1e-2 if past is not None and past.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else 1e-4


def _require_cases(steps: int, batches: Sequence[int], source_lengths: Sequence[int]) -> None:
    """A proof of no step, no batch or no source length would hold while proving nothing: the caller's mistake."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:  # the cache is first read at step 2
        raise ValueError(f"a proof needs steps, an integer >= 2 (a proof of {steps!r} steps proves nothing of the "
                         "cache)")
    for name, sizes in (("batches", batches), ("source_lengths", source_lengths)):
        if isinstance(sizes, (str, bytes)) or not sizes or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
            raise ValueError(f"a proof needs {name} holding at least one integer >= 1, got {sizes!r} (a proof of no "
                             "cases proves nothing)")


@dataclass
class PendingProof:
    """A proof sent to its process (child.RuntimeChild), whose figures `result` waits for."""

    shown_as: str
    tolerance: float
    encoder: str | None
    child: RuntimeChild

    def result(self) -> ValidationResult:
        answer = self.child.answer()
        return ValidationResult(model=self.shown_as, tolerance=self.tolerance, onnxruntime=answer["onnxruntime"],
                                cases=[CaseResult(**c) for c in answer["cases"]], original=answer["original"],
                                encoder=self.encoder, pair=answer.get("pair"))


def _start(shown_as: str | os.PathLike[str], model: str | os.PathLike[str],
           model_with_past: str | os.PathLike[str], reference: str | os.PathLike[str] | None, steps: int,
           batches: Sequence[int] | None, source_lengths: Sequence[int] | None, seed: int,
           ort_version: TargetRuntime | str | None, encoder: str | os.PathLike[str] | None = None,
           judge: str | os.PathLike[str] | None = None, pair: tuple[Path, Path] | None = None,
           child: RuntimeChild | None = None, read: Mapping[Path, onnx.ModelProto] | None = None) -> PendingProof:
    runtime = as_target(ort_version)
    pairwise = batches is None and source_lengths is None  # the default cases, in pairs (cases.py)
    batches = BATCHES if batches is None else batches  # an empty one given is the caller's mistake, said below
    source_lengths = SOURCE_LENGTHS if source_lengths is None else source_lengths
    _require_cases(steps, batches, source_lengths)
    from .runtimes import RuntimeChild, start_if_installed

    # Always in a child process: onnxruntime under a memory limit can abort (SIGABRT) or fail inside its own C++,
    # and the child's address space is its own, so graphfix stays small enough to clean up and report one line.
    # Started first, it imports onnxruntime while the models are read here; a release not yet installed is
    # installed only once the models passed those refusals.
    release = runtime.release if runtime else None
    early = child or start_if_installed(release)
    try:
        request, tolerance = _request(model, model_with_past, reference, steps, batches, source_lengths, seed,
                                      runtime, encoder, judge, pair, pairwise, read or {})
        child = early or RuntimeChild(release)
    except BaseException:
        if early is not None:
            early.close()
        raise
    try:
        child.send(request)
    except BaseException:
        child.close()
        raise
    return PendingProof(os.fspath(shown_as), tolerance, os.fspath(encoder) if encoder else None, child)


def _request(model: str | os.PathLike[str], model_with_past: str | os.PathLike[str],
             reference: str | os.PathLike[str] | None, steps: int, batches: Sequence[int],
             source_lengths: Sequence[int], seed: int, runtime: TargetRuntime | None,
             encoder: str | os.PathLike[str] | None, judge: str | os.PathLike[str] | None,
             pair: tuple[Path, Path] | None, pairwise: bool,
             read: Mapping[Path, onnx.ModelProto]) -> tuple[ProofRequest, float]:
    paths = [Path(p) for p in (model, model_with_past, reference, encoder, judge, *(pair or ())) if p]
    # The same refusals as everywhere, before onnxruntime sees a file: each path read once, unless the caller has
    # (what it wrote itself, or read).
    loaded = {path: read[path] if path in read else read_model(path).model for path in dict.fromkeys(paths)}
    tolerance = tolerance_for(loaded[Path(model_with_past)])
    feeds = encoder_feeds(loaded[Path(encoder)], Path(encoder)) if encoder else None
    judge = judge or reference  # the unrepaired original judges a divergence too

    def absolute(path: str | os.PathLike[str] | None) -> str | None:
        return os.path.abspath(path) if path else None

    request = ProofRequest(model=os.path.abspath(model), model_with_past=os.path.abspath(model_with_past),
                           tolerance=tolerance, reference=absolute(reference), judge=absolute(judge),
                           encoder=absolute(encoder), encoder_feeds=feeds, release=runtime.release if runtime else None,
                           steps=steps, batches=tuple(batches), source_lengths=tuple(source_lengths), seed=seed,
                           pairwise=pairwise,
                           pair=(os.path.abspath(pair[0]), os.path.abspath(pair[1])) if pair else None)
    return request, tolerance


def start_validation(model: str | os.PathLike[str], original: str | os.PathLike[str] | None = None, *,
                     ort_version: TargetRuntime | str | None = None, encoder: str | os.PathLike[str] | None = None,
                     judge: str | os.PathLike[str] | None = None, pair: tuple[Path, Path] | None = None,
                     child: RuntimeChild | None = None, read: Mapping[Path, onnx.ModelProto] | None = None
                     ) -> PendingProof:
    """validate()'s default proof, sent to `child` (a process started earlier, in the same release; else one
    started now) and left running: its `result()` is validate's. The caller may do other work meanwhile (repair
    runs the checker gate); `child.close()` ends it on any way out before result. `read`: models of these paths
    the caller holds already (what it wrote, or read), which are not read again."""
    return _start(model, model, model, original, STEPS, None, None, 0, ort_version, encoder, judge, pair, child,
                  read)


def validate(model: str | os.PathLike[str], original: str | os.PathLike[str] | None = None, *, steps: int = STEPS,
             batches: Sequence[int] | None = None, source_lengths: Sequence[int] | None = None, seed: int = 0,
             ort_version: TargetRuntime | str | None = None, encoder: str | os.PathLike[str] | None = None,
             judge: str | os.PathLike[str] | None = None, pair: tuple[Path, Path] | None = None) -> ValidationResult:
    """Prove that the plain present->past loop on the merged decoder `model` decodes like full recompute; with
    `original`, that full-recompute logits equal that model's at every step; with `encoder` (the export's
    encoder_model.onnx), fed by that encoder's output, end to end. `judge` (the unrepaired model; `original`
    serves too) is asked only when the loop differs from full recompute: if it, driven as Optimum drives it, gives
    the loop's very numbers, the difference is the model's own and the case holds (`original_differs`). With
    `pair` (decoder_model.onnx, decoder_with_past_model.onnx: what `model` was merged from), the loop's logits must
    equal that pair's, driven as Optimum drives a pair, at every step. Returns
    the figures whether or not it held (`.ok`); raises BadInputError when the model cannot be read or loaded.
    Without `batches` and `source_lengths` the cases are cases.py's pairs (batch 1 with source length 5, batch 3
    with 11); given either, every combination of them is run."""
    return _start(model, model, model, original, steps, batches, source_lengths, seed, ort_version, encoder, judge,
                  pair).result()


def validate_split(decoder: str | os.PathLike[str], decoder_with_past: str | os.PathLike[str],
                   merged: str | os.PathLike[str] | None = None, *, steps: int = STEPS,
                   batches: Sequence[int] | None = None, source_lengths: Sequence[int] | None = None,
                   seed: int = 0, ort_version: TargetRuntime | str | None = None) -> ValidationResult:
    """The same proof for a split pair: `decoder` at step 1 and for full recompute, `decoder_with_past` after it;
    with `merged`, the pair's logits are also compared with that merged decoder's."""
    return _start(decoder, decoder, decoder_with_past, merged, steps, batches, source_lengths, seed,
                  ort_version).result()


__all__ = ["PendingProof", "ValidationResult", "start_validation", "tolerance_for", "validate", "validate_split"]
