"""Reading a model: map the file and parse only its skeleton.

A repair costs about what copying the file costs. Every large weight payload stays in the file, marked by its byte
range (protowire.py), so a 2 GB model never becomes 2 GB of Python objects. External weight data is never parsed.

Every external-data file is opened here, once (external_data.py, through path_safety.open_inside), and stays open
with the model: the writer copies from those descriptors, never from the names again.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat as stat_module
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from ..errors import BadInputError, raise_if_exhausted
from ..model.graph import all_graphs
from . import onnx_proto as onnx
from . import portable, protowire
from .external_data import open_external_data
from .path_safety import OpenedFile


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


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def file_stamp(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


@dataclass
class Skeleton:
    """A model file opened and split (protowire.split), not parsed yet: `data` is the skeleton's bytes, what a
    content key is made of (proof/load_verdicts.py). The file stays open until this, or the LoadedModel parsed from
    it, is collected."""

    path: Path
    fd: int
    info: os.stat_result
    data: bytes
    fds: list[int] = field(default_factory=list)  # every descriptor opened for it: closed with it
    closer: weakref.finalize | None = field(default=None, repr=False)  # type: ignore[type-arg]


def read_model(path: str | os.PathLike[str]) -> LoadedModel:
    """Parse the model's skeleton (no weight payloads, no external data); refuse anything that is not ONNX. The
    model file and its data files stay open in the result (`file`, `data`): the writer copies from those."""
    return parse_skeleton(read_skeleton(path))


def read_skeleton(path: str | os.PathLike[str]) -> Skeleton:
    """Open the model file and split off its skeleton (read_model's first half); refuse what is not a file or not a
    protobuf."""
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
    try:
        info, data = _split(path, fd)
    except BaseException:
        os.close(fd)
        raise
    skeleton = Skeleton(path=path, fd=fd, info=info, data=data, fds=[fd])
    skeleton.closer = weakref.finalize(skeleton, _close_all, skeleton.fds)
    return skeleton


def parse_skeleton(skeleton: Skeleton) -> LoadedModel:
    """read_model's second half: parse `skeleton` and open its external-data files."""
    try:
        loaded = _parse(skeleton)
    except BaseException:
        if skeleton.closer is not None:
            skeleton.closer()  # closed now, not when the traceback lets go of it
        raise
    if skeleton.closer is not None:
        skeleton.closer.detach()  # the model owns the files now
    weakref.finalize(loaded, _close_all, skeleton.fds)  # open exactly as long as the model is in use
    loaded.data = open_external_data(loaded.model, loaded.path, skeleton.fds)
    loaded.external_files = sorted(loaded.data)
    return loaded


def _split(path: Path, fd: int) -> tuple[os.stat_result, bytes]:
    try:
        info = os.fstat(fd)
        if stat_module.S_ISDIR(info.st_mode):
            raise BadInputError(f"{path} is a directory; give the .onnx file")
        if not stat_module.S_ISREG(info.st_mode):
            raise BadInputError(f"{path} is not a regular file")
        if info.st_size == 0:
            raise BadInputError(f"{path} is empty")
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
            return info, protowire.split(mapped)
    except OSError as err:
        raise_if_exhausted(err)
        raise BadInputError(f"cannot read {path}: {err.strerror}") from None
    except protowire.WireError as err:
        raise BadInputError(f"{path} is not an ONNX model (truncated or corrupt protobuf: {err}); copy or export it "
                            "again") from None


def _parse(skeleton: Skeleton) -> LoadedModel:
    path = skeleton.path
    model = onnx.ModelProto()
    try:
        model.ParseFromString(skeleton.data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise BadInputError(f"{path} is not an ONNX model (truncated or corrupt protobuf: {err}); copy or export it "
                            "again") from None
    # Protobuf happily parses many random byte strings into an empty-looking message.
    if not model.HasField("graph") or model.ir_version <= 0 or not model.opset_import:
        raise BadInputError(f"{path} is not an ONNX model (no graph, IR version or opset)")
    if (where := _first_non_text_name(model.graph)) is not None:
        raise BadInputError(f"{path} is not an ONNX model (corrupt: a name in {where} is not UTF-8 text)")
    opened = OpenedFile(fd=skeleton.fd, real=path.resolve(), stat=skeleton.info)
    return LoadedModel(path=path, model=model, stamp=file_stamp(skeleton.info), file=opened)


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


