"""Reading a model: map the file and parse only its skeleton.

A repair costs about what copying the file costs. Every large weight payload stays in the file, marked by its byte
range (protowire.py), so a 2 GB model never becomes 2 GB of Python objects. External weight data is never parsed.

Every external-data file is resolved here, once: its location is checked (relative, no NUL, inside the model's
directory, with links resolved), the file is opened without following a last symlink and without blocking, and
the opened file itself is checked (a regular file, and its own path inside the directory). The writer copies
from that open descriptor, never from the name again, so a file swapped for a symlink to somewhere else after the
check cannot reach OUT. Model directories carry their other files through the same `open_inside`.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import stat as stat_module
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from ..errors import BadInputError, raise_if_exhausted
from ..model.graph import all_graphs, all_tensors
from . import onnx_proto as onnx
from . import portable, protowire

EXTERNAL = onnx.TensorProto.EXTERNAL


@dataclass
class OpenedFile:
    """A file inside a model's directory, opened once and checked as opened: read and copy it through `fd`."""

    fd: int
    real: Path  # the opened file's own resolved path (inside the directory)
    stat: os.stat_result

    @property
    def mode(self) -> int:
        return self.stat.st_mode & 0o777


@dataclass
class LoadedModel:
    path: Path
    model: onnx.ModelProto  # the skeleton: complete graph structure, large payloads left in the file
    external_files: list[str] = field(default_factory=list)  # locations as written in the model, relative
    stamp: tuple[int, int, int] = (0, 0, 0)  # (size, mtime_ns, inode) of path when read: payload ranges point here
    file: OpenedFile | None = None  # the model file as read, open until this is collected
    data: dict[str, OpenedFile] = field(default_factory=dict)  # location -> its data file, open as long

    @property
    def mode(self) -> int:
        """The model file's permission bits when read: every file written from it gets them."""
        return self.file.mode if self.file else 0o644

    @property
    def directory(self) -> Path:
        return self.path.parent


