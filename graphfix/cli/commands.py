"""The commands: parse, call the library, print the result, return the exit code. Each takes its own options and
the shared `output` (app.Output); what the text says is report.py's. Errors are the app's job (app.py); nothing here
catches them except `check`, which goes on to the next file."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import __version__
from ..batch.layouts import CheckTarget, encoder_for, find_merged_decoders
from ..errors import BadInputError, NotAMergedDecoderError, exhausted_message
from ..findings import CODES, EXPLANATIONS
from ..options import RepairOptions
from ..pipeline import CheckResult, RepairResult, Validator, check_target, repair
from ..proof.interpreters import ENVIRONMENT
from ..targets import TargetRuntime
from . import report, table
from .app import (
    DebugFlag,
    JsonFlag,
    Output,
    QuietFlag,
    StdoutFailed,
    VerboseFlag,
    Verbosity,
    app,
    emit_json,
    escaped,
    graphfix_command,
    report_failure,
    run,
    say,
    tell,
    watch_outputs,
)
from .flags import repair_flag
from .progress import plan_sizes, progress_wanted, terminal_progress

RuntimePythonOption = Annotated[Optional[Path], typer.Option(
    "--runtime-python", metavar="PATH", envvar="GRAPHFIX_PYTHON", help="The CPython that an older onnxruntime "
    "release is installed for (default: this one when the release has a wheel for it, else python3.Y found on "
    "PATH, in pyenv or through the py launcher; onnxruntime 1.16 has wheels for CPython 3.8-3.11 only).")]


def _use_runtime_python(path: Path | None) -> None:
    """The proof's interpreter is found by the library (proof/interpreters.py) through GRAPHFIX_PYTHON, which
    --jobs workers and the proof's own child processes inherit."""
    if path is not None:
        os.environ[ENVIRONMENT] = str(path)


def _announce_first_use(*releases: TargetRuntime | None) -> None:
    """Installing an onnxruntime release takes seconds the first time: its own step on stderr, said when the
    install starts (runtimes.py tells this process's listener), on a terminal and in pipes alike, so that a run that
    seems stuck says why, and a run refused before it needs the release says nothing of it. A run that will wait
    for another process's install of it says so up front."""
    from ..proof import runtimes

    wanted = list(dict.fromkeys(r.release for r in releases if r is not None))
    if wanted:
        runtimes.install_listener = lambda release, home: tell(report.first_use_line(release, home))
    for release in wanted:
        try:
            home = runtimes.runtime_home(release)
        except BadInputError:  # no interpreter or no cache for that release: the run says so, in its one error line
            continue
        if runtimes.install_in_progress(home):  # the run waits for that install instead of making its own
            tell(report.waiting_line(release, home))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"graphfix {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                          help="Print the version and exit.")] = None) -> None:
    """Repair Optimum merged decoders so any runtime can drive their KV cache."""


def _validator(ctx: typer.Context) -> Validator | None:
    """Tests hand in their own proof as `CliRunner().invoke(app, args, obj={"validator": ...})`."""
    validator: Validator | None = (ctx.obj or {}).get("validator")
    return validator


def _echo(lines: list[str]) -> None:
    for line in lines:
        say(line)


