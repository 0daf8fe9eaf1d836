"""Writing models: the one commit path. Everything a command writes is staged in a hidden directory beside its
destination (same filesystem, so renames out of it are atomic), proven there by the caller's gates, and
only then renamed into place, all renames in one block that Ctrl-C cannot cut (data files first, models last). On
any failure the staging directory is removed: a destination only ever holds the old file or the complete new one.

Writing streams: the edited skeleton is serialized (kilobytes) and the payload ranges are copied file-to-file in
the kernel (datacopy.py). No destination may be a file the input reads (its model file or external data), except
the model file itself in an in-place repair, which then keeps reading its external data where it lies.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from google.protobuf.message import EncodeError

from ..errors import BadInputError, GraphfixError, raise_if_exhausted
from ..process.interrupts import held_for_main_thread
from . import onnx_proto as onnx
from . import portable, protowire
from .datacopy import DATA_MODES, copy_data_file, copy_fd, write_pieces
from .external_data import external_location, external_tensors, set_external_location
from .read import LoadedModel, file_stamp


class Gate(Protocol):
    """A check of the complete staged files ({destination: staged path}), named by the step it shows; raising
    stops the commit (proof/gates.py holds graphfix's)."""

    @property
    def step(self) -> str: ...

    def __call__(self, staged: Mapping[Path, Path]) -> None: ...


def parent_of(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_in_place(source: Path, out: Path, in_place: bool, remedy: str) -> None:
    """The output is the input exactly when --in-place says so (`remedy`: what --in-place would do)."""
    same = same_file(source, out) or source.resolve() == out.resolve()
    if same and not in_place:
        raise BadInputError(f"output is the input ({source}); pass --in-place to {remedy}")
    if in_place and not same:
        raise BadInputError("--in-place needs the output to be the input")


def _is_dir(path: Path) -> bool:
    """Path.is_dir, with an unusable name (too long, a NUL in it) one line instead of an OSError."""
    try:
        return path.is_dir()
    except OSError as err:
        raise BadInputError(f"cannot use {path}: {err.strerror}") from None
    except ValueError as err:
        raise BadInputError(f"cannot use {path}: {err}") from None


def check_output_file(out: Path, *, replace: bool = True) -> None:
    """OUT may be replaced by a file: it is absent or a regular file (never a device, FIFO or socket, which a rename
    would turn into a regular file), replaced only when `replace` says so, and its directory exists and is
    writable."""
    if _is_dir(out):
        raise BadInputError(f"output {out} is a directory")
    try:
        info: os.stat_result | None = os.stat(out)
    except OSError:  # absent, or a dangling or looping link: the rename replaces the link itself
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise BadInputError(f"output {out} exists and is not a regular file; give a file name")
    if not replace and os.path.lexists(out):
        raise BadInputError(f"output {out} already exists; pass --force to replace it")
    _check_writable_parent(out)


def check_output_directory(out: Path, *, source: Path | None = None, must_be_empty: bool = True) -> None:
    """OUT may become a new output directory of `source` (`must_be_empty`), or receive files (split)."""
    if out.is_symlink():  # replacing it would replace the link, not the directory it names
        raise BadInputError(f"output {out} is a symlink; give the directory it points to, or another name")
    if source is not None and out.resolve().is_relative_to(source.resolve()):
        raise BadInputError(f"output directory {out} is inside the input {source}")
    if must_be_empty and out.exists() and (not _is_dir(out) or any(out.iterdir())):
        raise BadInputError(f"output {out} already exists and is not an empty directory; remove it or pick another")
    if out.exists() and not out.is_dir():
        raise BadInputError(f"output {out} is not a directory")
    if out.is_dir() and not must_be_empty:
        if not os.access(out, os.W_OK | os.X_OK):
            raise BadInputError(f"output directory {out} is not writable")
        return
    _check_writable_parent(out)


def _check_writable_parent(out: Path) -> None:
    parent = parent_of(out)
    if not _is_dir(parent):
        raise BadInputError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"output directory {parent} is not writable")


def input_files(source: LoadedModel) -> set[Path]:
    """Every file the input reads: its model file and its external data (the files opened, links resolved)."""
    return {source.path.resolve()} | {data.real for data in source.data.values()}


def _reads(path: Path, reads: set[Path]) -> bool:
    """Whether `path` is one of the files the input reads: by name, or (a case-insensitive filesystem spells one
    file several ways, macOS's and Windows' defaults) by being that very file."""
    return path.resolve() in reads or any(same_file(path, read) for read in reads)


def land(renames: list[tuple[Path, Path]], before: Callable[[], None] | None = None) -> None:
    """Rename each staged path over its destination, all of them or none: a Ctrl-C is held until they are done,
    and when a rename fails (a destination turned into a directory, the disk went away) the ones already made are
    undone. Each file a rename replaces is first hardlinked beside its staged path, so it can be put back."""
    with held_for_main_thread():
        if before is not None:
            before()
        done: list[tuple[Path, Path, Path | None]] = []
        try:
            for src, dst in renames:
                kept: Path | None = None
                if os.path.isfile(dst) and not os.path.islink(dst):
                    kept = src.with_name(f"{src.name}.previous")
                    try:
                        os.link(dst, kept)
                    except FileNotFoundError:
                        # Another writer replaced dst meanwhile: link(2) of an inode whose last name a rename just
                        # removed is ENOENT. What was there is that writer's to keep, not this run's.
                        kept = None
                done.append((src, dst, kept))
                portable.replace(src, dst)  # retried while Windows says another process has dst open
        except Exception:  # a failed rename; a Ctrl-C is held here, and one raised anyway keeps what landed
            _undo(done)
            raise
        finally:
            for _, _, kept in done:
                if kept is not None:
                    kept.unlink(missing_ok=True)


def _undo(done: list[tuple[Path, Path, Path | None]]) -> None:
    """Put back what each rename replaced (the last one may not have happened: its source is still there)."""
    for src, dst, kept in reversed(done):
        try:
            if src.exists():
                continue  # this rename never happened
            if kept is not None:
                os.replace(kept, dst)
            else:
                os.replace(dst, src)  # a new file where there was none: back into staging, removed with it
        except OSError:
            pass


class staging_directory:
    """A hidden `.graphfix-*` directory in `parent` (same filesystem, so renames out of it are atomic), removed
    on the way out with whatever is still in it. Its name says whose it is and no more: OUT's own name in it would
    take a path near PATH_MAX (or a name near NAME_MAX) over the limit.

    A class, not a generator: a Ctrl-C raised in a @contextmanager's __enter__ after its generator has yielded
    leaves the generator's cleanup to the garbage collector, which at exit may never run it. Here __enter__ cleans
    up after itself, and from its return on the `with` block's own __exit__ is in force."""

    def __init__(self, parent: Path):
        self.parent = parent
        self.path: Path | None = None

    def __enter__(self) -> Path:
        try:
            with held_for_main_thread():
                self.path = Path(tempfile.mkdtemp(prefix=".graphfix-", dir=self.parent))
        except BaseException:
            self.__exit__()
            raise
        return self.path

    def __exit__(self, *exc_info: object) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            if os.path.lexists(self.path):  # rmtree holds two descriptors per level; out of them (EMFILE), one
                _remove_tree(self.path)


def _remove_tree(path: Path) -> None:
    """shutil.rmtree with one descriptor open at a time (each listing is read whole, then closed), for the
    directories this module made itself (mode 0700: nothing else writes into them); errors ignored like rmtree's."""
    try:
        for name in os.listdir(path):
            entry = path / name
            if entry.is_dir() and not entry.is_symlink():
                _remove_tree(entry)
            else:
                entry.unlink(missing_ok=True)
        path.rmdir()
    except OSError:
        pass


def _data_location_for(out: Path, index: int, count: int) -> str:
    return f"{out.name}_data" if count == 1 else f"{out.name}_data.{index}"


def write_models(
    outputs: dict[Path, onnx.ModelProto | None],
    source: LoadedModel,
    gates: Sequence[Gate] = (),
    data_mode: str = "clone",
    on_step: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write each model (a skeleton read from `source`, or when None a faithful byte copy of `source`) to its path,
    atomically and together. The paths share one directory.

    Payloads the skeleton left in `source` are copied from it range by range; external data is never parsed: each
    data file of the source is put beside each output (`data_mode`: "clone" = reflink where the filesystem can,
    else an in-kernel copy keeping holes; "copy" = always copy; "link" = hardlink, which onnx >= 1.23 refuses to
    load) and the model's locations are pointed at it, relative. An in-place output keeps its data files.
    Then each gate runs on the complete staged files, in order (`on_step` told its step); the first that raises
    stops the commit and nothing lands.
    """
    if data_mode not in DATA_MODES:
        raise ValueError(f"data_mode must be one of {DATA_MODES}, not {data_mode!r}")
    outs = [Path(out) for out in outputs]
    parent = parent_of(outs[0])
    if any(parent_of(out).resolve() != parent.resolve() for out in outs):
        raise ValueError("write_models writes into one directory")
    reads = input_files(source)
    for out in outs:
        check_output_file(out)
    beside: list[Path] = []  # staged files outside workdir, removed with it
    try:
        with staging_directory(parent) as workdir:
            data_renames: list[tuple[Path, Path]] = []
            staged: dict[Path, Path] = {}
            for out, model in zip(outs, outputs.values()):
                in_place = out.resolve() == source.path.resolve()
                # The data files the written model still reads: a repair that removed the only external tensors
                # (dummies) must not leave an empty, unreferenced OUT_data beside it.
                carried = _referenced(model, source.external_files)
                locations = {loc: loc if in_place else _data_location_for(out, i, len(carried))
                             for i, loc in enumerate(carried)}
                if not in_place and (clash := next((d for d in [out, *(parent / n for n in locations.values())]
                                                    if _reads(d, reads)), None)):
                    raise BadInputError(f"output {clash} is a file the input reads; pick another output name")
                # In place, the model is staged beside its data (not in workdir), so that the proof loads it with
                # the very data files it keeps reading.
                staged[out] = parent / f"{workdir.name}.onnx" if in_place else workdir / out.name
                beside.extend([staged[out]] if in_place else [])
                if model is None and any(old != new for old, new in locations.items()):
                    model = source.model  # unchanged skeleton; only the data file names move
                if model is None:
                    copy_fd(_model_fd(source), staged[out], data_mode)
                else:
                    _write_spliced(_with_locations(model, locations), source, staged[out])
                for old, new in locations.items() if not in_place else ():
                    data = source.data[old]  # the file opened when read, not whatever its name points at now
                    copy_data_file(data.fd, data.real, workdir / new, data_mode)
                    data_renames.append((workdir / new, parent / new))
                os.chmod(staged[out], source.mode)
            _require_unchanged(source)
            try:
                for gate in gates:
                    if on_step is not None:
                        on_step(gate.step)
                    gate(staged)
            except GraphfixError as err:  # say OUT, not the staging name that is about to disappear
                err.args = (_as_destinations(str(err.args[0]), staged, workdir, parent), *err.args[1:])
                raise
            land(data_renames + [(staged[out], out) for out in outs])  # never new data beside an old model
            return outs
    except OSError as err:
        raise_if_exhausted(err)
        _require_unchanged(source)  # a source that shrank mid-copy is the input's story, not OUT's
        raise BadInputError(f"cannot write {outs[0]}: {err.strerror or err}") from None
    finally:
        for path in beside:
            path.unlink(missing_ok=True)


def _referenced(model: onnx.ModelProto | None, files: list[str]) -> list[str]:
    """Of the source's data files `files`, those `model` reads (all of them for a byte copy, model None)."""
    if model is None:
        return files
    used = {external_location(tensor) for tensor in external_tensors(model)}
    return [name for name in files if name in used]


def _require_unchanged(source: LoadedModel) -> None:
    """The input's files are as they were when read (size, mtime, inode of each open file): one rewritten while it
    was being copied would land a mix of two versions, proven or not."""
    opened = [(source.file, source.path)] if source.file is not None else []
    opened += [(data, source.path.parent / location) for location, data in source.data.items()]
    for file, shown in opened:
        if file_stamp(os.fstat(file.fd)) != file_stamp(file.stat):
            raise BadInputError(f"{shown} changed while it was being read; nothing was written (run again once "
                                "whatever writes it is done)")


def _as_destinations(message: str, staged: dict[Path, Path], workdir: Path, parent: Path) -> str:
    for out, path in staged.items():
        message = message.replace(str(path.resolve()), str(out)).replace(str(path), str(out))
    return message.replace(str(workdir.resolve()), str(parent)).replace(str(workdir), str(parent))


def _model_fd(source: LoadedModel) -> int:
    """The model file as it was read (whatever its name points at now), unchanged since."""
    assert source.file is not None, "a LoadedModel from read_model"
    if file_stamp(os.fstat(source.file.fd)) != source.stamp:
        raise BadInputError(f"{source.path} changed while it was being repaired; run again")
    return source.file.fd


def _write_spliced(model: onnx.ModelProto, source: LoadedModel, staged: Path) -> None:
    """The skeleton's bytes with each payload copied back from the source file, which must be the file we read."""
    try:
        skeleton = model.SerializeToString()
    except EncodeError:  # payloads stay in the source: kilobytes that fail to serialize only want memory
        raise MemoryError("serializing the repaired model") from None
    pieces = protowire.join(skeleton)
    src_fd = _model_fd(source) if any(isinstance(p, protowire.SourceRange) for p in pieces) else -1
    write_pieces(pieces, src_fd, staged, mode=source.mode)


def _with_locations(model: onnx.ModelProto, locations: dict[str, str]) -> onnx.ModelProto:
    if all(old == new for old, new in locations.items()):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())  # a skeleton: kilobytes, and the caller's stays as is
    for tensor in external_tensors(model):
        set_external_location(tensor, locations[external_location(tensor)])
    return model


def backup_path(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


class InPlaceBackup:
    """IN.bak of an in-place repair: complete or absent, and removed again when the repair does not land.

    The few steps that change what is on disk run with Ctrl-C held (a held one is raised right after), so that
    `made` always says whether the backup exists, and no hidden temp file outlives an interrupted run."""

    def __init__(self, source: Path):
        self.source = source
        self.path = backup_path(source)
        self.made = False

    def make(self) -> Path:
        if self._stale():  # an interrupted run's: the input as it is now, so it is this run's backup as well
            self.made = True
            return self.path
        if os.path.lexists(self.path):
            raise BadInputError(f"backup {self.path} already exists and differs from {self.source}; move it away "
                                "first")
        temp = None
        try:
            with held_for_main_thread():
                fd, temp = tempfile.mkstemp(prefix=".graphfix-", dir=self.source.parent)
                os.close(fd)
            shutil.copy2(self.source, temp)
            with held_for_main_thread():  # linked (never replacing a backup that appeared meanwhile) and recorded
                os.link(temp, self.path)
                self.made = True
                os.unlink(temp)
                temp = None
        except FileExistsError:
            raise BadInputError(f"backup {self.path} appeared meanwhile; move it away first") from None
        except OSError as err:
            raise BadInputError(f"cannot write backup {self.path}: {err.strerror or err}") from None
        finally:
            if temp is not None:
                os.unlink(temp)
        return self.path

    def blocked(self) -> bool:
        """Whether a backup is in the way: one exists, and it is not a stale copy of the input."""
        return os.path.lexists(self.path) and not self._stale()

    def _stale(self) -> bool:
        """A regular-file backup byte-identical to the input: what a run killed before its new model landed leaves."""
        try:
            return (self.path.is_file() and not self.path.is_symlink()
                    and filecmp.cmp(self.source, self.path, shallow=False))
        except OSError:
            return False

    def discard_if_unchanged(self) -> None:
        """After a failed repair: a backup identical to the input is debris that would block the next --in-place
        run; one that differs means the new model already landed, so it is kept."""
        if self.made and filecmp.cmp(self.source, self.path, shallow=False):
            self.path.unlink(missing_ok=True)
            self.made = False
