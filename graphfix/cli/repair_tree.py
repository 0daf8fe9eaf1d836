"""`graphfix repair TREE OUT`: every model folder of a tree, one table, one JSON document, one exit code that says
whether all, some or none were repaired (batch/tree.py does the work)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..options import RepairOptions
from . import table
from .app import Output, StdoutFailed, Verbosity, emit_json, escaped, run, say, tell
from .report import first_use_line, waiting_line

if TYPE_CHECKING:
    from rich.table import Table

    from ..batch.tree import ModelOutcome, TreeRepairResult
    from ..pipeline import Validator


def _installing(release: str, home: Path) -> None:
    tell(first_use_line(release, home))


def _waiting(release: str, home: Path) -> None:
    tell(waiting_line(release, home))


def repair_tree_command(source: Path, out: Path, jobs: int, options: RepairOptions, validator: Validator | None,
                        output: Output, started: float) -> int:
    from ..batch.tree import repair_tree

    def failed_now(model: ModelOutcome) -> None:  # said as it happens; the table and the summary come at the end
        if model.outcome == "failed" and not output.json:
            typer.echo(f"error: {escaped(model.error or '')}", err=True)

    result = repair_tree(source, out, options, jobs=jobs, on_model=failed_now, validator=validator,
                         on_install=_installing, on_wait=_waiting)
    run.exit_code = result.exit_code
    if output.json:
        emit_json("repair", {"ok": result.exit_code == 0, **result.to_dict()})
        return result.exit_code
    if output.verbosity is not Verbosity.QUIET:
        say(f"{result.input} -> {result.output}")  # not the table's title: rich would wrap it to the table's width
        try:
            table.print_table(tree_table(result))
        except OSError as err:
            raise StdoutFailed(err) from None
    say(tree_summary(result, time.monotonic() - started))
    return result.exit_code


def tree_table(result: TreeRepairResult) -> Table:
    """One row per model folder: its outcome, the findings repaired, the oldest onnxruntime that loads it, time."""
    from rich.text import Text

    from .shown import shown

    drawn = table.new_table(("model", "outcome", "findings", "oldest onnxruntime", "time"), ("findings", "time"))
    for model in result.models:
        drawn.add_row(Text(shown(model.folder)), model.outcome.upper() if model.outcome == "failed"
                      else model.outcome, str(model.findings) if model.result else "-",
                      model.oldest_onnxruntime or "-", f"{model.seconds:.1f} s")
    return drawn


def tree_summary(result: TreeRepairResult, seconds: float) -> str:
    """`repaired 48 of 50 model folders of models -> fixed (2 failed: a, b); 61.2 s`."""
    failed = result.failed
    done = len(result.models) - len(failed)
    failures = f" ({len(failed)} failed: {', '.join(m.folder for m in failed)})" if failed else ""
    return f"repaired {done} of {len(result.models)} model folders of {result.input} -> {result.output}{failures}; " \
           f"{seconds:.1f} s"
