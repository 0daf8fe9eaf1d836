"""The proof as gates: what io.write.write_models runs, in order, on the staged files before anything lands.

A gate that raises stops the commit and nothing lands. `proof_gates` assembles them for repair and split alike:

- the checker gate: when the input passed onnx.checker's full check, every output must too;
- the decode gate (a merged decoder, or a split pair) or, for a model with no decode loop of its own (an encoder),
  the load gate in the installed onnxruntime;
- the target-load gate: with --target-ort, every staged output loads in that very release.

The checker reads skeletons, never weights: an output is its skeleton with the input's payloads copied in verbatim
(io/write.py), so the checker runs on the skeleton with each payload left in the source replaced by a placeholder,
and the gate requires that every such payload keeps the shape and type it had in the input, whose checker verdict
covered it. The full check of both files read every weight, twice the cost of a default repair of a large model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ..errors import BadInputError, ValidationFailedError, one_line
from ..io import onnx_proto as onnx
from ..io.onnx_extension import onnx_extension
from ..model.graph import all_tensors

if TYPE_CHECKING:
    from ..io.read import LoadedModel
    from ..options import RepairOptions
    from ..targets import TargetRuntime
    from .child import RuntimeChild
    from .validation import PendingProof, ValidationResult

# Proves one staged merged decoder (its path) and returns the figures; `repair(validator=...)` is the seam for tests.
Validator = Callable[[Path], "ValidationResult"]
_PLACEHOLDER = "graphfix-placeholder"


@dataclass
class Evidence:
    """What the gates established, for the result: the decode proof's figures, and the release that loaded the
    output before it landed."""

    validation: ValidationResult | None = None
    loaded_on: str | None = None


# --- the checker gate -------------------------------------------------------------------------------------------


def _placeholders(model: onnx.ModelProto) -> dict[tuple[tuple[str, str], ...], tuple[tuple[int, ...], int]]:
    """Each payload not in the skeleton (left in the source file, or in external data), by where it lives, with the
    shape and element type the model declares for it."""
    return {tuple((e.key, e.value) for e in t.external_data): (tuple(t.dims), t.data_type)
            for t in all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL}


def _checker_scratch(scratch: Path) -> Path | None:
    """`scratch`, or None (TMPDIR) where the checker could not open a file under it: the checker takes its path as
    a UTF-8 string, and an output path near PATH_MAX leaves no room for the checker's own names."""
    from .paths import is_utf8

    room = len(os.fsencode(scratch)) + len("/.graphfix-checker-XXXXXXXX/") + len(_PLACEHOLDER) + 1
    try:
        limit = os.pathconf(scratch, "PC_PATH_MAX") if hasattr(os, "pathconf") else 260  # Windows: MAX_PATH
    except (OSError, ValueError):
        limit = 4096
    fits = room < limit
    return scratch if fits and is_utf8(str(scratch)) else None


def checker_failure(model: onnx.ModelProto, scratch: Path) -> str | None:
    """onnx.checker's full check of the skeleton, each payload it lacks pointing at one empty placeholder file (in
    a temporary directory under `scratch`, or TMPDIR); None when it passes, else the checker's reason on one line."""
    import tempfile  # only runs that validate pay for it

    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)  # kilobytes: the payloads are not in it
    for tensor in all_tensors(skeleton):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            del tensor.external_data[:]
            tensor.external_data.add(key="location", value=_PLACEHOLDER)
    with tempfile.TemporaryDirectory(prefix=".graphfix-checker-", dir=_checker_scratch(scratch)) as directory:
        Path(directory, _PLACEHOLDER).touch()
        path = os.path.join(directory, "skeleton.onnx")
        Path(path).write_bytes(skeleton.SerializeToString())
        try:
            onnx_extension("checker").check_model_path(path, True, False, False)  # full_check, as check_model
        except Exception as err:  # onnx raises ValidationError, InferenceError or C++ errors: any means "did not pass"
            return one_line(str(err), limit=None)
    return None


