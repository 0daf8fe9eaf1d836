"""Repair a whole model directory (Optimum or onnx-community layout) into a drop-in replacement.

The output directory is assembled in a hidden staging directory beside it (same filesystem) and renamed into place
only when every merged decoder in it has been repaired and validated, so OUT_DIR either does not exist or is
complete. Files other than the merged decoders are copied (a reflink where the filesystem can), never shared with the
input unless the user asks (`data_mode="link"`): editing the output's config.json must not edit the input's.
External data of other models is always copied, see layouts.plan_directory.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, GraphfixError, raise_if_exhausted
from ..io.datacopy import copy_data_file
from ..io.path_safety import open_inside
from ..io.write import (
    InPlaceBackup,
    backup_path,
    check_in_place,
    check_output_directory,
    land,
    parent_of,
    staging_directory,
)
from ..options import RepairOptions
from ..pipeline import RepairResult, Validator, repair
from ..process import interrupts
from .layouts import encoder_for, find_merged_decoders, plan_directory
from .split_pairs import MergedDraft

if TYPE_CHECKING:
    from ..proof.runtimes import InstallNotice

# on_progress(relative path, step, bytes done with): step is "copying", a repair step (see pipeline.repair) or
# "done"; bytes are reported once per file, when it is done.
ProgressCallback = Callable[[str, str, int], None]


@dataclass
class ModelRepair:
    """One merged decoder of a directory run."""

    path: str  # relative to the directory, POSIX
    result: RepairResult
    seconds: float
    encoder: str | None = None  # the export's encoder that fed its proof (relative), None: synthesized states

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "seconds": round(self.seconds, 3), "encoder": self.encoder,
                **self.result.to_dict()}


@dataclass
class DirectoryRepairResult:
    input: Path
    output: Path
    models: list[ModelRepair] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    retargeted: list[str] = field(default_factory=list)  # ONNX models other than merged decoders (--target-ort)
    oldest_onnxruntime: str | None = None  # the oldest release that loads every ONNX model of the output

    @property
    def changed(self) -> bool:
        return any(m.result.changed for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {"input": str(self.input), "output": str(self.output), "changed": self.changed,
                "models": [m.to_dict() for m in self.models], "linked": self.linked, "copied": self.copied,
                "retargeted": self.retargeted, "oldest_onnxruntime": self.oldest_onnxruntime}


def _repair_one(source: Path, out: Path, options: RepairOptions, name: str = "",
                on_progress: ProgressCallback | None = None,
                validator: Validator | None = None) -> tuple[RepairResult, float]:
    started = time.perf_counter()
    step = (lambda what: on_progress(name, what, 0)) if on_progress else None
    try:
        result = repair(source, out, options, on_step=step, validator=validator)
    except GraphfixError as err:
        # Say which decoder of which model folder failed; the type (and so the exit code) stays.
        err.with_context(f"{source}: " if name and str(source) not in str(err) else "")
        raise
    return result, time.perf_counter() - started


def _size(path: Path) -> int:
    """For progress only: a file removed meanwhile is the repair's error to report, not this one's."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


Job = tuple[str, Path, Path, RepairOptions]  # (relative name, source, out, its options)


def _repair_all(jobs: list[Job], workers: int, on_progress: ProgressCallback | None,
                validator: Validator | None) -> list[ModelRepair]:
    """Repair each (name, source, out); results in input order whatever order the workers finish in. With more
    than one worker, each repair runs in a child process (batch/parallel.py), which reports no steps; the first
    failure stops the rest."""
    from .parallel import Outcome, Task, run_tasks

    parallel = workers > 1 and len(jobs) > 1
    if parallel:
        prepare_runtimes(jobs[0][3])  # installed once here, not once per worker
    finished: dict[int, ModelRepair] = {}

    def collect(index: int, outcome: Outcome) -> None:
        if outcome.error is not None:
            raise outcome.error
        name, source = jobs[index][0], jobs[index][1]
        result, seconds = outcome.value
        finished[index] = ModelRepair(name, result, seconds)
        if on_progress:
            on_progress(name, "done", _size(source))

    if on_progress and parallel:
        for name, *_ in jobs:
            on_progress(name, "repairing", 0)
    run_tasks([Task(_repair_one, (source, out, options, name, None if parallel else on_progress, validator))
               for name, source, out, options in jobs], workers, collect)
    return [finished[i] for i in range(len(jobs))]


def prepare_runtimes(options: RepairOptions, *, on_install: InstallNotice | None = None,
                     on_wait: InstallNotice | None = None) -> None:
    """Install (or wait for another process installing) every onnxruntime release the repairs will run in, before
    they start: in one process, so that parallel repairs never each install it."""
    from ..proof.runtimes import runtime_python

    for release in options.releases:
        runtime_python(release.release, on_install=on_install, on_wait=on_wait)


