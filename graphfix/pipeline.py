"""The library API and the one pipeline every command runs:

    read (io/read.py)  ->  find (model/)  ->  passes (passes/)  ->  write, staged (io/write.py)
                       ->  prove the staged files (proof/)  ->  land them in one rename block

`repair` runs all of it; `check` stops after the passes, on a model it never writes, so its findings are exactly
the changes `repair` would make; `split` (split_decoder.py) turns the repaired model into two and hands both to the
same write/prove/land path. Model directories (batch/model_directory.py) call `repair` per merged decoder, and per
split pair on the merged decoder made of it first (batch/split_pairs.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BadInputError, NotAMergedDecoderError
from .findings import Finding
from .io import onnx_proto as onnx
from .io.external_data import external_needs, open_needed
from .io.read import LoadedModel, Skeleton, parse_skeleton, read_model, read_skeleton
from .io.write import InPlaceBackup, check_in_place, check_output_file, input_files, write_models
from .model.graph import AI_ONNX
from .model.merged_decoder import MergedDecoder, PlainModel, find_merged_decoder
from .options import RepairOptions
from .passes import Subject, pipeline, run_passes
from .proof.gates import DecodeGate, Evidence, Validator, proof_gates, proof_started
from .proof.loadable import confirm_loadable, require_loadable, require_loadable_if_doubtful
from .targets import TargetRuntime, as_target

if TYPE_CHECKING:
    from .batch.layouts import CheckTarget
    from .proof.validation import ValidationResult

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
    written: bool = True  # False for an in-place repair with nothing to repair: the input is left as it is
    oldest_onnxruntime: str | None = None  # the oldest release that loads the output, by the measured tables

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {"input": str(self.input), "output": str(self.output), "changed": self.changed,
                "changes": [c.to_dict() for c in self.changes], "backup": str(self.backup) if self.backup else None,
                "validation": self.validation.to_dict() if self.validation else None, "loaded_on": self.loaded_on,
                "versions": self.versions, "oldest_onnxruntime": self.oldest_onnxruntime,
                "written": self.written}


def versions_of(model: onnx.ModelProto) -> str:
    """`IR 9, opset 19` (+ `com.microsoft 1` ...): what decides which onnxruntime loads a model."""
    opsets = [f"{'opset' if o.domain in AI_ONNX else o.domain} {o.version}" for o in model.opset_import]
    return ", ".join([f"IR {model.ir_version}", *sorted(opsets, key=lambda o: not o.startswith("opset"))])


@dataclass
class CheckResult:
    path: Path
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # set when the file could not be checked at all
    error_kind: str = "unreadable"  # what the summary calls an error: "unreadable", or "not a merged decoder"
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


def find_and_fix(loaded: LoadedModel, target: TargetRuntime | None, *, any_model: bool = False,
                 infer_types: bool = True) -> tuple[Subject, list[Finding]]:
    """find -> passes: the subject, edited in place, and every change made to it. A model whose structure graphfix
    refuses is first shown to onnxruntime: when onnxruntime cannot load it either, its reason is the one to give
    (a converter that broke the model, not a model of another kind). So is a model whose skeleton gives onnx's
    strict inference or onnxruntime's own rules a doubt (proof/loadable.py): check, repair and split then give one
    verdict, onnxruntime's reason and exit 2, instead of findings on a file no runtime loads. `infer_types` False
    leaves out strict inference (`repair --no-validate`, which promises nothing about loading, keeps copy cost)."""
    require_loadable_if_doubtful(loaded, infer=infer_types)
    try:
        subject = find_subject(loaded.model, any_model=any_model)
    except NotAMergedDecoderError:
        require_loadable(loaded.path)
        raise
    return subject, run_passes(subject, pipeline(target))


def oldest_release_of(model: onnx.ModelProto) -> str | None:
    """X.Y of the oldest onnxruntime release that loads `model`, by the measured tables; None when none does."""
    from .targets.release_floor import oldest_release

    return oldest_release(model).release


def repair(source: str | os.PathLike[str], out: str | os.PathLike[str], options: RepairOptions | None = None, *,
           on_step: StepCallback | None = None, validator: Validator | None = None,
           **keywords: object) -> RepairResult:
    """Repair the merged decoder at `source` into `out` as `options` say (see options.RepairOptions; keywords
    change single fields: `repair(a, b, validate=False, target_ort="1.16")`). Raises a GraphfixError
    subclass; writes nothing then.

    With a target (e.g. "1.16") versions are retargeted for that onnxruntime and the staged output is loaded in
    that very release before it lands (its newest patch, installed into a cached venv on first use). `on_step(name)`
    is told each step as it starts ("reading", "repairing", "writing", "validating", "loading on target"), for
    progress. `validator(staged_path)` replaces the decode proof (tests). With an `encoder` (the export's
    encoder_model.onnx), its output feeds the proof instead of synthesized encoder states: the export is proven end
    to end."""
    options = (options or RepairOptions()).but(**keywords)
    step = on_step or (lambda name: None)
    source, out = Path(source), Path(out)
    check_in_place(source, out, options.in_place, f"overwrite it (keeps {source.name}.bak)")
    step("reading")
    loaded = read_model(source)
    if not options.in_place and out.resolve() in input_files(loaded):  # said before "exists": the graver reason
        raise BadInputError(f"output {out} is a file the input reads; pick another output name")
    check_output_file(out, replace=options.force or options.in_place)
    step("repairing")
    before = versions_of(loaded.model)
    subject, changes = find_and_fix(loaded, options.target_ort, any_model=options.any_model,
                                    infer_types=options.validate)
    result = RepairResult(input=source, output=out, changes=changes,
                          versions={"before": before, "after": versions_of(subject.model)},
                          oldest_onnxruntime=oldest_release_of(subject.model))
    if options.in_place and not changes:  # nothing to write: no backup, no rename, the file stays the same inode
        result.written = False
        return result
    outputs = {out: subject.model if changes else None}
    evidence = Evidence()
    decode = (DecodeGate(out, judge=source, runtime=options.proof_runtime, evidence=evidence, validator=validator,
                         encoder=options.encoder, pair=options.split_pair, model=subject.model,
                         judge_model=loaded.model)
              if isinstance(subject, MergedDecoder) else None)
    gates = proof_gates(options, loaded, outputs, decode, evidence)
    step("writing")
    backup = InPlaceBackup(source) if options.in_place else None
    try:
        result.backup = backup.make() if backup else None
        with proof_started(gates):  # the proof's process imports onnxruntime while the files are written
            write_models(outputs, loaded, gates, data_mode=options.data_mode, on_step=step)
    except BaseException:  # whatever failed, a bug or Ctrl-C included
        if backup:
            backup.discard_if_unchanged()
        raise
    result.validation, result.loaded_on = evidence.validation, evidence.loaded_on
    return result


def check_target(target: CheckTarget, target_ort: TargetRuntime | None, *,
                 ignore_other_models: bool = False, load: bool = False) -> CheckResult:
    """One file a check covers (batch/layouts.check_targets): a split pair is checked as the merged decoder repair
    would make of it, in memory."""
    if target.split_pair is not None and target.model_directory is not None:
        from .batch.split_pairs import check_split_pair
        from .targets.release_floor import ReleaseFloor, newest_of

        pair = target.split_pair
        floors = [ReleaseFloor(oldest_release_of(read_model(target.model_directory / name).model))
                  for name in (pair.decoder, pair.with_past)]
        return CheckResult(path=target.path, findings=check_split_pair(target.model_directory, pair,
                                                                       as_target(target_ort)),
                           oldest_onnxruntime=newest_of(floors).release)
    return check(target.path, target_ort=target_ort, ignore_other_models=ignore_other_models,
                 any_model=not target.merged_decoder, load=load)


def check(path: str | os.PathLike[str], *, target_ort: TargetRuntime | str | None = None,
          ignore_other_models: bool = False, any_model: bool = False, load: bool = False) -> CheckResult:
    """Everything in `path` that would break a plain present->past client: the passes run on a model that is
    never written, so the findings are exactly the changes `repair` would make. With `ignore_other_models` a valid
    ONNX model that is not a merged decoder (an export's encoder) is passed over instead of refused; with
    `any_model` it is checked for what `target_ort` needs (retargeting only). With a `target_ort`, what that release
    needs of such a model is reported as findings whatever the flags (a hook that hands an export's encoder to
    `check --target-ort` must hear that the release refuses it); one it loads as it is keeps its verdict. A
    directory, as on the command line, stands for its merged decoders (of every model directory under it), and with
    `target_ort` for every other ONNX model of the export too: one result each in `models`, their findings together
    in `findings`.

    A file without findings is promised loadable by the installed onnxruntime: from its skeleton and the measured
    tables where they decide, else by a session whose verdict is remembered for those bytes (proof/loadable.py
    `confirm_loadable`); `load` creates the session whatever they say."""
    path, target = Path(path), as_target(target_ort)
    if path.is_dir():
        from .batch.layouts import check_targets

        models = [check_target(t, target, load=load) for t in check_targets(path, every_model=target is not None)]
        return CheckResult(path=path, findings=[f for m in models for f in m.findings], models=models)
    skeleton = read_skeleton(path)
    from .passes.contract import CHECK_PASSES
    from .proof import load_verdicts

    options = (f"target {target.release if target else '-'}; ignore other models {ignore_other_models}; any model "
               f"{any_model}; pass contract {os.environ.get(CHECK_PASSES, '')}")  # all that changes the answer
    key = load_verdicts.check_key(skeleton, options)
    if not load and (known := _remembered_check(key, skeleton)) is not None:
        return known
    loaded = parse_skeleton(skeleton)
    result = _check_loaded(loaded, target, ignore_other_models=ignore_other_models, any_model=any_model, load=load)
    load_verdicts.remember_outcome(key, loaded, {
        "findings": [f.to_dict() for f in result.findings], "skipped": result.skipped,
        "oldest_onnxruntime": result.oldest_onnxruntime,
        "external": {location: list(need) for location, need in external_needs(loaded.model).items()}})
    return result


def _check_loaded(loaded: LoadedModel, target: TargetRuntime | None, *, ignore_other_models: bool,
                  any_model: bool, load: bool) -> CheckResult:
    path = loaded.path
    oldest = oldest_release_of(loaded.model)  # as it is, before the passes edit it
    try:
        _, findings = find_and_fix(loaded, target, any_model=any_model)
    except NotAMergedDecoderError as err:
        # Not a merged decoder, but deployed with it: what the target release needs of it is a finding whatever
        # the flags (a hook passes over other models); a model it loads as it is keeps its verdict.
        needs = find_and_fix(loaded, target, any_model=True)[1] if target is not None else []
        if needs:
            return CheckResult(path=path, findings=needs, oldest_onnxruntime=oldest)
        if not ignore_other_models:
            raise
        return CheckResult(path=path, skipped=str(err), oldest_onnxruntime=oldest)
    if not findings:
        confirm_loadable(loaded, load=load)  # "ok" is a promise a client can load it
    return CheckResult(path=path, findings=findings, oldest_onnxruntime=oldest)


def _remembered_check(key: str, skeleton: Skeleton) -> CheckResult | None:
    """The CheckResult remembered for `key` (proof/load_verdicts.py), its external-data files opened and measured
    again as read_model does; None when nothing sound is remembered."""
    from .proof.load_verdicts import remembered_outcome

    outcome = remembered_outcome(key)
    if outcome is None:
        return None
    findings, skipped, oldest = outcome.get("findings"), outcome.get("skipped"), outcome.get("oldest_onnxruntime")
    external = outcome.get("external")
    if not isinstance(findings, list) or not isinstance(external, dict) or \
            not all(isinstance(x, (str, type(None))) for x in (skipped, oldest)):
        return None
    try:
        results = [Finding(**{("pass_name" if k == "pass" else k): v for k, v in f.items()}) for f in findings]
        needs = {str(location): (int(end), str(what)) for location, (end, what) in external.items()}
    except (AttributeError, TypeError, ValueError):
        return None
    if not all(isinstance(v, (str, type(None))) for f in findings for v in f.values()):
        return None
    open_needed(needs, skeleton.path, skeleton.fds)
    return CheckResult(path=skeleton.path, findings=results, skipped=skipped, oldest_onnxruntime=oldest)


__all__ = ["CheckResult", "RepairOptions", "RepairResult", "Validator", "check", "find_and_fix", "find_subject",
           "repair"]