@graphfix_command(app, "repair")
def repair_command(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="The merged decoder to repair (decoder_model_merged.onnx), a model "
                                           "directory (Optimum or onnx-community layout), or a tree of them.")],
    out: Annotated[Path, typer.Argument(help="Where to write the repaired model, or the new directory (never the "
                                        "input, unless --in-place).")],
    validate: bool = repair_flag("validate"),
    in_place: bool = repair_flag("in_place"),
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Repair this many decoders of a directory, or "
                                      "model folders of a tree, at once, in separate processes.")] = 1,
    target_ort: Optional[TargetRuntime] = repair_flag("target_ort"),
    validate_on_target: bool = repair_flag("validate_on_target"),
    load_on_target: bool = repair_flag("load_on_target"),
    copy_data: bool = repair_flag("copy_data"),
    link_data: bool = repair_flag("link_data"),
    force: bool = repair_flag("force"),
    runtime_python: RuntimePythonOption = None,
    verbose: VerboseFlag = False,
    quiet: QuietFlag = False,
    as_json: JsonFlag = False,
    debug: DebugFlag = False,
) -> int:
    """Repair a merged decoder so every present.* can be fed back as past_key_values.*.

    Rewires the cache branch to pass the encoder KV through, makes declared shapes truthful, optionally retargets
    IR/opset for the onnxruntime you deploy on (and then loads the output in that very release before it lands),
    and proves it by decoding in onnxruntime before the output is put in place.

    The output appears atomically, and only once it has passed validation; on any error nothing is written and
    the input is untouched. A model that needs nothing is copied as it is ("nothing to repair").

    A directory: every merged decoder in it (decoder_model_merged.onnx, onnx/decoder_model_merged{,_quantized,
    _fp16,_int8,_uint8,_q4,_q4f16,_bnb4}.onnx) is repaired and every other file is carried over unchanged
    (copied, a reflink where the filesystem can; hardlinked only with --link-data), so OUT is a drop-in replacement
    that shares no storage with the input. OUT must not exist (or be
    empty; --force replaces it); it appears in one rename once every decoder has passed.

    A tree of model folders (models/<name>/..., any depth, as `check` walks it): every model folder becomes the
    same relative folder under OUT, each landed whole or not at all. A folder that fails is named with its error
    and the run goes on; one table (or with --json one document) ends the run. Exit 0 when every folder was
    repaired, 3 when some failed and some did not, 1 or 2 when none was (1: each failed its proof). --jobs N
    repairs N folders at once; an onnxruntime release is installed once, before the first.

    Prints one line per finding code (count, tensor pattern, what was done) and a summary line: what was written,
    what was proven, in which onnxruntime, how long. `--verbose` prints every change; `graphfix explain CODE`
    explains a code.

    Examples:
      graphfix repair decoder_model_merged.onnx fixed.onnx
      graphfix repair --verbose --no-validate decoder_model_merged.onnx unproven.onnx
      graphfix repair --jobs 2 opus-mt-en-de/ opus-mt-en-de-fixed/
      graphfix repair --jobs 2 --target-ort 1.16 models/ models-fixed/
    """
    output = Output.from_flags(verbose=verbose, quiet=quiet, as_json=as_json, debug=debug)
    started = time.monotonic()
    _use_runtime_python(runtime_python)
    is_directory = source.is_dir()
    options = RepairOptions.from_parameters(ctx.params)
    if is_directory and (tree := _model_folders_of_tree(source)):
        from .repair_tree import repair_tree_command

        watch_outputs([(source if in_place else out) / folder.relative_to(source) for folder in tree])
        return repair_tree_command(source, out, jobs, options, _validator(ctx), output, started)
    watch_outputs([source / name for name in find_merged_decoders(source)] if in_place and is_directory else [out])
    _announce_first_use(*options.releases)
    if is_directory:
        return _repair_directory(source, out, jobs, options, _validator(ctx), output, started)
    with terminal_progress(progress_wanted(as_json=output.json), plan_sizes(source)) as progress:
        step = (lambda name: progress(source.name, name)) if progress else None
        result: RepairResult = repair(source, out, options, on_step=step, validator=_validator(ctx))
        if progress:
            progress(source.name, "done")
    if output.json:
        emit_json("repair", {"ok": True, **result.to_dict()})
        return 0
    _echo(report.findings_lines(result.changes, output.verbosity))
    if output.verbosity is Verbosity.VERBOSE:
        _echo(report.proof_lines(result.validation, "validation (plain present->past loop vs full recompute, "))
    say(report.repair_summary(str(out), len(result.changes), result.validation, result.loaded_on,
                              time.monotonic() - started, result.backup, landed=result.written))
    if output.verbosity is not Verbosity.QUIET:
        say(report.release_line(result.oldest_onnxruntime, target_ort, subject="the output"))
    return 0


def _model_folders_of_tree(source: Path) -> list[Path]:
    """The model folders under `source` when it is a tree of them (not itself a model folder), else none."""
    from ..batch.tree import is_model_folder, model_folders

    return [] if is_model_folder(source) else model_folders(source)


