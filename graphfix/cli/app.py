"""The typer app, the output options every command shares, and the one error layer every command goes through.

Results go to stdout, diagnostics (`error: ...`) to stderr. Every way a run can end badly, a usage error caught by
click (a missing argument, `--jobs 0`), a GraphfixError, a bug or a Ctrl-C, ends in exactly one `error:` line and
its exit code, and with `--json` in one JSON document on stdout as well.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from ..errors import BadInputError, failure_line, one_line
from ..passes.contract import CHECK_PASSES
from ..process import interrupts
from .shown import shown

EXIT_CODES = ("Exit codes: 0 ok; 1 findings (check) or validation failed; 2 bad input or usage; 3 a tree repair in "
              "which some model folders failed and others were repaired; 128+n interrupted by signal n (130 Ctrl-C, "
              "143 SIGTERM, 129 SIGHUP).")
JSON_SCHEMA = "graphfix/1"

F = TypeVar("F", bound=Callable[..., Any])


def escaped(text: str) -> str:
    """A message as one line whatever it quotes, every character kept and told apart (a backslash doubled)."""
    return shown(text.replace("\\", "\\\\"))


class Verbosity(Enum):
    """How much of a run the text output shows (JSON always shows everything)."""

    QUIET = "quiet"  # errors and the summary line
    NORMAL = "normal"  # a line per finding code
    VERBOSE = "verbose"  # a line per change, and the proof case by case


@dataclass(frozen=True)
class Output:
    """The output options every command shares (OUTPUT_FLAGS, declared once below), as one value."""

    verbosity: Verbosity = Verbosity.NORMAL
    json: bool = False
    debug: bool = False

    @classmethod
    def from_flags(cls, *, verbose: bool = False, quiet: bool = False, as_json: bool = False,
                   debug: bool = False) -> Output:
        if verbose and quiet:
            raise BadInputError("--verbose and --quiet exclude each other")
        verbosity = Verbosity.VERBOSE if verbose else Verbosity.QUIET if quiet else Verbosity.NORMAL
        return cls(verbosity=verbosity, json=as_json, debug=debug)


# The shared output options, declared once; every command takes them as these parameters (graphfix_command checks
# that it does) and turns them into an Output with Output.from_flags. explain and describe have no --verbose/--quiet.
VerboseFlag = Annotated[bool, typer.Option("--verbose", "-v", help="Print every change on a line of its own instead "
                                           "of one line per finding code.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the summary line.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]
DebugFlag = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error, and hold every repair "
                                         "pass to its contract (no finding, no change).")]
VERBOSITY_FLAGS = ("verbose", "quiet")
FORMAT_FLAGS = ("as_json", "debug")


def rendered(doc: str) -> str:
    """A docstring as help text rich can wrap: each paragraph one line, except examples, which keep their lines."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("Example") else " ".join(p.split()) for p in paragraphs)


class OutputWatch:
    """The paths a command may replace, and what each was when it started: a Ctrl-C's message says what the disk
    says landed (every write ends in a rename, so a replaced path has a new inode), not what the timing suggests."""

    def __init__(self, paths: Sequence[Path]):
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


class _Run:
    """What the error layer knows of the command under way."""

    watch: OutputWatch | None = None  # set by commands that write: a Ctrl-C's line then says what landed
    interrupt_reported = False
    # The exit code of the work done so far, for a reader that stops reading (`graphfix check A B C | head -1`):
    # commands update it before they print what it stands for.
    exit_code = 0


run = _Run()


def watch_outputs(paths: Sequence[Path]) -> None:
    run.watch = OutputWatch(paths)


def _interrupted_message() -> str:
    what = interrupts.message()
    if run.watch is None:  # check, validate: nothing to say about the disk
        return what
    written = run.watch.written()
    if not written:
        return f"{what}; nothing was written"
    return f"{what}; already written in full: {', '.join(map(str, written))}"


def emit_json(command: str, payload: dict[str, Any]) -> None:
    """The one JSON document of a command, names exact (json.dumps escapes every control character and, ASCII
    only, every bidi override): not text, so not through `shown`."""
    _write_stdout(json.dumps({"schema": JSON_SCHEMA, "command": command, **payload}, indent=2))


def _is_usage_error(err: BaseException) -> bool:
    """A usage error raised by the command-line parser: click's ClickException interface (format_message and an
    exit code), whichever click typer runs on (its own copy from typer 0.26, click itself before)."""
    return callable(getattr(err, "format_message", None)) and isinstance(getattr(err, "exit_code", None), int)


def _is_missing_argument(err: BaseException) -> bool:
    """click's MissingParameter for an argument: a BadParameter without a message of its own."""
    param = getattr(err, "param", None)
    return (isinstance(err, typer.BadParameter) and not err.message and param is not None
            and param.param_type_name == "argument")


def report_failure(command: str | None, err: BaseException, *, as_json: bool, debug: bool) -> int:
    """The one `error:` line (and JSON document) for `err`; returns the exit code."""
    if debug:
        import traceback

        traceback.print_exception(err, file=sys.stderr)
    if interrupts.is_interrupt(err):
        run.interrupt_reported = True
        message, code = _interrupted_message(), interrupts.exit_status()
    elif _is_usage_error(err):
        message, code = one_line(err.format_message(), limit=None), 2  # type: ignore[attr-defined]
        if _is_missing_argument(err):
            message = f"missing argument {(err.param.name or '').upper()}"  # type: ignore[attr-defined]
        message += f" (see: graphfix {command} --help)" if command else " (see: graphfix --help)"
    else:
        message, code = failure_line(err)
    if as_json:
        validation = getattr(err, "validation", None)
        emit_json(command or "graphfix", {"ok": False, "error": message, "exit_code": code,
                                          "validation": validation.to_dict() if validation is not None else None})
    typer.echo(f"error: {escaped(message)}", err=True)
    return code



