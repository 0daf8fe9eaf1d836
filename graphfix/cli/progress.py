"""What a person watching a terminal sees: a rich progress bar on stderr, and the closing table of a directory run.

Progress is shown only when stderr is an interactive terminal (not in pipes, CI logs or with --json), so stdout
stays exactly the result and captured logs stay free of redraw sequences.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..batch.layouts import directory_files
from ..batch.model_directory import DirectoryRepairResult
from ..io import interrupts

if TYPE_CHECKING:  # rich costs ~35 ms to import: loaded only by runs that draw something
    from rich.progress import Progress
    from rich.table import Table


def progress_wanted(stream: TextIO | None = None, *, as_json: bool = False) -> bool:
    stream = stream or sys.stderr
    if as_json or os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def plan_size(directory: os.PathLike) -> tuple[int, int]:
    """Files and bytes a directory run goes through: the totals of its progress bar."""
    names = directory_files(Path(directory))
    return len(names), sum((Path(directory) / name).stat().st_size for name in names)


class FileProgress:
    """Files and bytes done, and the step under way: the callback of pipeline.repair / repair_directory."""

    def __init__(self, progress: Progress, files: int, total_bytes: int):
        self._progress = progress
        self._files, self._done = files, 0
        self._task = progress.add_task("starting", total=total_bytes or None, files=f"0/{files}")

    def __call__(self, name: str, step: str, nbytes: int = 0) -> None:
        if step == "done":
            self._done += 1
            self._progress.update(self._task, advance=nbytes, files=f"{self._done}/{self._files}")
        else:
            self._progress.update(self._task, description=f"{step} {name}")


@contextmanager
def terminal_progress(enabled: bool, files: int, total_bytes: int) -> Iterator[FileProgress | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.fields[files]}[/] files"), BarColumn(), DownloadColumn(),
               TimeElapsedColumn(), TextColumn("{task.description}"))
    progress = Progress(*columns, console=Console(stderr=True), transient=True)
    with interrupts.held_for_main_thread():  # its refresh thread must never be the one a Ctrl-C lands in
        progress.start()
    try:
        yield FileProgress(progress, files, total_bytes)
    finally:
        progress.stop()


def _findings(codes: list[str]) -> str:
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    return " ".join(f"{code}x{n}" if n > 1 else code for code, n in sorted(counts.items())) or "-"


def summary_table(result: DirectoryRepairResult) -> Table:
    from rich import box
    from rich.table import Table

    """One row per merged decoder: what was found, how many changes, the validation (and the encoder that fed it,
    "-" where the states were synthesized), and the time it took."""
    table = Table(box=box.SIMPLE_HEAD, title=f"{result.input} -> {result.output}", title_justify="left")
    for column in ("model", "findings", "changes", "versions", "proof", "fed by", "time"):
        table.add_column(column, justify="right" if column in ("changes", "time") else "left", no_wrap=True)
    for model in result.models:
        validation, loaded_on = model.result.validation, model.result.loaded_on
        verdict = (f"decodes in {validation.onnxruntime} (max diff {validation.max_abs_diff:.2g})"
                   if validation is not None and validation.ok else "FAILED" if validation is not None
                   else f"loads in {loaded_on}" if loaded_on else "skipped")
        if validation is not None and loaded_on and loaded_on != validation.onnxruntime:
            verdict += f", loads in {loaded_on}"
        before, after = model.result.versions.get("before", ""), model.result.versions.get("after", "")
        versions = before if before == after else f"{before} -> {after}"
        table.add_row(model.path, _findings([c.code for c in model.result.changes]), str(len(model.result.changes)),
                      versions, verdict, model.encoder or "-", f"{model.seconds:.1f} s")
    return table


def print_table(table: Table, stream: TextIO | None = None) -> None:
    from rich.console import Console

    stream = stream or sys.stdout
    if hasattr(stream, "isatty") and stream.isatty():
        Console(file=stream, highlight=False).print(table)
        return
    # In a pipe or CI log: no colour codes, no wrapping at 80 columns, no trailing padding.
    console = Console(file=io.StringIO(), width=200, no_color=True, highlight=False)
    with console.capture() as captured:
        console.print(table)
    stream.write("\n".join(line.rstrip() for line in captured.get().splitlines()).strip("\n") + "\n")