def _repair_directory(source: Path, out: Path, jobs: int, options: RepairOptions, validator: Validator | None,
                      output: Output, started: float) -> int:
    from ..batch.model_directory import repair_directory

    with terminal_progress(progress_wanted(as_json=output.json), plan_sizes(source)) as progress:
        result = repair_directory(source, out, options, jobs=jobs, on_progress=progress, validator=validator)
    if output.json:
        emit_json("repair", {"ok": True, **result.to_dict()})
        return 0
    _echo(report.directory_findings_lines(result, output.verbosity))
    if output.verbosity is not Verbosity.QUIET:
        try:
            table.print_table(table.summary_table(result))
        except OSError as err:
            raise StdoutFailed(err) from None
    say(report.directory_summary(result, time.monotonic() - started))
    if output.verbosity is not Verbosity.QUIET:
        say(report.release_line(result.oldest_onnxruntime, options.target_ort,
                                subject="its models", plural=True))
    return 0


@graphfix_command(app, "check")
def check_command(
    paths: Annotated[list[Path], typer.Argument(help="Merged decoders to check, or model directories (every merged "
                                                 "decoder in them).")],
    target_ort: Optional[TargetRuntime] = repair_flag("target_ort"),
    ignore_other_models: Annotated[bool, typer.Option(
        "--ignore-other-models", help="Pass over ONNX files that are not merged decoders (encoders, split decoders) "
        "instead of refusing them: for hooks that see every *.onnx of a repository.")] = False,
    load: Annotated[bool, typer.Option(
        "--load", help="Load every file without findings in onnxruntime, even where its skeleton and graphfix's "
        "tables already say it loads (and even when the verdict is remembered from an earlier check).")] = False,
    verbose: VerboseFlag = False,
    quiet: QuietFlag = False,
    as_json: JsonFlag = False,
    debug: DebugFlag = False,
) -> int:
    """Report what would break a plain present->past client, writing nothing (pre-deployment hook).

    Per file with findings: one line per finding code (count, tensor pattern, the fix `graphfix repair` would
    apply); `--verbose` prints every finding with its full message. Then one summary line, and after findings the
    commands that come next (`graphfix repair ...`, `graphfix explain CODE`). Exit 0 when every file is clean, 1
    when any has findings, 2 when any cannot be read or is not a merged decoder (an encoder or a split export's
    decoder: nothing to repair, said as such; --ignore-other-models passes over those instead).

    Examples:
      graphfix check models/*/decoder_model_merged.onnx
      graphfix check --quiet fixed.onnx opus-mt-en-de-fixed/
    """
    output = Output.from_flags(verbose=verbose, quiet=quiet, as_json=as_json, debug=debug)
    started = time.monotonic()
    results: list[CheckResult] = []
    targets = _check_targets(paths, target_ort, results)
    exit_code = 2 if results else 0  # a path that stands for no model at all
    for unusable in results:
        if not output.json:
            typer.echo(f"error: {escaped(unusable.error or '')}", err=True)
    for target in targets:
        path = target.path
        try:
            result = check_target(target, target_ort, ignore_other_models=ignore_other_models, load=load)
        except Exception as err:  # reported, and the next file is still checked
            if output.debug:
                report_failure("check", err, as_json=False, debug=True)
            exhausted = exhausted_message(err)  # the machine's limit, not the file, when memory ran out
            message = exhausted or str(err)
            if not output.debug and not output.json:
                typer.echo(f"error: {escaped(message)}", err=True)
            kind = ("not a merged decoder" if isinstance(err, NotAMergedDecoderError)
                    else "out of memory" if exhausted else "unreadable")
            results.append(CheckResult(path=path, error=message, error_kind=kind))
            exit_code = run.exit_code = 2
            continue
        results.append(result)
        exit_code = max(exit_code, 1 if result.findings else 0)
        run.exit_code = exit_code
        if not output.json:
            _echo(report.check_lines(result, output.verbosity))
    if output.json:
        first_error = next((r.error for r in results if r.error is not None), None) if exit_code == 2 else None
        # exit 2 is a failure like any other command's: its keys too (docs/json-schema.md)
        emit_json("check", {"ok": exit_code == 0, "exit_code": exit_code, "error": first_error,
                            "results": [r.to_dict() for r in results],
                            **({"validation": None} if first_error is not None else {})})
    else:
        say(report.check_summary(results, time.monotonic() - started))
        if output.verbosity is not Verbosity.QUIET and (loads := _loads(results, target_ort)):
            say(loads)
        if output.verbosity is not Verbosity.QUIET:
            _echo(report.next_commands(results, paths, target_ort))
    return exit_code


