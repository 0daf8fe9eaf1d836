"""The library API: one function per command, each returning one result object.

    repair:   read -> find the merged decoder -> passes -> write atomically -> (validate before it lands)
    check:    read -> find -> passes in report-only mode
    validate: see validate.py
"""

from __future__ import annotations

import filecmp
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from .errors import BadInputError, ValidationFailedError
from .findings import Finding
from .merged_decoder import find_merged_decoder
from .modelfile import check_output_location, make_backup, read_model, same_file, write_model
from .passes import pipeline
from .validation import ValidationResult, validate


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

    @property
    def ok(self) -> bool:
        return not self.findings and self.error is None

    def to_dict(self) -> dict:
        return {"path": str(self.path), "ok": self.ok, "error": self.error,
                "findings": [f.to_dict() for f in self.findings]}


def _checker_passes(path: Path) -> bool:
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
        return True
    except Exception:  # onnx raises ValidationError, InferenceError or C++ errors: any means "did not pass"
        return False


def repair(source: str | os.PathLike, out: str | os.PathLike, *, run_validation: bool = True,
           in_place: bool = False, target_ort: str | None = None) -> RepairResult:
    """Repair the merged decoder at `source` into `out`. Raises a GraphfixError subclass; writes nothing then."""
    source, out = Path(source), Path(out)
    if same_file(source, out) or source.resolve() == out.resolve():
        if not in_place:
            raise BadInputError(f"output is the input ({source}); pass --in-place to overwrite it (keeps {source.name}.bak)")
    elif in_place:
        raise BadInputError("--in-place needs the output to be the input")
    loaded = read_model(source)
    check_output_location(out)
    decoder = find_merged_decoder(loaded.model)
    changes = [finding for repair_pass in pipeline(target_ort) for finding in repair_pass(decoder)]
    result = RepairResult(input=source, output=out, changes=changes)

    checker_held = _checker_passes(source) if run_validation else False

    def before_commit(staged: Path) -> None:
        if not run_validation:
            return
        if checker_held:
            try:
                onnx.checker.check_model(os.fspath(staged), full_check=True)
            except Exception as err:
                raise ValidationFailedError(f"repaired model fails onnx.checker: {' '.join(str(err).split())}") from None
        result.validation = validate(staged)
        result.validation.model = str(out)
        if not result.validation.ok:
            raise ValidationFailedError(f"repaired model does not decode like full recompute: "
                                        f"{result.validation.first_failure}", result.validation)

    result.backup = make_backup(source) if in_place else None
    try:
        write_model(decoder.model if changes else None, out, loaded, before_commit)
    except BaseException:
        # Whatever failed (a bug or Ctrl-C included), a backup identical to the input is debris that would block the
        # next --in-place run; one that differs means the new model already landed, so it is kept.
        if result.backup is not None and filecmp.cmp(source, result.backup, shallow=False):
            result.backup.unlink(missing_ok=True)
            result.backup = None
        raise
    return result


def check(path: str | os.PathLike, *, target_ort: str | None = None) -> CheckResult:
    """Everything in `path` that would break a plain present->past client: the passes run on a model that is
    never written, so the findings are exactly the changes `repair` would make."""
    path = Path(path)
    loaded = read_model(path)
    decoder = find_merged_decoder(loaded.model)
    return CheckResult(path=path, findings=[f for repair_pass in pipeline(target_ort) for f in repair_pass(decoder)])


__all__ = ["CheckResult", "RepairResult", "ValidationResult", "check", "repair", "validate"]
