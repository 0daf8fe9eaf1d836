"""The `graphfix` command: a thin typer layer over the library API.

Results go to stdout, diagnostics (`error: ...`) to stderr. Exit codes: 0 ok; 1 findings (check) or validation
failed (repair, validate); 2 bad input or usage; 130 interrupted.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__, interrupts
from .errors import BadInputError, GraphfixError
from .layouts import expand_model_paths, find_merged_decoders
from .progress import progress_wanted, terminal_progress
from .pipeline import CheckResult, RepairResult, check, repair
from .validation import ValidationResult, validate

EXIT_CODES = """Exit codes: 0 ok; 1 findings (check) or validation failed; 2 bad input or usage; 130 interrupted."""
JSON_SCHEMA = "graphfix/1"

_interrupt_reported = False


class _GraphfixApp(typer.Typer):
    """The process entry point. Typer turns a Ctrl-C outside a command's own handler (while parsing, printing
    results, inside `check`) into a silent exit 130; here it is one `error:` line like everywhere else. SIGXFSZ is
    ignored so that a write over RLIMIT_FSIZE fails with EFBIG (reported, temp files removed) instead of killing
    the process mid-write."""

    def __call__(self, *args, **kwargs):
        global _interrupt_reported
        _interrupt_reported = False
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        interrupts.install()
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as exit:
            if exit.code == 130 and not _interrupt_reported:
                sys.stderr.write("error: interrupted\n")
            raise


app = _GraphfixApp(
    help=f"Repair Optimum merged decoders so any runtime can drive their KV cache.\n\n{EXIT_CODES}",
    add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]
TargetOption = Annotated[Optional[str], typer.Option(
    "--target-ort", metavar="X.Y", help="The onnxruntime release you deploy on (e.g. 1.16 for Rust ort 1.16.3): "
    "convert the opset down and lower the IR version to what it runs, refusing ops it cannot convert. Default: "
    "leave versions alone.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"graphfix {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                          help="Print the version and exit.")] = None) -> None:
    """Repair Optimum merged decoders so any runtime can drive their KV cache."""


class _OutputWatch:
    """The paths a command may replace, and what each was when it started: a Ctrl-C's message says what the disk
    says landed (every write ends in a rename, so a replaced path has a new inode), not what the timing suggests."""

    def __init__(self, paths: list[Path]):
        self.before = {path: self._identity(path) for path in paths}

    @staticmethod
    def _identity(path: Path) -> tuple[int, int] | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def written(self) -> list[Path]:
        return [path for path, was in self.before.items() if self._identity(path) != was]


def _interrupted_message(watch: _OutputWatch | None) -> str:
    written = watch.written() if watch else []
    if not written:
        return "interrupted; nothing was written"
    return f"interrupted; already written in full: {', '.join(map(str, written))}"


def _fail(err: BaseException, debug: bool, watch: _OutputWatch | None = None) -> typer.Exit:
    if debug:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    if interrupts.is_interrupt(err):
        global _interrupt_reported
        _interrupt_reported = True
        typer.echo(f"error: {_interrupted_message(watch)}", err=True)
        return typer.Exit(130)
    if isinstance(err, GraphfixError):
        typer.echo(f"error: {err}", err=True)
        return typer.Exit(err.exit_code)
    # A bug, not the user's fault, but still one line and no partial output (writes are atomic).
    typer.echo(f"error: unexpected {type(err).__name__}: {' '.join(str(err).split())[:300]}"
               " (rerun with --debug for the traceback)", err=True)
    return typer.Exit(2)


def _emit_json(kind: str, payload: dict) -> None:
    typer.echo(json.dumps({"schema": JSON_SCHEMA, "command": kind, **payload}, indent=2))


def _emit_json_error(kind: str, err: BaseException, watch: _OutputWatch | None = None) -> None:
    """With --json a failed run is still one document, so a CI step can always parse stdout."""
    validation = getattr(err, "validation", None)
    message = _interrupted_message(watch) if interrupts.is_interrupt(err) else str(err)
    code = 130 if interrupts.is_interrupt(err) else getattr(err, "exit_code", 2)
    _emit_json(kind, {"ok": False, "error": message, "exit_code": code,
                      "validation": validation.to_dict() if validation is not None else None})


def _validation_lines(result: ValidationResult) -> list[str]:
    lines = []
    for case in result.cases:
        status = "ok" if case.failure is None else f"FAILED: {case.failure}"
        lines.append(f"  batch {case.batch}, source length {case.source_length}: {case.steps} steps, "
                     f"max |logits - full recompute| {case.max_abs_diff:.3g}, "
                     f"tokens {case.tokens_agree}/{case.tokens_total}: {status}")
    if result.original is not None:
        original = result.original
        status = "ok" if not original.get("failure") else f"FAILED: {original['failure']}"
        lines.append(f"  against --original: max |logits diff| {original.get('max_abs_diff')}: {status}")
    return lines


@app.command("repair", epilog=EXIT_CODES)
def repair_command(
    source: Annotated[Path, typer.Argument(help="The merged decoder to repair (decoder_model_merged.onnx), or a model "
                                           "directory (Optimum or onnx-community layout).")],
    out: Annotated[Path, typer.Argument(help="Where to write the repaired model, or the new directory (never the "
                                        "input, unless --in-place).")],
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the decode-loop proof before writing.")] = False,
    in_place: Annotated[bool, typer.Option("--in-place", help="Allow OUT == IN; keeps IN.bak first (of each decoder "
                                           "of a directory).")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Repair this many decoders of a directory at "
                                      "once, in separate processes.")] = 1,
    target_ort: TargetOption = None,
    validate_on_target: Annotated[bool, typer.Option(
        "--validate-on-target", help="Run the proof inside the --target-ort onnxruntime itself (installed with pip "
        "into a cached venv on first use) instead of the installed one.")] = False,
    copy_data: Annotated[bool, typer.Option(
        "--copy-data", help="Always copy external data (default: a reflink where the filesystem can, else a copy).")] = False,
    link_data: Annotated[bool, typer.Option(
        "--link-data", help="Hardlink external data instead of copying it. onnx >= 1.23 refuses to load or check "
        "a data file with several links; onnxruntime loads it.")] = False,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Repair a merged decoder so every present.* can be fed back as past_key_values.*.

    Rewires the cache branch to pass the encoder KV through, makes declared shapes truthful, optionally retargets
    IR/opset for the onnxruntime you deploy on, and proves it by decoding in onnxruntime before the output is put
    in place.

    The output appears atomically, and only once it has passed validation; on any error nothing is written and
    the input is untouched. A model that needs nothing is copied as it is ("nothing to repair").

    A directory: every merged decoder in it (decoder_model_merged.onnx, onnx/decoder_model_merged{,_quantized,
    _fp16,_int8,_uint8,_q4,_q4f16,_bnb4}.onnx) is repaired and every other file is carried over unchanged
    (hardlinked where possible; external data copied), so OUT is a drop-in replacement. OUT must not exist (or be
    empty); it appears in one rename once every decoder has passed.

    Examples: graphfix repair decoder_model_merged.onnx fixed/decoder_model_merged.onnx
              graphfix repair --jobs 4 opus-mt-en-de/ opus-mt-en-de-fixed/
    """
    watch = None
    try:
        watch = _OutputWatch(_replaceable(source, out, in_place))
        if copy_data and link_data:
            raise BadInputError("--copy-data and --link-data exclude each other")
        options = dict(run_validation=not no_validate, in_place=in_place, target_ort=target_ort,
                       validate_on_target=validate_on_target,
                       data_mode="copy" if copy_data else "link" if link_data else "clone")
        if source.is_dir():
            return _repair_directory(source, out, jobs, options, as_json)
        with terminal_progress(progress_wanted(as_json=as_json), 1, _size(source)) as progress:
            step = (lambda name: progress(source.name, name)) if progress else None
            result: RepairResult = repair(source, out, on_step=step, **options)
    except (Exception, KeyboardInterrupt) as err:
        if as_json:
            _emit_json_error("repair", err, watch)
        raise _fail(err, debug, watch) from None
    if as_json:
        _emit_json("repair", {"ok": True, **result.to_dict()})
        return
    for change in result.changes:
        typer.echo(str(change))
    if result.validation is not None:
        typer.echo("validation (plain present->past loop vs full recompute, onnxruntime):")
        for line in _validation_lines(result.validation):
            typer.echo(line)
    summary = (f"repaired {source} -> {out}: {len(result.changes)} change(s)" if result.changed
               else f"nothing to repair: {source} is already drivable; copied to {out}")
    if result.backup:
        summary += f" (backup {result.backup})"
    typer.echo(summary)