def _staging_directory_of(staged: Path) -> Path:
    """The staging directory a staged file belongs to: writable, on the output's disk, and removed by the writer
    however the run ends. An in-place model is staged beside its data as `<staging directory>.onnx`, so its parent is
    the user's folder, where a checker directory left by a signal would be debris."""
    beside = staged.with_suffix("")
    return beside if beside.is_dir() else staged.parent


@dataclass(frozen=True)
class CheckerGate:
    """If the input passed the checker, each output must too (an input that did not, e.g. a quantized export using
    contrib ops, is not held to it). An output written as a byte copy of the input needs no check at all."""

    source: onnx.ModelProto
    outputs: Mapping[Path, onnx.ModelProto | None]
    step: str = "validating"

    def __call__(self, staged: Mapping[Path, Path]) -> None:
        changed = {out: model for out, model in self.outputs.items() if model is not None}
        if not changed:
            return
        scratch = _staging_directory_of(next(iter(staged.values())))
        payloads = _placeholders(self.source)
        for out, model in changed.items():
            name = "repaired model" if len(self.outputs) == 1 else out.name
            moved = next((where for where, kind in _placeholders(model).items() if payloads.get(where) != kind), None)
            failure = (f"a weight payload changed its shape or type ({dict(moved)})" if moved is not None
                       else checker_failure(model, scratch))
            # The input is checked only now: an output that passes needs no verdict on it (one checker run, not two)
            if failure is not None and checker_failure(self.source, scratch) is None:
                raise ValidationFailedError(f"{name} fails onnx.checker: {failure}")


# --- the decode and load gates ----------------------------------------------------------------------------------


def require_proof(validation: ValidationResult, shown_as: Path, failed: str) -> ValidationResult:
    """The proof's figures, named for the path the user will see; raises `failed: <first failure>` when it did
    not hold."""
    validation.model = str(shown_as)
    if not validation.ok:
        raise ValidationFailedError(f"{failed}: {validation.first_failure}", validation)
    return validation


@dataclass
class DecodeGate:
    """The merged decoder staged for `out` decodes like full recompute (in `runtime`, else the installed
    onnxruntime), with the input as the judge of any divergence; fed by `encoder` when the export has one.

    Its process can be started before the files are written (`start`, by proof_started), so that it imports
    onnxruntime meanwhile, and be sent the staged file before the checker gate runs (`send`, the SendDecode gate),
    so that the checker runs here while the proof runs there: the gate itself then only waits for the answer."""

    out: Path
    judge: Path
    runtime: TargetRuntime | None
    evidence: Evidence
    validator: Validator | None = None
    encoder: Path | None = None
    pair: tuple[Path, Path] | None = None  # the split pair it was merged from: the loop must decode like it
    # The output as written and the judge as read, which the proof's request needs and need not be read again.
    model: onnx.ModelProto | None = None
    judge_model: onnx.ModelProto | None = None
    step: str = "validating"
    _child: RuntimeChild | None = field(default=None, init=False, repr=False)
    _pending: PendingProof | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Start the proof's process, unless a test's validator replaces it or its release is not installed yet
        (installing is said when the proof needs it, after the write)."""
        from .runtimes import start_if_installed

        if self.validator is None and self._child is None:
            self._child = start_if_installed(self.runtime.release if self.runtime else None)

    def send(self, staged: Mapping[Path, Path]) -> None:
        if self.validator is None and self._pending is None:
            from .validation import start_validation  # numpy + onnxruntime: only when validating

            child, self._child = self._child, None
            read = {staged[self.out]: self.model, self.judge: self.judge_model}
            self._pending = start_validation(staged[self.out], ort_version=self.runtime, judge=self.judge,
                                             encoder=self.encoder, pair=self.pair, child=child,
                                             read={path: model for path, model in read.items() if model is not None})

    def __call__(self, staged: Mapping[Path, Path]) -> None:
        if self.validator is not None:
            validation = self.validator(staged[self.out])
        else:
            self.send(staged)
            assert self._pending is not None
            pending, self._pending = self._pending, None
            validation = pending.result()
        self.evidence.validation = require_proof(validation, self.out,
                                                 "repaired model does not decode like full recompute")
        self.evidence.loaded_on = validation.onnxruntime

    def close(self) -> None:
        """End the proof's process, however far it got."""
        for child in (self._child, self._pending.child if self._pending else None):
            if child is not None:
                child.close()
        self._child = self._pending = None


