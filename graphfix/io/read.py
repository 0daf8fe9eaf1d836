"""Reading a model: map the file and parse only its skeleton.

A repair costs about what copying the file costs. Every large weight payload stays in the file, marked by its byte
range (protowire.py), so a 2 GB model never becomes 2 GB of Python objects. External weight data is never read at
all, and unsafe external-data locations are refused before anything touches them.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from ..errors import BadInputError
from ..model.graph import all_graphs, all_tensors
from . import onnx_proto as onnx
from . import protowire

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


def external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Tensors whose data lives in an external-data file (not the payloads a skeleton left in the model file)."""
    return [t for t in all_tensors(model.graph)
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
            raise BadInputError(f"external data file {location!r} is truncated "
                                f"({data_path.stat().st_size} < {needed} bytes)")
    return sorted(locations)