def _chmod_directory(path: Path, mode: int) -> None:
    """The input directory's permission bits on a new one, keeping the set-group-ID bit it inherited from a setgid
    parent (a shared folder), as `cp -r` does: what is made inside then gets that folder's group, not the user's."""
    inherited = os.stat(path).st_mode & stat.S_ISGID
    os.chmod(path, (mode & 0o7777) | inherited)


def _make_parents(source: Path, staging: Path, name: str) -> None:
    """The directories of `name` inside staging, each with the mode its source directory has."""
    for folder in reversed(Path(name).parents[:-1]):  # outermost first, the staging root itself excluded
        if not (staging / folder).is_dir():
            (staging / folder).mkdir()
            _chmod_directory(staging / folder, os.stat(source / folder).st_mode)


def _carry_over(source: Path, staging: Path, name: str, mode: str) -> None:
    """`name` into staging, through the same resolver as external data (path_safety.open_inside): the file opened is
    checked to be a regular file inside `source`, and that open file is what is linked or copied."""
    target = staging / name
    _make_parents(source, staging, name)
    opened = open_inside(source, name, str(source / name))
    try:
        copy_data_file(opened.fd, opened.real, target, mode)
        if os.stat(target).st_ino != opened.stat.st_ino:  # a copy: the times of the original, as cp -p
            os.utime(target, ns=(opened.stat.st_atime_ns, opened.stat.st_mtime_ns))
    except OSError as err:
        raise_if_exhausted(err)
        raise BadInputError(f"cannot copy {source / name}: {err.strerror or err}") from None
    finally:
        os.close(opened.fd)


def repair_directory(source: str | os.PathLike[str], out: str | os.PathLike[str],
                     options: RepairOptions | None = None, *, jobs: int = 1,
                     on_progress: ProgressCallback | None = None, validator: Validator | None = None,
                     **keywords: object) -> DirectoryRepairResult:
    """Repair every merged decoder in the model directory `source` into the new directory `out`, carrying every
    other file over unchanged; with `target_ort`, every other ONNX model of the export (encoder, split decoders) is
    retargeted for that onnxruntime and loaded in it too, since the user deploys the whole export. `options` are
    those of pipeline.repair (keywords change single fields, as there). `jobs` models are repaired at once, in
    separate processes. With `in_place` (out == source) each decoder (and, with a target, each other model) is
    replaced atomically and keeps its `.bak`; nothing else is touched."""
    options = (options or RepairOptions()).but(**keywords)
    source, out = Path(source), Path(out)
    if jobs < 1:
        raise BadInputError("--jobs must be at least 1")
    check_in_place(source, out, options.in_place, "repair the directory in place (keeps a .bak of each decoder)")
    if options.in_place:
        return _repair_in_place(source, jobs, on_progress, options, validator)
    plan = plan_directory(source, retarget=options.target_ort is not None)
    replacing = options.force and out.is_dir() and not out.is_symlink() and any(out.iterdir())
    check_output_directory(out, source=source, must_be_empty=not replacing)
    data_mode = options.data_mode
    linked = plan.links if data_mode == "link" else []
    copied = plan.copies + [name for name in plan.links if name not in linked]
    with staging_directory(parent_of(out)) as staging:  # removed unless renamed into place
        _chmod_directory(staging, source.stat().st_mode)  # mkdtemp's 0700 is not what the user's directory had
        for name in plan.links + plan.copies:
            if on_progress:
                on_progress(name, "copying", 0)
            # External data of other models is never linked: onnx >= 1.23 refuses a data file with several links.
            _carry_over(source, staging, name, data_mode if name in linked or data_mode == "copy" else "clone")
            if on_progress:
                on_progress(name, "done", (staging / name).stat().st_size)
        for name in plan.decoders + plan.others:
            _make_parents(source, staging, name)
        # The encoders are retargeted first: a decoder's proof is then fed by the encoder as it will be deployed.
        others = _repair_all([(name, source / name, staging / name, options.but(any_model=True))
                              for name in plan.others], jobs, on_progress, validator)
        drafts = {pair.merged: MergedDraft(source, pair, staging, out) for pair in plan.pairs}
        encoders = {name: encoder_for(source, name) for name in plan.decoders + list(drafts)}
        work: list[Job] = []
        for name in plan.decoders + list(drafts):  # a split pair's merged draft is repaired like any merged decoder
            fed = options.but(encoder=_encoder_path(source, staging, encoders[name], plan.others))
            draft = drafts.get(name)
            work.append((name, draft.path, staging / name, draft.repair_options(fed)) if draft is not None
                        else (name, source / name, staging / name, fed))
        models = _repair_all(work, jobs, on_progress, validator) + others
        for draft in drafts.values():  # the merge is the first change; the repair reads the draft, gone now
            draft.discard()
            merged = next(m for m in models if m.path == draft.pair.merged)
            merged.result.changes.insert(0, draft.finding)
            merged.result.input = source / draft.pair.decoder
        for model in models:  # the paths the user will see, not the staging ones
            model.result.output = out / model.path
            if model.result.validation is not None:  # without a proof (--no-validate) no encoder fed anything
                model.encoder = encoders.get(model.path)
                model.result.validation.model = str(out / model.path)
                if model.encoder is not None:
                    model.result.validation.encoder = str(out / model.encoder)
        _land_directory(staging, out, replacing)
    return DirectoryRepairResult(input=source, output=out, models=models, linked=linked, copied=copied,
                                 retargeted=plan.others, oldest_onnxruntime=export_floor(out))


