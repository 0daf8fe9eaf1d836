"""The closing table of a directory run (one row per merged decoder) or a tree run (one per model folder), as rich
draws it where it fits the output, stacked row by row where it does not, plain text without colour in a pipe."""

from __future__ import annotations

import io
import sys
from typing import TYPE_CHECKING, TextIO

from .layout import columns_asked, wrapped
from .shown import shown

if TYPE_CHECKING:  # rich is slow to import: loaded only by runs that draw a table
    from rich.table import Table

    from ..batch.model_directory import DirectoryRepairResult


def _finding_counts(codes: list[str]) -> str:
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    return " ".join(f"{code}x{n}" if n > 1 else code for code, n in sorted(counts.items())) or "-"


def new_table(columns: tuple[str, ...], right: tuple[str, ...], title: str | None = None) -> Table:
    """A closing table with these columns (`right` aligned right), cells never wrapped; names (the title, the
    cells a caller gives as rich Text) never read as rich markup."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, title=Text(shown(title)) if title else None, title_justify="left")
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", no_wrap=True)
    return table


def summary_table(result: DirectoryRepairResult) -> Table:
    """One row per merged decoder: what was found, how many changes, the validation (and the encoder that fed it,
    "-" where the states were synthesized), and the time it took."""
    from rich.text import Text

    table = new_table(("model", "findings", "changes", "versions", "proof", "fed by", "time"), ("changes", "time"),
                      title=f"{result.input} -> {result.output}")
    for model in result.models:
        validation, loaded_on = model.result.validation, model.result.loaded_on
        verdict = (f"decodes in {validation.onnxruntime} (max diff {validation.max_abs_diff:.2g})"
                   if validation is not None and validation.ok else "FAILED" if validation is not None
                   else f"loads in {loaded_on}" if loaded_on else "skipped")
        if validation is not None and loaded_on and loaded_on != validation.onnxruntime:
            verdict += f", loads in {loaded_on}"
        before, after = model.result.versions.get("before", ""), model.result.versions.get("after", "")
        versions = before if before == after else f"{before} -> {after}"
        table.add_row(Text(shown(model.path)), _finding_counts([c.code for c in model.result.changes]),
                      str(len(model.result.changes)), versions, verdict, Text(shown(model.encoder or "-")),
                      f"{model.seconds:.1f} s")
    return table


PIPE_WIDTH = 200  # a pipe or CI log without $COLUMNS: no edge to fit, so a row stays one line


def _rendered(table: Table, width: int) -> list[str]:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, no_color=True, highlight=False)
    with console.capture() as captured:
        console.print(table)
    return [line.rstrip() for line in captured.get().strip("\n").splitlines()]


def stacked_lines(table: Table, width: int) -> list[str]:
    """A table too wide for `width` columns, one block per row instead: its first cell (a model's path, never
    cut) on a line, then each other column as `  name  value`, a long value wrapped under itself."""
    columns = table.columns
    label = max(len(str(column.header)) for column in columns[1:]) + 4
    lines = [str(table.title)] if table.title else []
    cells = [list(column.cells) for column in columns]
    for row in range(table.row_count):
        lines.append(str(cells[0][row]))
        for column, values in zip(columns[1:], cells[1:]):
            lines += wrapped(f"  {column.header!s:<{label - 2}}{values[row]}", width, label)
    return lines


def print_table(table: Table, stream: TextIO | None = None) -> None:
    """The table as it is when it fits the output's width (the terminal's, or $COLUMNS), else stacked row by row
    (stacked_lines): names are never cut to `onnx/decoder_model_merge...`."""
    from rich.console import Console

    stream = stream or sys.stdout
    terminal = hasattr(stream, "isatty") and stream.isatty()
    width = Console(file=stream).width if terminal else columns_asked() or PIPE_WIDTH
    natural = max(map(len, _rendered(table, 1000)), default=0)
    if natural > width:
        stream.write("\n".join(stacked_lines(table, width)) + "\n")
    elif terminal:
        Console(file=stream, highlight=False).print(table)
    else:  # a pipe or CI log: no colour codes, no trailing padding
        stream.write("\n".join(_rendered(table, width)) + "\n")
