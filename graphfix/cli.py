"""The `graphfix` command: a thin typer layer over the library API.

Results go to stdout, diagnostics (`error: ...`) to stderr. Exit codes: 0 ok; 1 findings (check) or validation
failed (repair, validate); 2 bad input or usage; 130 interrupted.
"""

from __future__ import annotations

import signal
import sys

try:
    import json
    from pathlib import Path
    from typing import Annotated, Optional

    import typer

    from . import __version__
    from .errors import BadInputError, GraphfixError
    from .pipeline import CheckResult, RepairResult, check, repair
    from .validation import ValidationResult, validate
except KeyboardInterrupt:  # Ctrl-C during the imports (most of a short run): one line, not an import traceback
    sys.stderr.write("error: interrupted; nothing was written\n")
    raise SystemExit(130) from None

EXIT_CODES = """Exit codes: 0 ok; 1 findings (check) or validation failed; 2 bad input or usage; 130 interrupted."""
JSON_SCHEMA = "graphfix/1"

_interrupt_reported = False


def _interrupted(signum, frame) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut short the temp directory's cleanup
    raise KeyboardInterrupt


class _GraphfixApp(typer.Typer):
    """The process entry point. Typer turns a Ctrl-C outside a command's own handler (while parsing, printing
    results, inside `check`) into a silent exit 130; here it is one `error:` line like everywhere else. SIGXFSZ is
    ignored so that a write over RLIMIT_FSIZE fails with EFBIG (reported, temp files removed) instead of killing
    the process mid-write."""

    def __call__(self, *args, **kwargs):
        global _interrupt_reported
        _interrupt_reported = False
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        signal.signal(signal.SIGINT, _interrupted)
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


def _fail(err: BaseException, debug: bool) -> typer.Exit:
    if debug:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    if isinstance(err, KeyboardInterrupt):
        global _interrupt_reported
        _interrupt_reported = True
        typer.echo("error: interrupted; nothing was written", err=True)
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
    source: Annotated[Path, typer.Argument(help="The merged decoder to repair (decoder_model_merged.onnx).")],
    out: Annotated[Path, typer.Argument(help="Where to write the repaired model (never the input, unless --in-place).")],
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Skip the decode-loop proof before writing.")] = False,
    in_place: Annotated[bool, typer.Option("--in-place", help="Allow OUT == IN; keeps IN.bak first.")] = False,
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

    Example: graphfix repair decoder_model_merged.onnx fixed/decoder_model_merged.onnx
    """
    try:
        if copy_data and link_data:
            raise BadInputError("--copy-data and --link-data exclude each other")
        result: RepairResult = repair(source, out, run_validation=not no_validate, in_place=in_place,
                                      target_ort=target_ort, validate_on_target=validate_on_target,
                                      data_mode="copy" if copy_data else "link" if link_data else "clone")
    except (Exception, KeyboardInterrupt) as err:
        if as_json and getattr(err, "validation", None) is not None:
            _emit_json("repair", {"ok": False, "error": str(err), "validation": err.validation.to_dict()})
        raise _fail(err, debug) from None
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


@app.command("check", epilog=EXIT_CODES)
def check_command(
    paths: Annotated[list[Path], typer.Argument(help="Merged decoders to check.")],
    target_ort: TargetOption = None,
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
    for path in paths:
        try:
            results.append(check(path, target_ort=target_ort))
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
            if not results[-1].findings:
                typer.echo(f"{path}: ok")
    if as_json:
        _emit_json("check", {"ok": exit_code == 0, "results": [r.to_dict() for r in results]})
    raise typer.Exit(exit_code)


@app.command("validate", epilog=EXIT_CODES)
def validate_command(
    model: Annotated[Path, typer.Argument(help="The merged decoder to prove.")],
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
        result = validate(model, original, ort_version=ort_version)
    except (Exception, KeyboardInterrupt) as err:
        raise _fail(err, debug) from None
    if as_json:
        _emit_json("validate", result.to_dict())
    else:
        typer.echo(f"{model}: plain present->past loop vs full recompute (onnxruntime {result.onnxruntime}):")
        for line in _validation_lines(result):
            typer.echo(line)
        typer.echo("ok" if result.ok else f"FAILED: {result.first_failure}")
    raise typer.Exit(0 if result.ok else 1)


if __name__ == "__main__":
    app()
