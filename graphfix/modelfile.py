"""All file reading and writing of models goes through here.

A repair costs about what copying the file costs. Reading maps the file and parses only its skeleton: every large
weight payload stays in the file, marked by its byte range (protowire.py), so a 2 GB model never becomes 2 GB of
Python objects. External weight data is never read at all, and unsafe external-data locations are refused before
anything touches them. Writing streams: the edited skeleton is serialized (kilobytes) and the payload ranges are
copied file-to-file in the kernel (datacopy.py).

Writing is atomic: everything is written into a hidden temp directory beside the output, checked by the caller's
`before_commit` hook, then renamed into place (data files first, the model last); on any failure the temp
directory is removed, so the output name only ever holds the old file or the complete new one.
"""

from __future__ import annotations

import filecmp
import mmap
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import onnx_proto as onnx
from google.protobuf.message import DecodeError

from . import protowire
from .datacopy import DATA_MODES, copy_data_file, copy_file, write_pieces
from .errors import BadInputError
from .interrupts import held_for_main_thread

EXTERNAL = onnx.TensorProto.EXTERNAL


@dataclass
class LoadedModel:
    path: Path
    model: onnx.ModelProto  # the skeleton: complete graph structure, large payloads left in the file
    external_files: list[str] = field(default_factory=list)  # locations as written in the model, relative
    stamp: tuple[int, int, int] = (0, 0, 0)  # (size, mtime_ns, inode) of path when read: payload ranges point here

    @property
    def directory(self) -> Path:
        return self.path.parent


def _all_tensors(graph: onnx.GraphProto):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_tensors(g)


def external_tensors(model: onnx.ModelProto):
    """Tensors whose data lives in an external-data file (not the payloads a skeleton left in the model file)."""
    return [t for t in _all_tensors(model.graph)
            if t.data_location == EXTERNAL and not protowire.is_payload_marker(_external_location(t))]


def _external_location(tensor: onnx.TensorProto) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def _set_external_location(tensor: onnx.TensorProto, location: str) -> None:
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def read_model(path: str | os.PathLike) -> LoadedModel:
    """Parse the model's skeleton (no weight payloads, no external data); refuse anything that is not ONNX."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"no such file: {path}")
    if path.is_dir():
        raise BadInputError(f"{path} is a directory; give the .onnx file")
    if not path.is_file():
        raise BadInputError(f"{path} is not a regular file")
    try:
        with open(path, "rb") as file:
            stat = os.fstat(file.fileno())
            if stat.st_size == 0:
                raise BadInputError(f"{path} is empty")
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                skeleton = protowire.split(mapped)
    except OSError as err:
        raise BadInputError(f"cannot read {path}: {err.strerror}") from None
    except protowire.WireError as err:
        raise BadInputError(f"{path} is not an ONNX model (truncated or corrupt protobuf: {err})") from None
    model = onnx.ModelProto()
    try:
        model.ParseFromString(skeleton)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise BadInputError(f"{path} is not an ONNX model (truncated or corrupt protobuf: {err})") from None
    # Protobuf happily parses many random byte strings into an empty-looking message.
    if not model.HasField("graph") or model.ir_version <= 0 or not model.opset_import:
        raise BadInputError(f"{path} is not an ONNX model (no graph, IR version or opset)")
    if (where := _first_non_text_name(model.graph)) is not None:
        raise BadInputError(f"{path} is not an ONNX model (corrupt: a name in {where} is not UTF-8 text)")
    loaded = LoadedModel(path=path, model=model, stamp=_stamp(stat))
    loaded.external_files = _check_external_data(loaded)
    return loaded


def _first_non_text_name(graph: onnx.GraphProto, where: str = "the main graph") -> str | None:
    """ONNX declares names as proto2 strings, which are not checked on parsing: a corrupt byte comes back as
    `bytes`, and every name lookup after that would fail in a way the user cannot act on."""
    values = list(graph.input) + list(graph.output) + list(graph.value_info)
    names = [v.name for v in values] + [t.name for t in graph.initializer]
    for node in graph.node:
        names += [node.name, node.op_type, node.domain, *node.input, *node.output]
        for attr in node.attribute:
            names.append(attr.name)
            for subgraph in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                if (inner := _first_non_text_name(subgraph, f"a subgraph of node {node.name!r}")) is not None:
                    return inner
    return where if any(not isinstance(name, str) for name in names) else None


def _check_external_data(loaded: LoadedModel) -> list[str]:
    """Refuse absolute or escaping locations before any file outside the model's directory is even stat'ed."""
    base = loaded.directory.resolve()
    locations: dict[str, int] = {}
    for tensor in external_tensors(loaded.model):
        location = _external_location(tensor)
        if not location or os.path.isabs(location) or Path(location).drive:
            raise BadInputError(f"external data of {tensor.name!r} has an absolute or empty location {location!r}")
        if not (base / location).resolve().is_relative_to(base):
            raise BadInputError(f"external data of {tensor.name!r} points outside the model's directory: {location!r}")
        info = {e.key: e.value for e in tensor.external_data}
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        locations[location] = max(locations.get(location, 0), end)
    for location, needed in locations.items():
        data_path = base / location
        if not data_path.is_file():
            raise BadInputError(f"missing external data file {location!r} next to {loaded.path.name}")
        if data_path.stat().st_size < needed:
            raise BadInputError(f"external data file {location!r} is truncated ({data_path.stat().st_size} < {needed} bytes)")
    return sorted(locations)


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_location(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise BadInputError(f"output {out} is a directory")
    if not parent.is_dir():
        raise BadInputError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"output directory {parent} is not writable")


def _data_location_for(out: Path, index: int, count: int) -> str:
    return f"{out.name}_data" if count == 1 else f"{out.name}_data.{index}"


class staging_directory:
    """A hidden `.graphfix-NAME-*` directory in `parent` (same filesystem, so renames out of it are atomic), removed
    on the way out with whatever is still in it.

    A class, not a generator: a Ctrl-C raised in a @contextmanager's __enter__ after its generator has yielded
    leaves the generator's cleanup to the garbage collector, which at exit may never run it. Here __enter__ cleans
    up after itself, and from its return on the `with` block's own __exit__ is in force."""

    def __init__(self, parent: Path, name: str):
        self.parent, self.name = parent, name
        self.path: Path | None = None

    def __enter__(self) -> Path:
        try:
            with held_for_main_thread():
                self.path = Path(tempfile.mkdtemp(prefix=f".graphfix-{self.name}-", dir=self.parent))
        except BaseException:
            self.__exit__()
            raise
        return self.path

    def __exit__(self, *exc_info) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