def _replaceable(source: Path, out: Path, in_place: bool) -> list[Path]:
    """What a repair may put in place: OUT (a file, or the directory renamed in as a whole), or in place each
    decoder of the directory."""
    if in_place and source.is_dir():
        return [source / name for name in find_merged_decoders(source)]
    return [out]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _repair_directory(source: Path, out: Path, jobs: int, options: dict, as_json: bool) -> None:
    from .model_directory import repair_directory
    from .progress import plan_size, print_table, summary_table

    files, nbytes = plan_size(source)
    with terminal_progress(progress_wanted(as_json=as_json), files, nbytes) as progress:
        result = repair_directory(source, out, jobs=jobs, on_progress=progress, **options)
    if as_json:
        _emit_json("repair", {"ok": True, **result.to_dict()})
        return
    for model in result.models:
        for change in model.result.changes:
            typer.echo(f"{model.path}: {change}")
    print_table(summary_table(result))
    changed = sum(m.result.changed for m in result.models)
    where = "in place" if result.output == result.input else f"-> {out}"
    typer.echo(f"repaired {source} {where}: {changed} of {len(result.models)} merged decoder(s) changed"
               + (f", {len(result.linked)} file(s) linked, {len(result.copied)} copied" if where != "in place" else ""))


@app.command("check", epilog=EXIT_CODES)
def check_command(
    paths: Annotated[list[Path], typer.Argument(help="Merged decoders to check, or model directories (every merged "
                                                 "decoder in them).")],
    target_ort: TargetOption = None,
    ignore_other_models: Annotated[bool, typer.Option(
        "--ignore-other-models", help="Pass over ONNX files that are not merged decoders (encoders, split decoders) "
        "instead of refusing them: for hooks that see every *.onnx of a repository.")] = False,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Report what would break a plain present->past client, writing nothing (pre-deployment hook).

    For each finding: its code, a one-line message, the tensor or node, and the fix `graphfix repair` would apply.
    Exit 0 when every file is clean, 1 when any has findings, 2 when any cannot be read.

    Example: graphfix check models/*/decoder_model_merged.onnx
    """
    results: list[CheckResult] = []
    exit_code = 0
    try:
        paths = expand_model_paths(paths)
    except (Exception, KeyboardInterrupt) as err:
        if as_json:
            _emit_json_error("check", err)
        raise _fail(err, debug) from None
    for path in paths:
        try:
            results.append(check(path, target_ort=target_ort, ignore_other_models=ignore_other_models))
        except Exception as err:
            if debug:
                _fail(err, debug)
            results.append(CheckResult(path=path, error=str(err)))
            exit_code = 2
            if not as_json:
                typer.echo(f"error: {err}", err=True)
            continue
        if results[-1].findings:
            exit_code = max(exit_code, 1)
        if not as_json:
            for finding in results[-1].findings:
                typer.echo(f"{path}: {finding}")
            if results[-1].skipped:
                typer.echo(f"{path}: skipped ({results[-1].skipped})")
            elif not results[-1].findings:
                typer.echo(f"{path}: ok")
    if as_json:
        _emit_json("check", {"ok": exit_code == 0, "results": [r.to_dict() for r in results]})
    raise typer.Exit(exit_code)


@app.command("validate", epilog=EXIT_CODES)
def validate_command(
    model: Annotated[Path, typer.Argument(help="The merged decoder to prove, or a model directory (every merged "
                                          "decoder in it).")],
    original: Annotated[Optional[Path], typer.Option("--original", help="Also show first-step and full-recompute "
                                                     "logits equal this model's (the unrepaired original).")] = None,
    ort_version: Annotated[Optional[str], typer.Option(
        "--ort-version", metavar="X.Y.Z", help="Run the proof inside exactly this onnxruntime release (installed "
        "with pip into a cached venv on first use), e.g. 1.16.3 as linked by Rust ort.")] = None,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Prove in onnxruntime that the plain present->past loop decodes like full recompute.

    Inputs are synthesized from the model's own signature (no PyTorch, no original weights): 8 steps at batch 1
    and 3 and two source lengths. Exit 0 when it holds, 1 when it does not (naming the first step and output that
    diverged), 2 when the model cannot be read or loaded.

    Example: graphfix validate fixed.onnx --original decoder_model_merged.onnx --ort-version 1.16.3
    """
    try:
        if model.is_dir():
            if original is not None:
                raise BadInputError("--original takes a file; give the decoder file, not a directory")
            results = [validate(path, ort_version=ort_version) for path in expand_model_paths([model])]
        else:
            results = [validate(model, original, ort_version=ort_version)]
    except (Exception, KeyboardInterrupt) as err:
        if as_json:
            _emit_json_error("validate", err)
        raise _fail(err, debug) from None
    ok = all(result.ok for result in results)
    if as_json:
        # A file keeps its flat document; a directory lists one such document per decoder under "models".
        _emit_json("validate", results[0].to_dict() if not model.is_dir() else
                   {"ok": ok, "models": [result.to_dict() for result in results]})
    else:
        for result in results:
            typer.echo(f"{result.model}: plain present->past loop vs full recompute (onnxruntime {result.onnxruntime}):")
            for line in _validation_lines(result):
                typer.echo(line)
            typer.echo("ok" if result.ok else f"FAILED: {result.first_failure}")
    raise typer.Exit(0 if ok else 1)


@app.command("split", epilog=EXIT_CODES)
def split_command(
    merged: Annotated[Path, typer.Argument(help="The merged decoder to split (decoder_model_merged.onnx).")],
    out_dir: Annotated[Path, typer.Argument(help="Directory for decoder_model.onnx and decoder_with_past_model.onnx "
                                            "(created if missing; files of those names are replaced).")],
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the decode-loop proof before writing.")] = False,
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Write the no-past and with-past decoders of a merged decoder, for runtimes without If support.

    Each If branch becomes a model of its own (the outer inputs it reads, the If's outputs, the weights it reads
    copied in once). The repair passes run first, so the with-past model passes the encoder KV through. Both files
    are proven before they land: the two-file client loop (no-past model at step 1, with-past model after, presents
    fed back as past) must match full recompute at every step, and the merged decoder's logits.

    Example: graphfix split decoder_model_merged.onnx split/
    """
    from .split_decoder import DECODER, DECODER_WITH_PAST, split

    watch = None
    try:
        watch = _OutputWatch([out_dir / DECODER, out_dir / DECODER_WITH_PAST])
        result = split(merged, out_dir, run_validation=not no_validate)
    except (Exception, KeyboardInterrupt) as err:
        if as_json:
            _emit_json_error("split", err, watch)
        raise _fail(err, debug, watch) from None
    if as_json:
        _emit_json("split", {"ok": True, **result.to_dict()})
        return
    for change in result.changes:
        typer.echo(str(change))
    if result.validation is not None:
        typer.echo("validation (no-past model, then with-past model fed its presents, vs full recompute):")
        for line in _validation_lines(result.validation):
            typer.echo(line.replace("against --original", "against the merged decoder"))
    typer.echo(f"split {merged} -> {result.decoder}, {result.decoder_with_past}")


if __name__ == "__main__":  # `python -m graphfix.cli` still works; `python -m graphfix` is the documented form
    from graphfix.__main__ import main as _main

    _main()
