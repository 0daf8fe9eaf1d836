"""Repair a whole model directory (Optimum or onnx-community layout) into a drop-in replacement.

The output directory is assembled in a hidden staging directory beside it (same filesystem) and renamed into place
only when every merged decoder in it has been repaired and validated, so OUT_DIR either does not exist or is
complete. Files other than the merged decoders are copied (a reflink where the filesystem can), never shared with the
input unless the user asks (`data_mode="link"`): editing the output's config.json must not edit the input's.
External data of other models is always copied, see layouts.plan_directory.
"""

from __future__ import annotations

import errno
import gc
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInputError, GraphfixError, raise_if_exhausted
from ..io.datacopy import copy_data_file
from ..io.native_libraries import address_space_limit, address_space_used
from ..io.path_safety import open_inside
from ..io.write import InPlaceBackup, backup_path, check_output_directory, land, parent_of, staging_directory
from ..options import RepairOptions
from ..pipeline import RepairResult, Validator, repair
from ..process import interrupts
from .layouts import encoder_for, find_merged_decoders, plan_directory

# on_progress(relative path, step, bytes done with): step is "copying", a repair step (see pipeline.repair) or
# "done"; bytes are reported once per file, when it is done.
ProgressCallback = Callable[[str, str, int], None]


@dataclass
class ModelRepair:
    """One merged decoder of a directory run."""

    path: str  # relative to the directory, POSIX
    result: RepairResult
    seconds: float
    encoder: str | None = None  # the export's encoder that fed its proof (relative), None: synthesized states

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "seconds": round(self.seconds, 3), "encoder": self.encoder,
                **self.result.to_dict()}