def _loads(results: list[CheckResult], target_ort: TargetRuntime | None) -> str:
    """Which onnxruntime releases take every file checked, as they are, those passed over included (nothing when
    none could be read)."""
    from ..targets.release_floor import ReleaseFloor, newest_of

    floors = [ReleaseFloor(r.oldest_onnxruntime) for r in results if r.error is None]
    plural = len(floors) > 1
    subject = "as they are, they" if plural else "as it is, it"
    return report.release_line(newest_of(floors).release, target_ort, subject=subject, plural=plural) if floors else ""


def _check_targets(paths: list[Path], target_ort: TargetRuntime | None,
                   results: list[CheckResult]) -> list[CheckTarget]:
    """(file, is it an export's other model) for every file the paths stand for. A path that stands for nothing
    (no merged decoder anywhere under a directory) is a result of its own with its error, so that `--json` keeps
    one shape whatever fails."""
    from ..batch.layouts import check_targets

    targets: list[CheckTarget] = []
    for path in paths:
        try:
            targets += check_targets(path, every_model=target_ort is not None)
        except BadInputError as err:
            results.append(CheckResult(path=path, error=str(err)))
    return targets


@graphfix_command(app, "validate")
def validate_command(
    model: Annotated[Path, typer.Argument(help="The merged decoder to prove, or a model directory (every merged "
                                          "decoder in it).")],
    original: Annotated[Optional[Path], typer.Option("--original", help="Also show full-recompute logits equal "
                                                     "this model's (the unrepaired original) at every step.")] = None,
    ort_version: Optional[TargetRuntime] = repair_flag("ort_version"),
    runtime_python: RuntimePythonOption = None,
    verbose: VerboseFlag = False,
    quiet: QuietFlag = False,
    as_json: JsonFlag = False,
    debug: DebugFlag = False,
) -> int:
    """Prove in onnxruntime that the plain present->past loop decodes like full recompute.

    Inputs are synthesized from the model's own signature (no PyTorch, no original weights): 3 steps at batch 1
    with source length 5 and at batch 3 with 11. A model directory is proven end to end: its encoder
    (encoder_model.onnx beside each merged decoder) runs on synthesized token ids, pixel values or audio features
    and feeds the decoder.

    Exit 0 when it holds, 1 when it does not (naming the first step and output that diverged), 2 when the model
    cannot be read or loaded.

    Per case: the steps that matched full recompute, the worst difference against its tolerance, and the step
    that failed with onnxruntime's reason.

    Examples:
      graphfix validate fixed.onnx --original decoder_model_merged.onnx
      graphfix validate fixed.onnx --ort-version 1.16.3
    """
    output = Output.from_flags(verbose=verbose, quiet=quiet, as_json=as_json, debug=debug)
    from ..proof.validation import validate  # only this command proves without writing

    _use_runtime_python(runtime_python)
    _announce_first_use(ort_version)
    if model.is_dir():
        if original is not None:
            raise BadInputError("--original takes a file; give the decoder file, not a directory")
        results = []
        for name in find_merged_decoders(model):  # each fed by its export's encoder, when it has one
            encoder = encoder_for(model, name)
            results.append(validate(model / name, ort_version=ort_version,
                                    encoder=model / encoder if encoder else None))
    else:
        results = [validate(model, original, ort_version=ort_version)]
    ok = all(result.ok for result in results)
    run.exit_code = 0 if ok else 1
    if output.json:
        # A file keeps its flat document; a directory lists one such document per decoder under "models".
        emit_json("validate", results[0].to_dict() if not model.is_dir() else
                  {"ok": ok, "models": [result.to_dict() for result in results]})
    else:
        for result in results:
            _echo(report.validate_lines(result, output.verbosity))
    return 0 if ok else 1