def write_model(
    model: onnx.ModelProto | None,
    out: Path,
    source: LoadedModel,
    before_commit: Callable[[Path], None] | None = None,
    data_mode: str = "clone",
) -> Path:
    """Write `model` (a skeleton read from `source`, or when None a faithful byte copy of `source`) to `out` atomically.

    Payloads the skeleton left in `source` are copied from it range by range; external data is never parsed: each
    data file of the source is put beside `out` (`data_mode`: "clone" = reflink where the filesystem can, else an
    in-kernel copy keeping holes; "copy" = always copy; "link" = hardlink, which onnx >= 1.23 refuses to load) and
    the model's locations are pointed at it, relative. `before_commit(temp_model_path)` runs on the complete written
    files; if it raises, nothing is renamed into place.
    """
    if data_mode not in DATA_MODES:
        raise ValueError(f"data_mode must be one of {DATA_MODES}, not {data_mode!r}")
    out = Path(out)
    check_output_location(out)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        with staging_directory(parent, out.name) as workdir:
            staged_model = workdir / out.name
            renames: list[tuple[Path, Path]] = []
            locations = {loc: _data_location_for(out, i, len(source.external_files))
                         for i, loc in enumerate(source.external_files)}
            relocate = any(old != new for old, new in locations.items())
            if model is None and relocate:
                model = source.model  # unchanged skeleton; only the data file names move
            if model is None:
                copy_file(source.path, staged_model, data_mode)
            else:
                _write_spliced(_with_locations(model, locations), source, staged_model)
            for old, new in locations.items():
                copy_data_file(source.directory / old, workdir / new, data_mode)
                renames.append((workdir / new, parent / new))
            os.chmod(staged_model, source.path.stat().st_mode & 0o777)
            if before_commit is not None:
                before_commit(staged_model)
            renames.append((staged_model, out))
            with held_for_main_thread():  # a Ctrl-C never leaves new data files beside the old model
                for src, dst in renames:
                    os.replace(src, dst)
            return out
    except OSError as err:
        raise BadInputError(f"cannot write {out}: {err.strerror or err}") from None


def _write_spliced(model: onnx.ModelProto, source: LoadedModel, staged: Path) -> None:
    """The skeleton's bytes with each payload copied back from the source file, which must be the file we read."""
    pieces = protowire.join(model.SerializeToString())
    with open(source.path, "rb") as src:
        if any(isinstance(p, protowire.SourceRange) for p in pieces) and _stamp(os.fstat(src.fileno())) != source.stamp:
            raise BadInputError(f"{source.path} changed while it was being repaired; run again")
        write_pieces(pieces, src.fileno(), staged)


def _with_locations(model: onnx.ModelProto, locations: dict[str, str]) -> onnx.ModelProto:
    if all(old == new for old, new in locations.items()):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())  # a skeleton: kilobytes, and the caller's stays as is
    for tensor in external_tensors(model):
        _set_external_location(tensor, locations[_external_location(tensor)])
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
        if self.path.exists():
            raise BadInputError(f"backup {self.path} already exists; move it away first")
        temp = None
        try:
            with held_for_main_thread():
                fd, temp = tempfile.mkstemp(prefix=f".graphfix-{self.path.name}-", dir=self.source.parent)
                os.close(fd)
            shutil.copy2(self.source, temp)
            with held_for_main_thread():  # linked (never replacing a backup that appeared meanwhile) and recorded
                os.link(temp, self.path)
                self.made = True
                os.unlink(temp)
                temp = None
        except FileExistsError:
            raise BadInputError(f"backup {self.path} already exists; move it away first") from None
        except OSError as err:
            raise BadInputError(f"cannot write backup {self.path}: {err.strerror or err}") from None
        finally:
            if temp is not None:
                os.unlink(temp)
        return self.path

    def discard_if_unchanged(self) -> None:
        """After a failed repair: a backup identical to the input is debris that would block the next --in-place
        run; one that differs means the new model already landed, so it is kept."""
        if self.made and filecmp.cmp(self.source, self.path, shallow=False):
            self.path.unlink(missing_ok=True)
            self.made = False
