"""External data: the tensors whose bytes live in files beside the model, where those files are, and opening them.

External weight data is never parsed: the reader opens each data file once (through path_safety.open_inside) and
checks it is long enough for every tensor that points into it; the writer copies from those open descriptors and
points each tensor at the copy beside the output.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import BadInputError
from ..model.graph import all_tensors
from . import onnx_proto as onnx
from . import protowire
from .path_safety import OpenedFile, open_inside, shown

EXTERNAL = onnx.TensorProto.EXTERNAL


def external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Tensors whose data lives in an external-data file (not the payloads a skeleton left in the model file), in
    every place ONNX can hold a tensor (model.graph.all_tensors)."""
    return [t for t in all_tensors(model)
            if t.data_location == EXTERNAL and not protowire.is_payload_marker(external_location(t))]


def external_location(tensor: onnx.TensorProto) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def set_external_location(tensor: onnx.TensorProto, location: str) -> None:
    for entry in tensor.external_data:
        if entry.key == "location":
            entry.value = location


_DECIMAL = re.compile(r"[0-9]{1,20}")


def open_external_data(model: onnx.ModelProto, model_path: Path, fds: list[int]) -> dict[str, OpenedFile]:
    """Each data file the model names, opened once through open_inside (refused before anything outside the
    model's directory is even stat'ed), long enough for every tensor's offset + length. Each descriptor is also
    appended to `fds` as soon as it is open, so that the caller closes it whatever happens next."""
    return open_needed(external_needs(model), model_path, fds)


def external_needs(model: onnx.ModelProto) -> dict[str, tuple[int, str]]:
    """location -> (the bytes its tensors need it to hold, what the first of them is called in an error)."""
    needed: dict[str, int] = {}
    names: dict[str, str] = {}
    for tensor in external_tensors(model):
        what = f"external data of {shown(tensor.name)}"
        location = external_location(tensor)
        info = {e.key: e.value for e in tensor.external_data}
        for key in ("offset", "length"):
            if key in info and not _DECIMAL.fullmatch(info[key]):
                raise BadInputError(f"{what} has a bad {key} {shown(info[key])} (not a byte count)")
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        needed[location] = max(needed.get(location, 0), end)
        names.setdefault(location, what)
    return {location: (end, names[location]) for location, end in needed.items()}


def open_needed(needs: dict[str, tuple[int, str]], model_path: Path, fds: list[int]) -> dict[str, OpenedFile]:
    """open_external_data's second half, on external_needs' answer (also as remembered by a check: the files
    are opened and measured on every run)."""
    opened: dict[str, OpenedFile] = {}
    for location, (end, what) in sorted(needs.items()):
        data = open_inside(model_path.parent, location, what,
                           missing=f"missing external data file {shown(location)} next to {model_path.name}")
        fds.append(data.fd)
        opened[location] = data
        if data.stat.st_size < end:
            raise BadInputError(f"external data file {shown(location)} is truncated "
                                f"({data.stat.st_size} < {end} bytes)")
    return opened
