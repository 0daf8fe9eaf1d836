"""The library API and the one pipeline every command runs:

    read (io/read.py)  ->  find (model/)  ->  passes (passes/)  ->  write, staged (io/write.py)
                       ->  prove the staged files (proof/)  ->  land them in one rename block

`repair` runs all of it; `check` stops after the passes, on a model it never writes, so its findings are exactly
the changes `repair` would make; `split` (batch/split.py) turns the repaired model into two and hands both to the
same write/prove/land path. Model directories (batch/model_directory.py) call `repair` per merged decoder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BadInputError, NotAMergedDecoderError, ValidationFailedError
from .findings import Finding
from .io import onnx_proto as onnx
from .io.read import LoadedModel, read_model
from .io.write import InPlaceBackup, check_output_file, same_file, write_models
from .model.merged_decoder import MergedDecoder, PlainModel, find_merged_decoder
from .passes import Subject, pipeline, run_passes

if TYPE_CHECKING:
    from .proof.validation import ValidationResult

# Proves one staged merged decoder (its path) and returns the figures; `repair(validator=...)` is the seam for tests.
Validator = Callable[[Path], "ValidationResult"]
StepCallback = Callable[[str], None]


@dataclass
class RepairResult:
    input: Path
    output: Path
    changes: list[Finding] = field(default_factory=list)
    validation: ValidationResult | None = None
    backup: Path | None = None
    loaded_on: str | None = None  # the onnxruntime release that loaded the output before it landed
    versions: dict[str, str] = field(default_factory=dict)  # "before" / "after": IR version and opset imports
    oldest_onnxruntime: str | None = None  # the oldest release that loads the output, by the measured tables

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {"input": str(self.input), "output": str(self.output), "changed": self.changed,
                "changes": [c.to_dict() for c in self.changes], "backup": str(self.backup) if self.backup else None,
                "validation": self.validation.to_dict() if self.validation else None, "loaded_on": self.loaded_on,
                "versions": self.versions, "oldest_onnxruntime": self.oldest_onnxruntime}


def versions_of(model: onnx.ModelProto) -> str:
    """`IR 9, opset 19` (+ `com.microsoft 1` ...): what decides which onnxruntime loads a model."""
    opsets = [f"{'opset' if o.domain in ('', 'ai.onnx') else o.domain} {o.version}" for o in model.opset_import]
    return ", ".join([f"IR {model.ir_version}", *sorted(opsets, key=lambda o: not o.startswith("opset"))])


@dataclass
class CheckResult:
    path: Path
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # set when the file could not be checked at all
    skipped: str | None = None  # why a file was passed over (not a merged decoder, with ignore_other_models)
    models: list[CheckResult] = field(default_factory=list)  # a directory's merged decoders, one result each
    oldest_onnxruntime: str | None = None  # the oldest release that loads the file as it is, by the measured tables

    @property
    def ok(self) -> bool:
        return not self.findings and self.error is None and all(m.ok for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "error": self.error, "skipped": self.skipped,
                "findings": [f.to_dict() for f in self.findings], "models": [m.to_dict() for m in self.models],
                "oldest_onnxruntime": self.oldest_onnxruntime}


def find_subject(model: onnx.ModelProto, *, any_model: bool = False) -> Subject:
    """The merged decoder in `model`; with `any_model`, any other model of an export (its encoder, split decoders)
    is accepted as a PlainModel, on which only the passes valid on any model run (version retargeting)."""
    try:
        return find_merged_decoder(model)
    except NotAMergedDecoderError:
        if not any_model:
            raise
        return PlainModel(model)


def find_and_fix(loaded: LoadedModel, target_ort: str | None, *, any_model: bool = False,
                 infer_types: bool = True) -> tuple[Subject, list[Finding]]:
    """find -> passes: the subject, edited in place, and every change made to it. A model whose structure graphfix
    refuses is first shown to onnxruntime: when onnxruntime cannot load it either, its reason is the one to give
    (a converter that broke the model, not a model of another kind). So is a model whose skeleton gives onnx's
    strict inference or onnxruntime's own rules a doubt (proof/loadable.py): check, repair and split then give one
    verdict, onnxruntime's reason and exit 2, instead of findings on a file no runtime loads. `infer_types` False
    leaves out strict inference (`repair --no-validate`, which promises nothing about loading, keeps copy cost)."""
    from .proof.loadable import require_loadable_if_doubtful

    require_loadable_if_doubtful(loaded, infer=infer_types)
    try:
        subject = find_subject(loaded.model, any_model=any_model)
    except NotAMergedDecoderError:
        require_loadable(loaded.path)
        raise
    return subject, run_passes(subject, pipeline(target_ort))


def oldest_release_of(model: onnx.ModelProto) -> str | None:
    """X.Y of the oldest onnxruntime release that loads `model`, by the measured tables; None when none does."""
    from .release_floor import oldest_release

    return oldest_release(model).release


def require_loadable(path: Path) -> None:
    """Raise BadInputError with onnxruntime's reason unless this process's onnxruntime loads the model."""
    from .proof.client_loop import load_session  # onnxruntime: only on the paths that need it

    load_session(str(path))


def passes_checker(path: Path) -> bool:
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
        return True
    except Exception:  # onnx raises ValidationError, InferenceError or C++ errors: any means "did not pass"
        return False


def keep_checker_verdict(input_passed: bool, staged: dict[Path, Path]) -> None:
    """If the input passed onnx.checker's full check, each staged output must too (an input that did not, e.g. a
    quantized export using contrib ops, is not held to it)."""
    if not input_passed:
        return
    for out, path in staged.items():
        try:
            onnx.checker.check_model(os.fspath(path), full_check=True)
        except Exception as err:
            name = "repaired model" if len(staged) == 1 else out.name
            raise ValidationFailedError(f"{name} fails onnx.checker: {' '.join(str(err).split())}") from None


def require_proof(validation: ValidationResult, shown_as: Path, failed: str) -> ValidationResult:
    """The proof's figures, named for the path the user will see; raises `failed: <first failure>` when it did
    not hold."""
    validation.model = str(shown_as)
    if not validation.ok:
        raise ValidationFailedError(f"{failed}: {validation.first_failure}", validation)
    return validation


def _target_release(target_ort: str) -> str:
    """The release a --target-ort output is loaded in, installed now (before anything is written) so that a
    release pip cannot install is one line up front."""
    from .errors import BadInputError
    from .proof.runtimes import full_release, runtime_python

    release = full_release(target_ort)
    assert release is not None
    try:
        runtime_python(release)
    except BadInputError as err:
        raise BadInputError(f"{err} (the output is loaded there before it lands; --skip-target-load writes it "
                            "unloaded)") from None
    return release


def _decode_proof(source: Path, runtime: str | None, validator: Validator | None,
                  encoder: Path | None = None) -> Validator:
    """How a staged merged decoder is proven: the decode loop, in `runtime` (X.Y) or this process's onnxruntime,
    with the input as the judge of any divergence from full recompute; fed by `encoder` when the export has one."""
    if validator is not None:
        return validator

    def decode(staged: Path) -> ValidationResult:
        from .proof.runtimes import full_release
        from .proof.validation import validate  # numpy + onnxruntime: only when validating

        return validate(staged, ort_version=full_release(runtime), judge=source, encoder=encoder)

    return decode


def repair(source: str | os.PathLike[str], out: str | os.PathLike[str], *, run_validation: bool = True,
           in_place: bool = False, target_ort: str | None = None, validate_on_target: bool = False,
           load_on_target: bool = True, any_model: bool = False, data_mode: str = "clone",
           on_step: StepCallback | None = None, validator: Validator | None = None,
           encoder: str | os.PathLike[str] | None = None) -> RepairResult:
    """Repair the merged decoder at `source` into `out`. Raises a GraphfixError subclass; writes nothing then.

    With `target_ort` (e.g. "1.16") versions are retargeted for that onnxruntime and the staged output is loaded
    in that very release before it lands (its newest patch, installed into a cached venv on first use), unless
    `load_on_target` is False; `validate_on_target` runs the decode proof inside that release too. `any_model`
    accepts any other ONNX model of an export (an encoder) and only retargets it. `data_mode` says how external
    data lands beside `out` (see io.write.write_models): "clone", "copy" or "link". `on_step(name)` is told each
    step as it starts ("reading", "repairing", "writing", "validating", "loading on target"), for progress.
    `validator(staged_path)` replaces the decode proof (tests). `encoder` (the export's encoder_model.onnx) feeds
    the proof instead of synthesized encoder states, so the export is proven end to end."""
    step = on_step or (lambda name: None)
    source, out = Path(source), Path(out)
    if same_file(source, out) or source.resolve() == out.resolve():
        if not in_place:
            raise BadInputError(f"output is the input ({source}); pass --in-place to overwrite it "
                                f"(keeps {source.name}.bak)")
    elif in_place:
        raise BadInputError("--in-place needs the output to be the input")
    if validate_on_target and not target_ort:
        raise BadInputError("--validate-on-target needs --target-ort")
    step("reading")
    loaded = read_model(source)
    check_output_file(out)
    step("repairing")
    before = versions_of(loaded.model)
    subject, changes = find_and_fix(loaded, target_ort, any_model=any_model, infer_types=run_validation)
    result = RepairResult(input=source, output=out, changes=changes,
                          versions={"before": before, "after": versions_of(subject.model)},
                          oldest_onnxruntime=oldest_release_of(subject.model))
    prove = _decode_proof(source, target_ort if validate_on_target else None, validator,
                          Path(encoder) if encoder else None)
    checker_held = passes_checker(source) if run_validation else False
    target_release = _target_release(target_ort) if target_ort and load_on_target else None

    def before_commit(staged: dict[Path, Path]) -> None:
        from .proof.runtimes import load_in_onnxruntime

        merged = isinstance(subject, MergedDecoder)
        if run_validation:
            step("validating")
            keep_checker_verdict(checker_held, staged)
            if merged:
                result.validation = require_proof(prove(staged[out]), out,
                                                  "repaired model does not decode like full recompute")
                result.loaded_on = result.validation.onnxruntime
            elif not target_release:  # an encoder: no decode loop of its own, so its proof is a load
                result.loaded_on = load_in_onnxruntime(staged[out])
        if target_release and not (run_validation and validate_on_target and merged):
            step("loading on target")
            result.loaded_on = load_in_onnxruntime(staged[out], target_release)

    step("writing")
    backup = InPlaceBackup(source) if in_place else None
    try:
        result.backup = backup.make() if backup else None
        write_models({out: subject.model if changes else None}, loaded, before_commit, data_mode=data_mode)
    except BaseException:  # whatever failed, a bug or Ctrl-C included
        if backup:
            backup.discard_if_unchanged()
        raise
    return result


def check(path: str | os.PathLike[str], *, target_ort: str | None = None, ignore_other_models: bool = False,
          any_model: bool = False) -> CheckResult:
    """Everything in `path` that would break a plain present->past client: the passes run on a model that is
    never written, so the findings are exactly the changes `repair` would make. With `ignore_other_models` a valid
    ONNX model that is not a merged decoder (an export's encoder) is passed over instead of refused; with
    `any_model` it is checked for what `target_ort` needs (retargeting only). A directory, as on the command line,
    stands for its merged decoders (of every model directory under it), and with `target_ort` for every other ONNX
    model of the export too: one result each in `models`, their findings together in `findings`."""
    path = Path(path)
    if path.is_dir():
        from .batch.layouts import check_targets

        models = [check(t.path, target_ort=target_ort, any_model=not t.merged_decoder)
                  for t in check_targets(path, every_model=bool(target_ort))]
        return CheckResult(path=path, findings=[f for m in models for f in m.findings], models=models)
    loaded = read_model(path)
    oldest = oldest_release_of(loaded.model)  # as it is, before the passes edit it
    try:
        _, findings = find_and_fix(loaded, target_ort, any_model=any_model)
    except NotAMergedDecoderError as err:
        if not ignore_other_models:
            raise
        return CheckResult(path=path, skipped=str(err), oldest_onnxruntime=oldest)
    if not findings:
        require_loadable(path)  # "ok" is a promise a client can load it
    return CheckResult(path=path, findings=findings, oldest_onnxruntime=oldest)


__all__ = ["CheckResult", "RepairResult", "check", "find_and_fix", "find_subject", "repair"]