@dataclass(frozen=True)
class SendDecode:
    """The decode gate's proof sent on its way, to run while the gates between run here."""

    decode: DecodeGate
    step: str = "validating"

    def __call__(self, staged: Mapping[Path, Path]) -> None:
        self.decode.send(staged)


@contextmanager
def proof_started(gates: Sequence[Gate]) -> Iterator[None]:
    """The decode gates' processes started now (while the caller writes), and ended however the block ends."""
    decodes = [gate for gate in gates if isinstance(gate, DecodeGate)]
    try:
        for gate in decodes:
            gate.start()
        yield
    finally:
        for gate in decodes:
            gate.close()


@dataclass(frozen=True)
class SplitDecodeGate:
    """The staged split pair decodes like full recompute, and its logits equal the merged decoder's."""

    decoder: Path
    decoder_with_past: Path
    merged: Path
    shown_as: Path
    runtime: TargetRuntime | None
    evidence: Evidence
    step: str = "validating"

    def __call__(self, staged: Mapping[Path, Path]) -> None:
        from .validation import validate_split

        validation = validate_split(staged[self.decoder], staged[self.decoder_with_past], merged=self.merged,
                                    ort_version=self.runtime)
        self.evidence.validation = require_proof(validation, self.shown_as,
                                                 "split decoders do not decode like full recompute")
        self.evidence.loaded_on = validation.onnxruntime


@dataclass(frozen=True)
class LoadGate:
    """Every staged output loads in `runtime` (the installed onnxruntime when None)."""

    runtime: TargetRuntime | None
    evidence: Evidence
    step: str = "validating"

    def __call__(self, staged: Mapping[Path, Path]) -> None:
        from .runtimes import load_in_onnxruntime

        for path in staged.values():
            self.evidence.loaded_on = load_in_onnxruntime(path, self.runtime)


def _installed_for_load(target: TargetRuntime) -> TargetRuntime:
    """The target release, installed now (before anything is written) so that a release pip cannot install is one
    line up front."""
    from .runtimes import runtime_python

    try:
        runtime_python(target.release)
    except BadInputError as err:
        raise BadInputError(f"{err} (the output is loaded there before it lands; --skip-target-load writes it "
                            "unloaded)") from None
    return target


Gate = Union[CheckerGate, DecodeGate, SendDecode, SplitDecodeGate, LoadGate]


def proof_gates(options: RepairOptions, loaded: LoadedModel, outputs: Mapping[Path, onnx.ModelProto | None],
                decode: DecodeGate | SplitDecodeGate | None, evidence: Evidence) -> list[Gate]:
    """The gates for one write, in the order they run: the checker, then the decode proof (`decode`: None for a
    model with no decode loop of its own, which is loaded instead), then the load on the target release unless the
    proof already ran there."""
    gates: list[Gate] = []
    proven_on = options.proof_runtime if options.validate and decode is not None else None
    target = options.target_ort if options.load_on_target and options.target_ort != proven_on else None
    if options.validate:
        if isinstance(decode, DecodeGate):
            gates.append(SendDecode(decode))  # the proof runs in its process while the checker runs here
        gates.append(CheckerGate(loaded.model, outputs))
        if decode is not None:
            gates.append(decode)
        elif target is None:
            gates.append(LoadGate(None, evidence))
    if target is not None:
        gates.append(LoadGate(_installed_for_load(target), evidence, step="loading on target"))
    return gates


__all__ = ["CheckerGate", "DecodeGate", "Evidence", "Gate", "LoadGate", "SendDecode", "SplitDecodeGate",
           "Validator", "checker_failure", "proof_gates", "proof_started", "require_proof"]
