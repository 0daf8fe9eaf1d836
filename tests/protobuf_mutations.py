"""Mutations of ONNX files for fuzzing, at two levels.

Raw: bit flips, truncations, duplicated or removed byte spans; these mostly break the protobuf framing.
Structural: a field of any (nested) message removed, duplicated, swapped with a sibling, given another field number
of the same wire type, or a varint value replaced; the enclosing messages' lengths are re-encoded, so the file stays
well-framed protobuf and the mutation reaches graphfix's graph logic instead of its parser.

The wire walker descends only where the ONNX schema says a field is a message (graph, nodes, attributes, subgraphs,
value infos and their types), so weight payloads are never mistaken for messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

VARINT, I64, LEN, I32 = 0, 1, 2, 5

# message name -> {field number: message name of that length-delimited field}; fields not listed are leaves.
SCHEMA = {
    "Model": {7: "Graph", 8: "OperatorSetId", 14: "StringStringEntry"},
    "Graph": {1: "Node", 5: "Tensor", 11: "ValueInfo", 12: "ValueInfo", 13: "ValueInfo", 14: "TensorAnnotation"},
    "Node": {5: "Attribute"},
    "Attribute": {5: "Tensor", 6: "Graph", 10: "Tensor", 11: "Graph"},
    "Tensor": {13: "StringStringEntry"},
    "ValueInfo": {2: "Type"},
    "Type": {1: "TypeTensor"},
    "TypeTensor": {2: "Shape"},
    "Shape": {1: "Dim"},
    "Dim": {},
    "OperatorSetId": {},
    "StringStringEntry": {},
    "TensorAnnotation": {},
}


@dataclass(frozen=True)
class Field:
    number: int
    wire: int
    start: int  # the tag's first byte
    length_start: int  # LEN: first byte of the length varint; else == value_start
    value_start: int
    end: int
    parent: int  # index of the enclosing message field, -1 for the top-level message
    message: str | None  # schema name when this LEN field was descended into


class WireError(ValueError):
    pass


def read_varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("bad varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def walk(buf: bytes) -> list[Field]:
    fields: list[Field] = []

    def message(kind: str, pos: int, end: int, parent: int) -> None:
        while pos < end:
            start = pos
            key, pos = read_varint(buf, pos, end)
            number, wire = key >> 3, key & 7
            length_start = pos
            if wire == VARINT:
                _, pos = read_varint(buf, pos, end)
                value_start = start + len(varint(key))
            elif wire == I64:
                value_start, pos = pos, pos + 8
            elif wire == I32:
                value_start, pos = pos, pos + 4
            elif wire == LEN:
                size, value_start = read_varint(buf, pos, end)
                pos = value_start + size
            else:
                raise WireError(f"wire type {wire}")
            if pos > end:
                raise WireError("field runs past its message")
            child = SCHEMA[kind].get(number) if wire == LEN else None
            fields.append(Field(number, wire, start, length_start if wire == LEN else value_start, value_start, pos,
                                parent, child))
            if child is not None:
                message(child, value_start, pos, len(fields) - 1)

    message("Model", 0, len(buf), -1)
    return fields


@cache
def parsed(path: Path) -> tuple[bytes, tuple[Field, ...]]:
    data = Path(path).read_bytes()
    return data, tuple(walk(data))


def replace(buf: bytes, fields: tuple[Field, ...], parent: int, a: int, b: int, new: bytes) -> bytes:
    """Replace buf[a:b] (inside the message `parent`) with `new`, re-encoding the length of every enclosing field."""
    out = buf[:a] + new + buf[b:]
    delta = len(new) - (b - a)
    while parent != -1:
        field = fields[parent]
        size = field.end - field.value_start + delta
        old_prefix = field.value_start - field.length_start
        prefix = varint(size)
        out = out[:field.length_start] + prefix + out[field.value_start:]
        delta += len(prefix) - old_prefix
        parent = field.parent
    return out


def siblings(fields: tuple[Field, ...], index: int) -> list[int]:
    parent = fields[index].parent
    return [i for i, f in enumerate(fields) if f.parent == parent and i != index]


def tag(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


# --- external-data fields and the files they name (issue 14) ------------------------------------------------------
# Values an external-data entry is set to: escaping, absolute, NUL, overlong, empty, non-numeric or huge numbers;
# SECRET is replaced by the absolute path of a file outside the model's directory.
SECRET = "<secret>"
HOSTILE_LOCATIONS = [SECRET, "../secret.bin", "sub/../../secret.bin", "a\0b", "w" * 300, "", ".", "sub", "link-out",
                     "link-in", "pipe", "decoder_model_merged.onnx", "./decoder_model_merged.onnx_data", "missing"]
HOSTILE_NUMBERS = ["-1", "abc", "", "1e3", "99999999999999999999", str(1 << 62), "0", "8", " 8", "0x10"]
DATA_KEYS = ["location", "offset", "length", "checksum", "bogus"]


def set_external_entry(tensor, key: str, value: str | None) -> None:
    """Set (or with None remove) one external-data entry of an onnx TensorProto."""
    entries = [e for e in tensor.external_data if e.key == key]
    if value is None:
        for entry in entries:
            tensor.external_data.remove(entry)
        return
    entry = entries[0] if entries else tensor.external_data.add()
    entry.key, entry.value = key, value
