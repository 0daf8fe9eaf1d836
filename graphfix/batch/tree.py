"""Repair a tree of model folders (`models/<name>/...`, any depth) into the same relative folders under OUT.

Each model folder is one single-folder repair (model_directory.repair_directory, whatever that repairs), landed
whole or not at all; a folder that fails is recorded with its error and the run goes on to the next. `jobs` folders
are repaired at once, each in a child process (batch/parallel.py). The onnxruntime releases the repairs need are
installed once, here, before any repair starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import BadInputError, failure_line
from ..io.write import check_in_place
from ..options import RepairOptions
from .layouts import folders_under, holds_merged_decoder
from .model_directory import DirectoryRepairResult, prepare_runtimes, repair_directory
from .parallel import Outcome as ChildOutcome
from .parallel import Task, run_tasks

if TYPE_CHECKING:
    from ..pipeline import Validator
    from ..proof.runtimes import InstallNotice

Outcome = Literal["repaired", "nothing to repair", "failed"]

# The exit codes of a tree repair (cli/app.py's EXIT_CODES and docs/commands.md say the same).
ALL_REPAIRED, SOME_FAILED = 0, 3


@dataclass
class ModelOutcome:
    """One model folder of a tree: repaired (or found to need nothing), or failed with the error a single repair of
    it would have ended with."""

    folder: str  # relative to the tree's root, POSIX
    input: Path
    output: Path
    outcome: Outcome
    seconds: float
    result: DirectoryRepairResult | None = None
    error: str | None = None
    exit_code: int = 0  # what `graphfix repair` of this folder alone exits with

    @property
    def findings(self) -> int:
        """Findings repaired, over every model of the folder."""
        return sum(len(model.result.changes) for model in self.result.models) if self.result else 0

    @property
    def oldest_onnxruntime(self) -> str | None:
        return self.result.oldest_onnxruntime if self.result else None

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "input": str(self.input), "output": str(self.output),
                "outcome": self.outcome, "ok": self.outcome != "failed", "findings": self.findings,
                "oldest_onnxruntime": self.oldest_onnxruntime, "seconds": round(self.seconds, 3),
                "error": self.error, "exit_code": self.exit_code,
                "result": self.result.to_dict() if self.result else None}


@dataclass
class TreeRepairResult:
    input: Path
    output: Path
    models: list[ModelOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[ModelOutcome]:
        return [m for m in self.models if m.outcome == "failed"]

    @property
    def exit_code(self) -> int:
        """0 every folder repaired (or needed nothing); 3 some failed, some did not; when every one failed, the code
        a single repair exits with: 1 when each failed its proof, else 2."""
        failed = self.failed
        if not failed:
            return ALL_REPAIRED
        if len(failed) < len(self.models):
            return SOME_FAILED
        return 1 if all(m.exit_code == 1 for m in failed) else 2

    def to_dict(self) -> dict[str, Any]:
        counts = {outcome: sum(m.outcome == outcome for m in self.models)
                  for outcome in ("repaired", "nothing to repair", "failed")}
        return {"input": str(self.input), "output": str(self.output), "exit_code": self.exit_code,
                "summary": {"models": len(self.models), "repaired": counts["repaired"],
                            "nothing_to_repair": counts["nothing to repair"], "failed": counts["failed"]},
                "models": [m.to_dict() for m in self.models]}


def is_model_folder(folder: Path) -> bool:
    """A folder one single-folder repair takes: it holds a merged decoder, or any ONNX model at its top or in its
    onnx/ (a split export, a lone encoder: the folder's repair says what it holds and what to do)."""
    if holds_merged_decoder(folder):
        return True
    return any(any(_onnx_files(folder / sub)) for sub in ("", "onnx"))


def _onnx_files(folder: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(folder) if entry.name.endswith(".onnx") and entry.is_file()]
    except OSError:
        return []


def model_folders(root: Path) -> list[Path]:
    """The model folders under `root` (not `root` itself): what a tree repair repairs, one folder each."""
    return folders_under(root, is_model_folder)


ModelCallback = Callable[[ModelOutcome], None]


def repair_tree(source: str | os.PathLike[str], out: str | os.PathLike[str], options: RepairOptions | None = None,
                *, jobs: int = 1, on_model: ModelCallback | None = None, validator: Validator | None = None,
                on_install: InstallNotice | None = None, on_wait: InstallNotice | None = None) -> TreeRepairResult:
    """Repair every model folder under `source` into the same relative folder under `out`, going on past a folder
    that fails (nothing of it is written). `options` are repair_directory's (with `force`, a folder already in OUT
    is replaced once its new version is complete; a folder that fails leaves it as it was). `on_model` is told
    each folder's outcome as it finishes; `on_install` / `on_wait` when an onnxruntime release the repairs need is
    installed by this run, or by another process this run waits for. Refused as a whole (BadInputError) only when
    the tree itself is unusable: no model folder, OUT inside IN, a runtime that cannot be installed."""
    options = options or RepairOptions()
    source, out = Path(source), Path(out)
    if jobs < 1:
        raise BadInputError("--jobs must be at least 1")
    if not source.is_dir():
        raise BadInputError(f"no such directory: {source}")
    check_in_place(source, out, options.in_place, "repair every model folder in place")
    if not options.in_place and (out.resolve().is_relative_to(source.resolve())
                                 or source.resolve().is_relative_to(out.resolve())):
        raise BadInputError(f"output {out} overlaps the input {source}; pick an output directory outside it")
    folders = model_folders(source)
    if not folders:
        raise BadInputError(f"no model folder under {source} (a folder holding decoder_model_merged.onnx or other "
                            ".onnx files, at its top or in onnx/); give the folder that holds your exports")
    prepare_runtimes(options, on_install=on_install, on_wait=on_wait)
    relative = [folder.relative_to(source).as_posix() for folder in folders]
    targets = [source / name if options.in_place else out / name for name in relative]
    made = _make_parents(targets)  # here, before any repair: no child removes what another is landing in
    outcomes: dict[int, ModelOutcome] = {}

    def record(index: int, outcome: ModelOutcome) -> None:
        outcomes[index] = outcome
        if on_model is not None:
            on_model(outcome)

    def collect(index: int, child: ChildOutcome) -> None:
        if child.error is not None:  # the child itself died: that folder failed, nothing of it landed
            record(index, _failed(relative[index], folders[index], targets[index], child.error, 0.0))
        else:
            record(index, child.value)

    try:
        run_tasks([Task(repair_model_folder, (name, folder, target, options, validator))
                   for name, folder, target in zip(relative, folders, targets)], jobs, collect)
    finally:
        for folder in made:  # the parents only failed folders would have gone into: nothing of them is left
            _remove_if_empty(folder)
    return TreeRepairResult(input=source, output=out, models=[outcomes[i] for i in range(len(folders))])


def _make_parents(targets: list[Path]) -> list[Path]:
    """The folders that hold the targets, made; those this made, deepest first."""
    made: list[Path] = []
    for target in targets:
        missing = [parent for parent in target.parents if not parent.exists()]
        for parent in reversed(missing):
            try:
                parent.mkdir()
            except OSError as err:
                raise BadInputError(f"cannot make {parent}: {err.strerror or err}") from None
            made.append(parent)
    return sorted(made, key=lambda folder: len(folder.parts), reverse=True)


def _remove_if_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
        return True
    except OSError:  # not empty: a folder landed in it
        return False


def repair_model_folder(name: str, folder: Path, out: Path, options: RepairOptions,
                        validator: Validator | None = None) -> ModelOutcome:
    """One folder of a tree: its outcome, never its error (a KeyboardInterrupt still ends the run)."""
    started = time.perf_counter()
    try:
        result = repair_directory(folder, out, options, validator=validator)
    except Exception as err:  # (recorded: the tree goes on to the next folder)
        return _failed(name, folder, out, err, time.perf_counter() - started)
    retargeted = any(m.result.versions.get("before") != m.result.versions.get("after") for m in result.models)
    outcome: Outcome = "repaired" if result.changed or retargeted else "nothing to repair"
    return ModelOutcome(folder=name, input=folder, output=out, outcome=outcome,
                        seconds=time.perf_counter() - started, result=result)


def _failed(name: str, folder: Path, out: Path, err: BaseException, seconds: float) -> ModelOutcome:
    message, code = failure_line(err, rerun=f"rerun `graphfix repair --debug {folder} OUT`")
    if str(folder) not in message:  # every message about a file inside a folder names the folder
        message = f"{folder}: {message}"
    return ModelOutcome(folder=name, input=folder, output=out, outcome="failed", seconds=seconds, error=message,
                        exit_code=code)


__all__ = ["ModelOutcome", "TreeRepairResult", "is_model_folder", "model_folders", "repair_model_folder",
           "repair_tree"]