@graphfix_command(app, "split")
def split_command(
    ctx: typer.Context,
    merged: Annotated[Path, typer.Argument(help="The merged decoder to split (decoder_model_merged.onnx).")],
    out_dir: Annotated[Path, typer.Argument(help="Directory for decoder_model.onnx and decoder_with_past_model.onnx "
                                            "(created if missing; files of those names are replaced).")],
    validate: bool = repair_flag("validate"),
    ort_version: Optional[TargetRuntime] = repair_flag("ort_version"),
    target_ort: Optional[TargetRuntime] = repair_flag("target_ort"),
    runtime_python: RuntimePythonOption = None,
    verbose: VerboseFlag = False,
    quiet: QuietFlag = False,
    as_json: JsonFlag = False,
    debug: DebugFlag = False,
) -> int:
    """Write the no-past and with-past decoders of a merged decoder, for runtimes without If support.

    Each If branch becomes a model of its own (the outer inputs it reads, the If's outputs, the weights it reads
    copied in once). The repair passes run first, so the with-past model passes the encoder KV through. Both files
    are proven before they land: the two-file client loop (no-past model at step 1, with-past model after, presents
    fed back as past) must match full recompute at every step, and the merged decoder's logits. With
    --target-ort both files are retargeted for that release and loaded in it before they land.

    Examples:
      graphfix split decoder_model_merged.onnx split/
    """
    output = Output.from_flags(verbose=verbose, quiet=quiet, as_json=as_json, debug=debug)
    from ..split_decoder import DECODER, DECODER_WITH_PAST, split

    started = time.monotonic()
    _use_runtime_python(runtime_python)
    watch_outputs([out_dir / DECODER, out_dir / DECODER_WITH_PAST])
    options = RepairOptions.from_parameters(ctx.params)
    _announce_first_use(*options.releases)
    result = split(merged, out_dir, options)
    if output.json:
        emit_json("split", {"ok": True, **result.to_dict()})
        return 0
    _echo(report.split_lines(result, output.verbosity, time.monotonic() - started))
    return 0


def _complete_code(incomplete: str) -> list[str]:
    return [code for code in CODES if code.startswith(incomplete.upper())]


@graphfix_command(app, "explain", verbosity=False)
def explain_command(
    code: Annotated[Optional[str], typer.Argument(help="A finding code (GF101 ...); without it, every code.",
                                                  autocompletion=_complete_code)] = None,
    as_json: JsonFlag = False,
    debug: DebugFlag = False,
) -> int:
    """Explain a finding code: what breaks, which exporters write it, what the fix does and why it is safe.

    Works offline; without CODE, lists every code graphfix reports.

    Examples:
      graphfix explain GF101
      graphfix explain
    """
    output = Output.from_flags(as_json=as_json, debug=debug)
    if code is not None and code.upper() not in CODES:
        raise BadInputError(f"unknown finding code {code!r} (known: {', '.join(CODES)})")
    codes = [code.upper()] if code is not None else list(CODES)
    if output.json:
        emit_json("explain", {"ok": True, "codes": [{"code": c, "title": CODES[c], **EXPLANATIONS[c].entry()}
                                                     for c in codes]})
    elif code is None:
        _echo(report.explain_index())
    else:
        _echo(report.explain_lines(codes[0]))
    return 0


@graphfix_command(app, "describe", verbosity=False)
def describe_command(
    model: Annotated[Path, typer.Argument(help="A merged decoder, or an export directory (its merged decoders and "
                                          "encoders, config.json and generation_config.json).")],
    as_json: JsonFlag = False,
    debug: DebugFlag = False,
) -> int:
    """Show the client contract of an export: what to feed at each step of the plain present->past loop.

    Each input and output with dtype and shape (every dim named for what it is), what to feed at step 1
    (use_cache_branch false, empty past) and at every step after (each present.* fed back as past_key_values.*),
    the start, end and pad tokens from config.json and generation_config.json, the findings that need
    `graphfix repair` first, and the oldest onnxruntime release that loads it (from graphfix's measured tables).
    Writes nothing; exit 0 whether or not the export needs repair.

    Examples:
      graphfix describe decoder_model_merged.onnx
      graphfix describe --json opus-mt-en-de/
    """
    output = Output.from_flags(as_json=as_json, debug=debug)
    from ..export_contract import describe

    description = describe(model)
    if output.json:
        emit_json("describe", {"ok": True, **description.to_dict()})
    else:
        _echo(report.describe_lines(description))
    return 0