def external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Tensors whose data lives in an external-data file (not the payloads a skeleton left in the model file), in
    every place ONNX can hold a tensor (model.graph.all_tensors)."""
    return [t for t in all_tensors(model)
            if t.data_location == EXTERNAL and not protowire.is_payload_marker(_external_location(t))]


def shown(name: str, limit: int = 120) -> str:
    """repr(name), shortened: a hostile location may be kilobytes long."""
    text = repr(name)
    return text if len(text) <= limit else f"{text[:limit]}...'"


def trusted_roots(base: Path) -> list[Path]:
    """Where the files of the model directory `base` (resolved) may really live: inside it, and for a Hugging Face
    cache snapshot (`<cache>/models--org--name/snapshots/<revision>/...`, whose every file is a symlink into that
    repository's `blobs/`) in that repository's blobs as well, which is where the hub client puts them."""
    parts = base.parts
    for index in range(len(parts) - 2, 0, -1):
        if parts[index] == "snapshots" and parts[index - 1].startswith(("models--", "datasets--")):
            return [base, Path(*parts[:index]) / "blobs"]
    return [base]


def _inside(path: Path, base: Path) -> bool:
    roots = trusted_roots(base)
    if any(path == root or path.is_relative_to(root) for root in roots):
        return True
    # On a case-insensitive filesystem (macOS's default, Windows) the kernel may spell a directory otherwise than the
    # user did: then whether a directory on the way *is* a root is asked of the filesystem (device and inode).
    try:
        ids = {(info.st_dev, info.st_ino) for info in map(os.stat, roots)}
        return any((info.st_dev, info.st_ino) in ids for info in map(os.stat, path.parents))
    except OSError:
        return False


def open_inside(base: Path, relative: str, what: str, *, missing: str | None = None) -> OpenedFile:
    """Open `relative` under the directory `base` for reading, refusing (BadInputError, naming `what`) anything
    absolute, escaping `base` (through `..` or a symlink, checked before opening and again on the opened file), not
    a regular file (a FIFO is never waited on: opened non-blocking, refused by its fstat), or unreadable."""
    if "\0" in relative:
        raise BadInputError(f"{what} has a location with a NUL byte: {shown(relative)}")
    if not relative or os.path.isabs(relative) or Path(relative).drive:
        raise BadInputError(f"{what} has an absolute or empty location {shown(relative)}")
    base = base.resolve()
    real = Path(os.path.realpath(base / relative))
    if not _inside(real, base):
        raise BadInputError(f"{what} points outside the model's directory: {shown(relative)}")
    try:  # the resolved path, so a last component swapped for a symlink meanwhile fails (ELOOP) instead of leading out
        fd = portable.open_for_reading(real, nofollow=True)
    except FileNotFoundError:
        raise BadInputError(missing or f"{what}: no such file {shown(relative)}") from None
    except (portable.NotRegularFileError, IsADirectoryError):  # refused before opening where O_NONBLOCK is missing
        raise BadInputError(f"{what}: {shown(relative)} is not a regular file") from None
    except OSError as err:
        reason = "it changed into a symlink while being read" if err.errno == errno.ELOOP else err.strerror
        raise BadInputError(f"{what}: cannot open {shown(relative)}: {reason}") from None
    try:
        info = os.fstat(fd)
        if not stat_module.S_ISREG(info.st_mode):
            raise BadInputError(f"{what}: {shown(relative)} is not a regular file")
        opened = portable.opened_path(fd, real)
        if opened is None:
            raise BadInputError(f"{what}: {shown(relative)} was removed while being read")
        if not _inside(opened, base):
            raise BadInputError(f"{what} points outside the model's directory: {shown(relative)}")
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(fd=fd, real=opened, stat=info)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _external_location(tensor: onnx.TensorProto) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def _set_external_location(tensor: onnx.TensorProto, location: str) -> None:
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def read_model(path: str | os.PathLike) -> LoadedModel:
    """Parse the model's skeleton (no weight payloads, no external data); refuse anything that is not ONNX. The
    model file and its data files stay open in the result (`file`, `data`): the writer copies from those."""
    path = Path(path)
    try:
        fd = portable.open_for_reading(path)  # a FIFO: refused, not waited on
    except FileNotFoundError:
        raise BadInputError(f"no such file: {path}") from None
    except portable.NotRegularFileError:
        raise BadInputError(f"{path} is not a regular file") from None
    except OSError as err:
        raise_if_exhausted(err)
        if err.errno == errno.EISDIR:
            raise BadInputError(f"{path} is a directory; give the .onnx file") from None
        raise BadInputError(f"cannot read {path}: {err.strerror}") from None
    except ValueError:  # a NUL in the path
        raise BadInputError(f"no such file: {path}") from None
    fds = [fd]
    try:
        loaded = _parse(path, fd)
    except BaseException:
        os.close(fd)
        raise
    weakref.finalize(loaded, _close_all, fds)  # the files stay open exactly as long as the model is in use
    loaded.data = _open_external_data(loaded, fds)
    loaded.external_files = sorted(loaded.data)
    return loaded


def _parse(path: Path, fd: int) -> LoadedModel:
    try:
        info = os.fstat(fd)
        if stat_module.S_ISDIR(info.st_mode):
            raise BadInputError(f"{path} is a directory; give the .onnx file")
        if not stat_module.S_ISREG(info.st_mode):
            raise BadInputError(f"{path} is not a regular file")
        if info.st_size == 0:
            raise BadInputError(f"{path} is empty")
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
            skeleton = protowire.split(mapped)
    except OSError as err:
        raise_if_exhausted(err)
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
    opened = OpenedFile(fd=fd, real=path.resolve(), stat=info)
    return LoadedModel(path=path, model=model, stamp=_stamp(info), file=opened)


def _first_non_text_name(graph: onnx.GraphProto) -> str | None:
    """ONNX declares names as proto2 strings, which are not checked on parsing: a corrupt byte comes back as
    `bytes`, and every name lookup after that would fail in a way the user cannot act on."""
    for current, where in all_graphs(graph, "the main graph"):
        values = list(current.input) + list(current.output) + list(current.value_info)
        names = [v.name for v in values] + [t.name for t in current.initializer]
        for node in current.node:
            names += [node.name, node.op_type, node.domain, *node.input, *node.output]
            names += [attr.name for attr in node.attribute]
        if any(not isinstance(name, str) for name in names):
            return where
    return None


_DECIMAL = re.compile(r"[0-9]{1,20}")


def _open_external_data(loaded: LoadedModel, fds: list[int]) -> dict[str, OpenedFile]:
    """Each data file the model names, opened once through open_inside (refused before anything outside the
    model's directory is even stat'ed), long enough for every tensor's offset + length."""
    needed: dict[str, int] = {}
    names: dict[str, str] = {}
    for tensor in external_tensors(loaded.model):
        what = f"external data of {shown(tensor.name)}"
        location = _external_location(tensor)
        info = {e.key: e.value for e in tensor.external_data}
        for key in ("offset", "length"):
            if key in info and not _DECIMAL.fullmatch(info[key]):
                raise BadInputError(f"{what} has a bad {key} {shown(info[key])} (not a byte count)")
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        needed[location] = max(needed.get(location, 0), end)
        names.setdefault(location, what)
    opened: dict[str, OpenedFile] = {}
    for location, end in sorted(needed.items()):
        data = open_inside(loaded.directory, location, names[location],
                           missing=f"missing external data file {shown(location)} next to {loaded.path.name}")
        fds.append(data.fd)
        opened[location] = data
        if data.stat.st_size < end:
            raise BadInputError(f"external data file {shown(location)} is truncated "
                                f"({data.stat.st_size} < {end} bytes)")
    return opened