def export_floor(directory: Path) -> str | None:
    """The oldest onnxruntime release that loads every ONNX model of a written export (encoders included), by
    graphfix's measured tables."""
    from ..io.read import read_model
    from ..targets.release_floor import newest_of, oldest_release
    from .layouts import directory_files

    models = [name for name in directory_files(directory) if name.endswith(".onnx")]
    return newest_of([oldest_release(read_model(directory / name).model) for name in models]).release


def _land_directory(staging: Path, out: Path, replacing: bool) -> None:
    """The staged directory renamed to `out` (checked empty above, or with --force an existing output directory,
    which is moved aside first and removed once the new one is in place; put back if the rename fails)."""
    aside: Path | None = None

    def clear() -> None:
        nonlocal aside
        if replacing and out.exists():
            aside = Path(tempfile.mkdtemp(prefix=".graphfix-previous-", dir=out.parent)) / out.name
            os.rename(out, aside)
        elif out.exists():
            out.rmdir()

    try:
        land([(staging, out)], before=clear)
    except BaseException:
        if aside is not None and not out.exists():
            os.rename(aside, out)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside.parent, ignore_errors=True)


def _encoder_path(source: Path, staging: Path, encoder: str | None, retargeted: list[str]) -> Path | None:
    """Where the encoder that feeds a decoder's proof is read: its retargeted copy in staging, else the input's."""
    if encoder is None:
        return None
    return staging / encoder if encoder in retargeted else source / encoder


def _repair_in_place(directory: Path, jobs: int, on_progress: ProgressCallback | None,
                     options: RepairOptions, validator: Validator | None) -> DirectoryRepairResult:
    """Each decoder replaced atomically with its .bak; all of them or none: when one fails, those already replaced
    are put back from their .bak (byte-identical copies of the originals; in place, external data is never
    rewritten) and the error says which. A Ctrl-C instead leaves what landed, complete with its .bak, and the
    interruption message names it (judged from the disk)."""
    names = find_merged_decoders(directory)
    # With a target, the export's other models (encoder, split decoders) are retargeted in place too, as into a
    # new folder: the user deploys the whole export.
    others = plan_directory(directory, retarget=True).others if options.target_ort is not None else []
    # Refuse before the first model is replaced, not halfway through the directory.
    for name in others + names:
        if InPlaceBackup(directory / name).blocked():
            raise BadInputError(f"backup {backup_path(directory / name)} already exists and differs from "
                                f"{directory / name}; move it away first")
    encoders = {name: encoder_for(directory, name) for name in names}
    work = [(name, directory / name, directory / name,
             options.but(encoder=directory / e if (e := encoders[name]) else None)) for name in names]
    try:
        # The encoders first, as into a new folder: a decoder's proof is fed by the encoder as it will be deployed.
        retargeted = _repair_all([(name, directory / name, directory / name, options.but(any_model=True))
                                  for name in others], jobs, on_progress, validator)
        models = _repair_all(work, jobs, on_progress, validator)
        for model in models:
            model.encoder = encoders[model.path] if model.result.validation is not None else None
    except Exception as err:
        restored = _put_back(directory, others + names)
        if restored and isinstance(err, GraphfixError):
            err.with_context(suffix=f"; put back from their .bak: {', '.join(restored)}")
        raise
    return DirectoryRepairResult(input=directory, output=directory, models=models + retargeted, retargeted=others,
                                 oldest_onnxruntime=export_floor(directory))


def _put_back(directory: Path, names: list[str]) -> list[str]:
    """Undo the decoders this run replaced (each has a .bak, none had one before): the .bak is renamed over it."""
    restored = []
    with interrupts.held_for_main_thread():
        for name in names:
            backup = backup_path(directory / name)
            if backup.exists():
                os.replace(backup, directory / name)
                restored.append(name)
    return restored
