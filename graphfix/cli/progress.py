"""What a person watching a terminal sees while a run is under way: a rich progress bar on stderr.

Progress is shown only when stderr is an interactive terminal (not in pipes, CI logs or with --json), so stdout
stays exactly the result and captured logs stay free of redraw sequences.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..batch.layouts import directory_files
from ..process import interrupts
from .shown import shown

if TYPE_CHECKING:  # rich is slow to import: loaded only by runs that draw something
    from rich.progress import Progress


def progress_wanted(stream: TextIO | None = None, *, as_json: bool = False) -> bool:
    stream = stream or sys.stderr
    if as_json or os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def plan_sizes(source: Path) -> dict[str, int]:
    """The bytes of each file a run goes through (by the name its progress reports): the bar's plan. A file that
    cannot be read is the run's error to report, not the bar's."""
    if not source.is_dir():
        try:
            return {source.name: source.stat().st_size}
        except OSError:
            return {source.name: 0}
    return {name: (source / name).stat().st_size for name in directory_files(source)}


# How far into a file each step of pipeline.repair is: the bar moves as a file goes through them, not only once it
# is done (a single decoder would otherwise show an empty bar for the whole run).
STEP_SHARE = {"copying": 0.0, "reading": 0.0, "repairing": 0.2, "writing": 0.4, "validating": 0.6,
              "loading on target": 0.8}


class FileProgress:
    """Files and bytes done, and the step under way: the callback of pipeline.repair / repair_directory. A file
    under way counts for the share of its bytes its step has reached (STEP_SHARE); a finished one, in full."""

    def __init__(self, progress: Progress, sizes: Mapping[str, int]):
        self._progress = progress
        self._sizes = sizes
        self._files, self._done = len(sizes), 0
        self._finished_bytes = 0
        self._under_way: dict[str, float] = {}
        total = sum(sizes.values())
        self._task = progress.add_task("starting", total=total or None, files=f"0/{self._files}")

    def __call__(self, name: str, step: str, nbytes: int = 0) -> None:
        if step == "done":
            self._done += 1
            self._under_way.pop(name, None)
            self._finished_bytes += nbytes or self._sizes.get(name, 0)
            self._progress.update(self._task, completed=self._completed(), files=f"{self._done}/{self._files}")
            return
        share = STEP_SHARE.get(step)
        if share is not None:  # a step never goes back: a retried gate does not move the bar backwards
            self._under_way[name] = max(self._under_way.get(name, 0.0), share * self._sizes.get(name, 0))
        self._progress.update(self._task, completed=self._completed(), description=f"{step} {shown(name)}")

    def _completed(self) -> float:
        return self._finished_bytes + sum(self._under_way.values())


@contextmanager
def terminal_progress(enabled: bool, sizes: Mapping[str, int]) -> Iterator[FileProgress | None]:
    """The bar of a run through `sizes` (each file's bytes, by the name its steps report), on a terminal only."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.fields[files]}[/] files"), BarColumn(), DownloadColumn(),
               TimeElapsedColumn(), TextColumn("{task.description}", markup=False))
    progress = Progress(*columns, console=Console(stderr=True), transient=True)
    with interrupts.held_for_main_thread():  # its refresh thread must never be the one a Ctrl-C lands in
        progress.start()
    try:
        yield FileProgress(progress, sizes)
    finally:
        progress.stop()
