"""The library API: one function per command, each returning one result object.

    repair:   read -> find the merged decoder -> passes -> write atomically, validating before it lands
    check:    read -> find -> passes, on a model that is never written (so check == repair's changes)
    validate: the decode-loop proof, see validation.py and decode_loop.py
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import onnx_proto as onnx

from .errors import BadInputError, NotAMergedDecoderError, ValidationFailedError
from .findings import Finding
from .merged_decoder import MergedDecoder, PlainModel, find_merged_decoder
from .modelfile import InPlaceBackup, check_output_location, read_model, same_file, write_model
from .ort_runtimes import full_release, load_in_onnxruntime
from .passes import PIPELINE, pipeline

if TYPE_CHECKING:
    from .validation import ValidationResult


@dataclass
class RepairResult:
    input: Path
    output: Path
    changes: list[Finding] = field(default_factory=list)
    validation: ValidationResult | None = None
    backup: Path | None = None

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict:
        return {"input": str(self.input), "output": str(self.output), "changed": self.changed,
                "changes": [c.to_dict() for c in self.changes], "backup": str(self.backup) if self.backup else None,
                "validation": self.validation.to_dict() if self.validation else None}


@dataclass
class CheckResult:
    path: Path
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # set when the file could not be checked at all
    skipped: str | None = None  # why a file was passed over (not a merged decoder, with ignore_other_models)

    @property
    def ok(self) -> bool:
        return not self.findings and self.error is None

    def to_dict(self) -> dict:
        return {"path": str(self.path), "ok": self.ok, "error": self.error, "skipped": self.skipped,
                "findings": [f.to_dict() for f in self.findings]}


def _checker_passes(path: Path) -> bool:
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
        return True
    except Exception:  # onnx raises ValidationError, InferenceError or C++ errors: any means "did not pass"
        return False


def _plan(model: onnx.ModelProto, target_ort: str | None):
    """What to run the passes on, and which passes. A model that is not a merged decoder (the encoder, the split
    decoders of the same export) can still need retargeting for the runtime, and nothing else."""
    try:
        return find_merged_decoder(model), pipeline(target_ort)
    except NotAMergedDecoderError:
        if target_ort is None:
            raise
        return PlainModel(model), pipeline(target_ort)[len(PIPELINE):]


def repair(source: str | os.PathLike, out: str | os.PathLike, *, run_validation: bool = True,
           in_place: bool = False, target_ort: str | None = None, validate_on_target: bool = False,
           data_mode: str = "clone", on_step: Callable[[str], None] | None = None) -> RepairResult:
    """Repair the merged decoder at `source` into `out`. Raises a GraphfixError subclass; writes nothing then.

    With `target_ort` (e.g. "1.16") versions are retargeted for that onnxruntime; any other ONNX model (an
    encoder) is accepted then and only retargeted. `validate_on_target` runs the proof inside that release.
    `data_mode` says how external data lands beside `out` (see modelfile.write_model): "clone", "copy" or "link".
    `on_step(name)` is told each step as it starts ("reading", "repairing", "writing", "validating"), for progress."""
    step = on_step or (lambda name: None)
    source, out = Path(source), Path(out)
    if same_file(source, out) or source.resolve() == out.resolve():
        if not in_place:
            raise BadInputError(f"output is the input ({source}); pass --in-place to overwrite it (keeps {source.name}.bak)")
    elif in_place:
        raise BadInputError("--in-place needs the output to be the input")
    if validate_on_target and not target_ort:
        raise BadInputError("--validate-on-target needs --target-ort")
    step("reading")
    loaded = read_model(source)
    check_output_location(out)
    step("repairing")
    subject, passes = _plan(loaded.model, target_ort)
    changes = [finding for repair_pass in passes for finding in repair_pass(subject)]
    result = RepairResult(input=source, output=out, changes=changes)
    runtime = full_release(target_ort) if validate_on_target else None

    checker_held = _checker_passes(source) if run_validation else False

    def before_commit(staged: Path) -> None:
        if not run_validation:
            return
        step("validating")
        if checker_held:
            try:
                onnx.checker.check_model(os.fspath(staged), full_check=True)
            except Exception as err:
                raise ValidationFailedError(f"repaired model fails onnx.checker: {' '.join(str(err).split())}") from None
        if not isinstance(subject, MergedDecoder):
            load_in_onnxruntime(staged, runtime)  # an encoder or split decoder: no decode loop of its own
            return
        from .validation import validate  # numpy + onnxruntime: only when validating

        result.validation = validate(staged, ort_version=runtime)
        result.validation.model = str(out)
        if not result.validation.ok:
            raise ValidationFailedError(f"repaired model does not decode like full recompute: "
                                        f"{result.validation.first_failure}", result.validation)

    step("writing")
    backup = InPlaceBackup(source) if in_place else None
    try:
        result.backup = backup.make() if backup else None
        write_model(subject.model if changes else None, out, loaded, before_commit, data_mode=data_mode)
    except BaseException:  # whatever failed, a bug or Ctrl-C included
        if backup:
            backup.discard_if_unchanged()
        raise
    return result


def check(path: str | os.PathLike, *, target_ort: str | None = None,
          ignore_other_models: bool = False) -> CheckResult:
    """Everything in `path` that would break a plain present->past client: the passes run on a model that is
    never written, so the findings are exactly the changes `repair` would make. With `ignore_other_models` a valid
    ONNX model that is not a merged decoder (an export's encoder) is passed over instead of refused."""
    path = Path(path)
    loaded = read_model(path)
    try:
        subject, passes = _plan(loaded.model, target_ort)
    except NotAMergedDecoderError as err:
        if not ignore_other_models:
            raise
        return CheckResult(path=path, skipped=str(err))
    return CheckResult(path=path, findings=[f for repair_pass in passes for f in repair_pass(subject)])


__all__ = ["CheckResult", "RepairResult", "check", "repair"]