class StdoutFailed(Exception):
    """stdout could not take what a command printed: the reader closed the pipe (EPIPE) or the stream is full
    (`> /dev/full`). Raised by `say`, through which every result line goes."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


def say(line: str) -> None:
    """One result line on stdout, made safe for a terminal (shown.py): whatever it quotes stays on one line."""
    _write_stdout(shown(line))


def tell(line: str) -> None:
    """One diagnostic line on stderr (an `error:` line, a first-use notice), made safe for a terminal."""
    typer.echo(shown(line), err=True)


def _write_stdout(text: str) -> None:
    try:
        typer.echo(text)
    except OSError as err:
        raise StdoutFailed(err) from None


def _stdout_to_devnull() -> None:
    """Whatever is still buffered, or printed later, goes nowhere: the interpreter's last flush must not turn a
    closed pipe into "Exception ignored" and exit 120."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def report_stdout_failure(failure: OSError) -> int:
    """A closed pipe is how a reader says it has read enough: quiet, and the exit code of the work done. A full
    stream is one line (what landed, if anything, named), exit 2."""
    _stdout_to_devnull()
    if failure.errno == errno.EPIPE:
        return run.exit_code
    written = run.watch.written() if run.watch is not None else []
    landed = f"; already written in full: {', '.join(map(str, written))}" if written else ""
    typer.echo(f"error: {escaped(f'cannot write to stdout: {failure.strerror or failure}{landed}')}", err=True)
    return 2


def graphfix_command(app: typer.Typer, name: str, *, verbosity: bool = True) -> Callable[[F], F]:
    """Register `fn` as the command `name`: its docstring becomes rendered help, and whatever it raises reaches the
    user through report_failure. `fn` takes the shared flags (VerboseFlag and QuietFlag when `verbosity`, JsonFlag,
    DebugFlag) under their names in VERBOSITY_FLAGS and FORMAT_FLAGS, and returns its exit code (None is 0)."""
    shared = (*(VERBOSITY_FLAGS if verbosity else ()), *FORMAT_FLAGS)

    def register(fn: F) -> F:
        missing = set(shared) - set(inspect.signature(fn).parameters)
        if missing:
            raise TypeError(f"command {name} lacks the shared options {sorted(missing)}")

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> None:
            run.watch, run.exit_code = None, 0
            as_json, debug = bool(kwargs.get("as_json")), bool(kwargs.get("debug"))
            if debug:  # where bugs are hunted: every pass is held to "no finding, no change" too
                os.environ[CHECK_PASSES] = "1"  # --jobs workers inherit it
            try:
                code = fn(*args, **kwargs)
            except typer.Exit:
                raise
            except (Exception, KeyboardInterrupt) as err:
                if isinstance(err, StdoutFailed):
                    code = report_stdout_failure(err.error)
                else:
                    code = report_failure(name, err, as_json=as_json, debug=debug)
            raise typer.Exit(code or 0)

        app.command(name, help=rendered(fn.__doc__ or ""), epilog=EXIT_CODES)(command)
        return fn

    return register


def _command_name(args: Sequence[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


class GraphfixGroup(TyperGroup):
    """Click's usage errors (a missing argument, `--jobs 0`, an unreadable path) as one `error:` line and exit 2,
    and with `--json` as a JSON document, instead of click's multi-line box. Used by the process entry point and
    by typer's CliRunner alike."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        completing = os.environ.get(complete_var or "_GRAPHFIX_COMPLETE")  # the shell asks for completions
        if not argv and not completing:  # bare `graphfix`: the help, on stderr, exit 2
            with self.make_context(prog_name or "graphfix", [], resilient_parsing=True) as ctx:
                typer.echo(ctx.get_help(), err=True)
            code = 2
        else:
            code = self._run(argv, prog_name, complete_var, extra)
        if not standalone_mode:
            return code
        sys.exit(code or 0)


    def _run(self, argv: list[str], prog_name: str | None, complete_var: str | None, extra: dict[str, Any]) -> Any:
        try:
            return super().main(args=argv, prog_name=prog_name or "graphfix", complete_var=complete_var,
                                standalone_mode=False, **extra)
        except typer.Abort:
            return report_failure(_command_name(argv), KeyboardInterrupt(), as_json="--json" in argv, debug=False)
        except Exception as err:
            if not _is_usage_error(err):
                raise
            return report_failure(_command_name(argv), err, as_json="--json" in argv, debug=False)


class GraphfixApp(typer.Typer):
    """The process entry point. SIGXFSZ is ignored so that a write over RLIMIT_FSIZE fails with EFBIG (reported,
    temp files removed) instead of killing the process mid-write; Ctrl-C, SIGTERM and SIGHUP are routed through
    process/interrupts.py."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run.interrupt_reported = False
        if hasattr(signal, "SIGXFSZ"):  # not on Windows, which has no file size limit to signal
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        interrupts.install()
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as exit:
            if exit.code == interrupts.exit_status() and not run.interrupt_reported:
                sys.stderr.write(f"error: {_interrupted_message()}\n")
            raise


app = GraphfixApp(
    cls=GraphfixGroup,
    help=rendered(f"""Repair Optimum merged decoders so any runtime can drive their KV cache.

    {EXIT_CODES}"""),
    add_completion=True, no_args_is_help=True, pretty_exceptions_show_locals=False,
)