@dataclass
class DirectoryRepairResult:
    input: Path
    output: Path
    models: list[ModelRepair] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    retargeted: list[str] = field(default_factory=list)  # ONNX models other than merged decoders (--target-ort)

    @property
    def changed(self) -> bool:
        return any(m.result.changed for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        return {"input": str(self.input), "output": str(self.output), "changed": self.changed,
                "models": [m.to_dict() for m in self.models], "linked": self.linked, "copied": self.copied,
                "retargeted": self.retargeted}


def _repair_one(source: Path, out: Path, options: RepairOptions, name: str = "",
                on_progress: ProgressCallback | None = None,
                validator: Validator | None = None) -> tuple[RepairResult, float]:
    started = time.perf_counter()
    step = (lambda what: on_progress(name, what, 0)) if on_progress else None
    try:
        with interrupts.working():
            result = repair(source, out, options, on_step=step, validator=validator)
    except GraphfixError as err:
        # Say which decoder of the directory failed; the type (and so the exit code) stays.
        err.with_context(f"{name}: " if name else "")
        raise
    return result, time.perf_counter() - started


def _size(path: Path) -> int:
    """For progress only: a file removed meanwhile is the repair's error to report, not this one's."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


Job = tuple[str, Path, Path, RepairOptions]  # (relative name, source, out, its options)


def _repair_all(jobs: list[Job], workers: int, on_progress: ProgressCallback | None,
                validator: Validator | None) -> list[ModelRepair]:
    """Repair each (name, source, out); results in input order whatever order the workers finish in."""
    done: list[ModelRepair] = []
    if workers <= 1 or len(jobs) <= 1:
        for name, source, out, options in jobs:
            result, seconds = _repair_one(source, out, options, name, on_progress, validator)
            done.append(ModelRepair(name, result, seconds))
            if on_progress:
                on_progress(name, "done", _size(source))
        return done
    import multiprocessing  # only --jobs runs pay for process pools
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # Processes, not threads: the passes hold the GIL. "spawn" because onnxruntime's thread pools do not survive fork.
    # Workers, and the resource tracker the pool's queues start, ignore Ctrl-C and SIGHUP (a terminal sends them to
    # the whole group): the parent alone reports them, once, stops the workers with SIGTERM (which unwinds a worker
    # like an interruption: its proof child killed, its staging removed) and cleans up.
    _require_process_headroom(workers)
    failure: OSError | None = None
    try:
        with interrupts.ignored_by_children():
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=interrupts.install_in_worker)
    except OSError as err:  # out of descriptors (or processes) before the pool could start
        failure = OSError(err.errno, err.strerror)
    if failure is not None:
        # Raised without the half-built pool's frames: collected now, its pipes close, and the staging directory
        # can be removed (removing a directory tree takes descriptors too).
        gc.collect()
        raise failure
    with pool, _room_for_pool_threads(), _failures_of_pool_threads() as thread_failures:
        try:
            with interrupts.ignored_by_children():
                try:
                    futures = [pool.submit(_repair_one, source, out, options, name, None, validator)
                               for name, source, out, options in jobs]
                except (OSError, RuntimeError) as err:
                    _raise_if_out_of_processes(err, workers)
                    raise
            for (name, source, _, _), future in zip(jobs, futures):
                if on_progress:
                    on_progress(name, "repairing", 0)
                try:
                    result, seconds = _result_unless_pool_thread_failed(future, thread_failures, workers)
                except BrokenProcessPool:  # the worker was killed (the kernel's OOM killer, a kill -9): no traceback
                    if (limit := address_space_limit()) is not None:  # or ended by the loader, unable to map a library
                        raise MemoryError(f"a --jobs worker process died under the address-space limit of "
                                          f"{limit // 2**20} MB") from None
                    raise GraphfixError("a --jobs worker process died (killed, e.g. out of memory) while repairing; "
                                        "nothing was written") from None
                done.append(ModelRepair(name, result, seconds))
                if on_progress:
                    on_progress(name, "done", _size(source))
        except BaseException:
            _stop_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return done


_POOL_THREAD_STACK, _POOL_HEADROOM = 2 * 2**20, 32 * 2**20


@contextmanager
def _room_for_pool_threads() -> Iterator[None]:
    """Under an address-space limit, the pool's own threads (its manager, the queue feeder) start with small stacks,
    and only with room left for them: near the limit a thread can fail before it has said it started, and
    Thread.start then waits for it for ever (in the main thread too, where nothing could notice)."""
    limit = address_space_limit()
    if limit is None:
        yield
        return
    if (used := address_space_used()) is not None and limit - used < _POOL_HEADROOM:
        raise MemoryError(f"no room to start the --jobs pool's threads within the address-space limit of "
                          f"{limit // 2**20} MB")
    previous = threading.stack_size(_POOL_THREAD_STACK)
    try:
        yield
    finally:
        threading.stack_size(previous)


@contextmanager
def _failures_of_pool_threads() -> Iterator[list[BaseException]]:
    """What kills the executor's own threads in this process (its manager thread, the queue feeder it starts),
    collected instead of printed: under a memory or process limit such a thread dies with "can't start new thread"
    or "can't allocate lock", or fails in its own start-up (which Python reports as unraisable), and the futures it
    would have fed never finish."""
    failures: list[BaseException] = []
    previous_thread_hook, previous_unraisable_hook = threading.excepthook, sys.unraisablehook

    def collect(args: threading.ExceptHookArgs | sys.UnraisableHookArgs) -> None:
        if args.exc_value is not None:
            failures.append(args.exc_value)

    threading.excepthook, sys.unraisablehook = collect, collect
    try:
        yield failures
    finally:
        threading.excepthook, sys.unraisablehook = previous_thread_hook, previous_unraisable_hook


def _result_unless_pool_thread_failed(future: Any, thread_failures: list[BaseException], workers: int) -> Any:
    from concurrent.futures import TimeoutError as FutureTimeout

    while True:
        try:
            return future.result(timeout=0.25)
        except FutureTimeout:
            if thread_failures:
                failure = thread_failures[0]
                _raise_if_out_of_processes(failure, workers)
                if (limit := address_space_limit()) is not None:  # whatever it died of, the limit is why
                    raise MemoryError(f"a thread of the --jobs pool failed within the address-space limit of "
                                      f"{limit // 2**20} MB ({failure!r})") from None
                raise failure from None


# What a pool of n workers adds to the tasks RLIMIT_NPROC counts (threads too), measured with slack: each worker's
# process and its threads, the resource tracker, the executor's threads in this process.
_TASKS_PER_WORKER, _TASKS_PER_POOL = 3, 3


def _require_process_headroom(workers: int) -> None:
    """Refuse up front, in one line, a pool the process limit cannot hold: past it, thread and process starts fail
    in the pool's own threads and in half-started workers, each with a traceback of its own."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    if soft == resource.RLIM_INFINITY or os.geteuid() == 0 or not os.path.isdir("/proc/self/task"):
        return  # no limit, or one root is exempt from, or no /proc to count with (not Linux)
    needed = _tasks_of_this_user() + workers * _TASKS_PER_WORKER + _TASKS_PER_POOL
    if needed > soft:
        raise BadInputError(f"cannot start {workers} --jobs worker processes: the process limit (ulimit -u {soft}) "
                            f"is too low for them; use fewer --jobs or raise it")


def _tasks_of_this_user() -> int:
    uid, count = str(os.getuid()), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if fields.get("Uid", "").split()[:1] == [uid]:
            count += int(fields.get("Threads", "1").strip() or 1)
    return count


def _raise_if_out_of_processes(err: BaseException, workers: int) -> None:
    """A pool that cannot start its workers or its threads (fork's EAGAIN, "can't start new thread"): the process
    limit (RLIMIT_NPROC, which counts threads too), said in one line."""
    if "start new thread" in str(err) and (limit := address_space_limit()) is not None:
        raise MemoryError(f"cannot start the --jobs pool's threads within the address-space limit of "
                          f"{limit // 2**20} MB") from None
    if (isinstance(err, OSError) and err.errno == errno.EAGAIN) or "start new thread" in str(err):
        raise BadInputError(f"cannot start {workers} --jobs worker processes: the process limit is reached "
                            "(ulimit -u); use fewer --jobs or raise it") from None


def _stop_workers(pool: Any, grace: float = 10.0) -> None:
    """SIGTERM to each worker still running: the batch has failed or been interrupted, and what a worker is
    repairing lands in the staging directory that is about to be removed. A worker still alive after `grace`
    seconds is killed: terminating one that holds the pool's call-queue lock leaves the others blocked on that lock
    for ever (multiprocessing's documented queue corruption), and the pool's shutdown would wait on them."""
    processes = list(dict(getattr(pool, "_processes", None) or {}).values())  # the executor's own table
    for process in processes:
        try:
            process.terminate()
        except (OSError, ValueError):  # already gone, or already closed
            pass
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        except (OSError, ValueError, AssertionError):  # closed, or not a child of this process
            pass


def _chmod_directory(path: Path, mode: int) -> None:
    """The input directory's permission bits on a new one, keeping the set-group-ID bit it inherited from a setgid
    parent (a shared folder), as `cp -r` does: what is made inside then gets that folder's group, not the user's."""
    inherited = os.stat(path).st_mode & stat.S_ISGID
    os.chmod(path, (mode & 0o7777) | inherited)


def _make_parents(source: Path, staging: Path, name: str) -> None:
    """The directories of `name` inside staging, each with the mode its source directory has."""
    for folder in reversed(Path(name).parents[:-1]):  # outermost first, the staging root itself excluded
        if not (staging / folder).is_dir():
            (staging / folder).mkdir()
            _chmod_directory(staging / folder, os.stat(source / folder).st_mode)


def _carry_over(source: Path, staging: Path, name: str, mode: str) -> None:
    """`name` into staging, through the same resolver as external data (path_safety.open_inside): the file opened is
    checked to be a regular file inside `source`, and that open file is what is linked or copied."""
    target = staging / name
    _make_parents(source, staging, name)
    opened = open_inside(source, name, str(source / name))
    try:
        copy_data_file(opened.fd, opened.real, target, mode)
        if os.stat(target).st_ino != opened.stat.st_ino:  # a copy: the times of the original, as cp -p
            os.utime(target, ns=(opened.stat.st_atime_ns, opened.stat.st_mtime_ns))
    except OSError as err:
        raise_if_exhausted(err)
        raise BadInputError(f"cannot copy {source / name}: {err.strerror or err}") from None
    finally:
        os.close(opened.fd)


def repair_directory(source: str | os.PathLike[str], out: str | os.PathLike[str],
                     options: RepairOptions | None = None, *, jobs: int = 1,
                     on_progress: ProgressCallback | None = None, validator: Validator | None = None,
                     **keywords: object) -> DirectoryRepairResult:
    """Repair every merged decoder in the model directory `source` into the new directory `out`, carrying every
    other file over unchanged; with `target_ort`, every other ONNX model of the export (encoder, split decoders) is
    retargeted for that onnxruntime and loaded in it too, since the user deploys the whole export. `options` are
    those of pipeline.repair (keywords change single fields, as there). `jobs` models are repaired at once, in
    separate processes. With `in_place` (out == source) each decoder (and, with a target, each other model) is
    replaced atomically and keeps its `.bak`; nothing else is touched."""
    options = (options or RepairOptions()).but(**keywords)
    source, out = Path(source), Path(out)
    if jobs < 1:
        raise BadInputError("--jobs must be at least 1")
    if options.in_place or source.resolve() == out.resolve():
        if not options.in_place:
            raise BadInputError(f"output is the input ({source}); pass --in-place to repair the directory in place "
                                "(keeps a .bak of each decoder)")
        if source.resolve() != out.resolve():
            raise BadInputError("--in-place needs the output to be the input")
        return _repair_in_place(source, jobs, on_progress, options, validator)
    plan = plan_directory(source, retarget=options.target is not None)
    check_output_directory(out, source=source)
    data_mode = options.data_mode
    linked = plan.links if data_mode == "link" else []
    copied = plan.copies + [name for name in plan.links if name not in linked]
    with staging_directory(parent_of(out)) as staging:  # removed unless renamed into place
        _chmod_directory(staging, source.stat().st_mode)  # mkdtemp's 0700 is not what the user's directory had
        for name in plan.links + plan.copies:
            if on_progress:
                on_progress(name, "copying", 0)
            # External data of other models is never linked: onnx >= 1.23 refuses a data file with several links.
            _carry_over(source, staging, name, data_mode if name in linked or data_mode == "copy" else "clone")
            if on_progress:
                on_progress(name, "done", (staging / name).stat().st_size)
        for name in plan.decoders + plan.others:
            _make_parents(source, staging, name)
        # The encoders are retargeted first: a decoder's proof is then fed by the encoder as it will be deployed.
        others = _repair_all([(name, source / name, staging / name, options.but(any_model=True))
                              for name in plan.others], jobs, on_progress, validator)
        encoders = {name: encoder_for(source, name) for name in plan.decoders}
        work = [(name, source / name, staging / name,
                 options.but(encoder=_encoder_path(source, staging, encoders[name], plan.others)))
                for name in plan.decoders]
        models = _repair_all(work, jobs, on_progress, validator) + others
        for model in models:  # the paths the user will see, not the staging ones
            model.result.output = out / model.path
            if model.result.validation is not None:  # without a proof (--no-validate) no encoder fed anything
                model.encoder = encoders.get(model.path)
                model.result.validation.model = str(out / model.path)
                if model.encoder is not None:
                    model.result.validation.encoder = str(out / model.encoder)
        land([(staging, out)], before=lambda: out.rmdir() if out.exists() else None)  # checked empty above
    return DirectoryRepairResult(input=source, output=out, models=models, linked=linked, copied=copied,
                                 retargeted=plan.others)


def _encoder_path(source: Path, staging: Path, encoder: str | None, retargeted: list[str]) -> Path | None:
    """Where the encoder that feeds a decoder's proof is read: its retargeted copy in staging, else the input's."""
    if encoder is None:
        return None
    return staging / encoder if encoder in retargeted else source / encoder


def _repair_in_place(directory: Path, jobs: int, on_progress: ProgressCallback | None,
                     options: RepairOptions, validator: Validator | None) -> DirectoryRepairResult:
    """Each decoder replaced atomically with its .bak; all of them or none: when one fails, those already replaced
    are put back from their .bak (byte-identical copies of the originals; in place, external data is never
    rewritten) and the error says which. A Ctrl-C instead leaves what landed, complete with its .bak, and the
    interruption message names it (judged from the disk)."""
    names = find_merged_decoders(directory)
    # With a target, the export's other models (encoder, split decoders) are retargeted in place too, as into a
    # new folder: the user deploys the whole export.
    others = plan_directory(directory, retarget=True).others if options.target is not None else []
    # Refuse before the first model is replaced, not halfway through the directory.
    for name in others + names:
        if InPlaceBackup(directory / name).blocked():
            raise BadInputError(f"backup {backup_path(directory / name)} already exists and differs from "
                                f"{directory / name}; move it away first")
    encoders = {name: encoder_for(directory, name) for name in names}
    work = [(name, directory / name, directory / name,
             options.but(encoder=directory / e if (e := encoders[name]) else None)) for name in names]
    try:
        # The encoders first, as into a new folder: a decoder's proof is fed by the encoder as it will be deployed.
        retargeted = _repair_all([(name, directory / name, directory / name, options.but(any_model=True))
                                  for name in others], jobs, on_progress, validator)
        models = _repair_all(work, jobs, on_progress, validator)
        for model in models:
            model.encoder = encoders[model.path] if model.result.validation is not None else None
    except Exception as err:
        restored = _put_back(directory, others + names)
        if restored and isinstance(err, GraphfixError):
            err.with_context(suffix=f"; put back from their .bak: {', '.join(restored)}")
        raise
    return DirectoryRepairResult(input=directory, output=directory, models=models + retargeted, retargeted=others)


def _put_back(directory: Path, names: list[str]) -> list[str]:
    """Undo the decoders this run replaced (each has a .bak, none had one before): the .bak is renamed over it."""
    restored = []
    with interrupts.held_for_main_thread():
        for name in names:
            backup = backup_path(directory / name)
            if backup.exists():
                os.replace(backup, directory / name)
                restored.append(name)
    return restored
