"""What a person watching a terminal sees while a run is under way: a rich progress bar on stderr.

Progress is shown only when stderr is an interactive terminal (not in pipes, CI logs or with --json), so stdout
stays exactly the result and captured logs stay free of redraw sequences.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ..batch.layouts import directory_files
from ..io import interrupts

if TYPE_CHECKING:  # rich costs ~35 ms to import: loaded only by runs that draw something
    from rich.progress import Progress


def progress_wanted(stream: TextIO | None = None, *, as_json: bool = False) -> bool:
    stream = stream or sys.stderr
    if as_json or os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def plan_size(directory: os.PathLike[str]) -> tuple[int, int]:
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
