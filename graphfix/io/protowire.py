"""Just enough of the protobuf wire format to split an ONNX model into its graph skeleton and its weight payloads.

A repair edits a few kilobytes of graph; the weights are most of the file and are never looked at. `split` walks
the serialized ModelProto (an mmap of the file) and cuts every large payload field out of its TensorProto
(raw_data and the typed data fields), leaving the tensor's other fields plus a marker saying where the payload
lives in the source file. Protobuf fields are independent, so a message minus some fields is still a valid
message: the skeleton parses with the ordinary `onnx.ModelProto` and the passes edit it as usual.

`join` is the inverse on the edited skeleton: each marked tensor gets its payload back as a byte range of the
source, and every enclosing message gets its new length. The result is a list of literal bytes and source ranges,
so the writer can copy the ranges file-to-file without the weights ever passing through Python.

The marker is an external-data entry with a location no file can have: to onnx's own Python helpers (shape
inference, numpy_helper) the stripped tensor honestly says "my data is elsewhere", never a wrong value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import mmap

    from . import onnx_proto as onnx

# Field numbers from onnx.proto; only the messages on the path from ModelProto to a TensorProto matter.
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR = range(5)
_CHILDREN = {
    _MODEL: {7: _GRAPH},                                    # ModelProto.graph
    _GRAPH: {1: _NODE, 5: _TENSOR},                         # GraphProto.node, .initializer
    _NODE: {5: _ATTRIBUTE},                                 # NodeProto.attribute
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH},  # AttributeProto.t, .g, .tensors, .graphs
    _TENSOR: {},
}
# TensorProto float_data, int32_data, string_data, int64_data, raw_data, double_data, uint64_data.
_PAYLOAD_FIELDS = frozenset({4, 5, 6, 7, 9, 10, 11})
_EXTERNAL_DATA, _DATA_LOCATION = 13, 14
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

PAYLOAD_LOCATION = "\x00graphfix-payload"  # a NUL cannot be in a file name, so no real location collides
_RANGES_KEY = "graphfix_source_ranges"
# Deeper than protobuf itself parses (its limit is 100 nested messages): refused here, before Python's recursion
# limit is, so a model nested 400 Ifs deep is "not an ONNX model", not a crash.
MAX_DEPTH = 100
STRIP_AT = 1024  # payloads smaller than this stay in the skeleton: shape constants that passes read are tiny


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class SourceRange:
    """Bytes [start, end) of the source file, copied verbatim into the output."""
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


Piece = Union[bytes, SourceRange]
Buffer = Union[bytes, "mmap.mmap"]  # the model file, mapped; or the serialized skeleton
OnTensor = Callable[[Buffer, int, int], "list[Piece] | None"]
Descend = Callable[[Buffer, int, int], bool]


def _varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def fields(buf: Buffer, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(number, wire type, field start, value start, value end) of every field in buf[start:end]."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {field_start}")
        if wire == _VARINT:
            value_start = pos
            _, pos = _varint(buf, pos, end)
        elif wire == _LEN:
            length, value_start = _varint(buf, pos, end)
            pos = value_start + length
        elif wire == _I64:
            value_start, pos = pos, pos + 8
        elif wire == _I32:
            value_start, pos = pos, pos + 4
        else:  # groups (3, 4) are not used by onnx.proto; 6 and 7 do not exist
            raise WireError(f"unsupported wire type {wire} at byte {field_start}")
        if pos > end:
            raise WireError(f"field {number} at byte {field_start} runs past the end of its message")
        yield number, wire, field_start, value_start, pos


def _len_field(number: int, pieces: list[Piece]) -> list[Piece]:
    size = sum(len(p) for p in pieces)
    return [encode_varint(number << 3 | _LEN) + encode_varint(size), *pieces]


def _literal(pieces: list[Piece]) -> bytes:
    return b"".join(p for p in pieces if isinstance(p, bytes))  # only called on pieces that are all bytes


def _string_entry(key: str, value: str) -> bytes:
    entry = _literal(_len_field(1, [key.encode()]) + _len_field(2, [value.encode()]))
    return _literal(_len_field(_EXTERNAL_DATA, [entry]))


def _rewrite(buf: Buffer, start: int, end: int, kind: int, on_tensor: OnTensor,
             descend: Descend, depth: int = 0) -> list[Piece] | None:
    """buf[start:end] with each TensorProto below it replaced by on_tensor's pieces; None when nothing changed."""
    if depth > MAX_DEPTH:
        raise WireError(f"messages nested more than {MAX_DEPTH} deep")
    if kind == _TENSOR:
        return on_tensor(buf, start, end)
    children = _CHILDREN[kind]
    out: list[Piece] = []
    changed, kept_from = False, start
    for number, wire, field_start, value_start, value_end in fields(buf, start, end):
        child = children.get(number) if wire == _LEN else None
        if child is None or not descend(buf, value_start, value_end):
            continue
        pieces = _rewrite(buf, value_start, value_end, child, on_tensor, descend, depth + 1)
        if pieces is None:
            continue
        if kept_from < field_start:
            out.append(bytes(buf[kept_from:field_start]))
        out.extend(_len_field(number, pieces))
        changed, kept_from = True, value_end
    if not changed:
        return None
    if kept_from < end:
        out.append(bytes(buf[kept_from:end]))
    return out


def _strip_payload(buf: Buffer, start: int, end: int) -> list[Piece] | None:
    kept: list[bytes] = []
    payload: list[list[int]] = []
    for number, _, field_start, _, value_end in fields(buf, start, end):
        if number in (_EXTERNAL_DATA, _DATA_LOCATION):
            if bytes(buf[start:end]).find(PAYLOAD_LOCATION.encode()) != -1:
                raise WireError("a tensor claims graphfix's own payload marker as its location")
            return None  # already external (or claims to be): nothing of ours to strip
        if number in _PAYLOAD_FIELDS:
            if payload and payload[-1][1] == field_start:
                payload[-1][1] = value_end  # repeated string_data: one range for the run
            else:
                payload.append([field_start, value_end])
        else:
            kept.append(bytes(buf[field_start:value_end]))
    if sum(e - s for s, e in payload) < STRIP_AT:
        return None
    ranges = ",".join(f"{s}:{e}" for s, e in payload)
    marker = _string_entry("location", PAYLOAD_LOCATION) + _string_entry(_RANGES_KEY, ranges)
    return [*kept, marker, encode_varint(_DATA_LOCATION << 3 | _VARINT) + b"\x01"]


def split(buf: Buffer) -> bytes:
    """The skeleton of the serialized ModelProto `buf`: every payload of at least STRIP_AT bytes replaced by a marker
    holding its byte ranges in `buf`. Raises WireError on malformed bytes."""
    pieces = _rewrite(buf, 0, len(buf), _MODEL, _strip_payload, lambda _b, s, e: e - s >= STRIP_AT)
    return bytes(buf) if pieces is None else _literal(pieces)  # stripping leaves no source ranges


def _marked_ranges(buf: Buffer, start: int, end: int) -> list[SourceRange] | None:
    for number, _, _, value_start, value_end in fields(buf, start, end):
        if number != _EXTERNAL_DATA:
            continue
        entry: dict[int, str] = {}
        for key_number, _, _, s, e in fields(buf, value_start, value_end):
            entry[key_number] = bytes(buf[s:e]).decode()
        if entry.get(1) == _RANGES_KEY:
            return [SourceRange(int(s), int(e)) for s, e in (r.split(":") for r in entry[2].split(","))]
    return None


def _restore_payload(buf: Buffer, start: int, end: int) -> list[Piece] | None:
    ranges = _marked_ranges(buf, start, end)
    if ranges is None:
        return None
    kept = [bytes(buf[fs:ve]) for number, _, fs, _, ve in fields(buf, start, end)
            if number not in (_EXTERNAL_DATA, _DATA_LOCATION)]
    return [*kept, *ranges]


def join(skeleton: bytes) -> list[Piece]:
    """The serialized model with every marked payload put back, as literal bytes and ranges of the source."""
    marker = PAYLOAD_LOCATION.encode()
    pieces = _rewrite(skeleton, 0, len(skeleton), _MODEL, _restore_payload,
                      lambda b, s, e: b.find(marker, s, e) != -1)
    return [skeleton] if pieces is None else pieces


def is_payload_marker(location: str) -> bool:
    return location == PAYLOAD_LOCATION


def payload_ranges(tensor: onnx.TensorProto) -> list[SourceRange] | None:
    """The byte ranges of the source file holding a skeleton tensor's payload (whole protobuf fields: tag, length
    and value); None for a tensor whose payload is in the skeleton or in external data."""
    entries = {e.key: e.value for e in tensor.external_data}
    if entries.get("location") != PAYLOAD_LOCATION or _RANGES_KEY not in entries:
        return None
    return [SourceRange(int(s), int(e)) for s, e in (r.split(":") for r in entries[_RANGES_KEY].split(","))]


def marker_ranges(skeleton: bytes) -> Iterator[tuple[int, int] | None]:
    """The (start, end) byte ranges every payload marker of `skeleton` names, read off its bytes without parsing
    them (a content key is made before the parse); None for a span that is not `start:end` (text that only looks
    like a marker)."""
    needle = _RANGES_KEY.encode() + encode_varint(2 << 3 | _LEN)  # the entry's value: field 2 of StringStringEntry
    pos = skeleton.find(needle)
    while pos != -1:
        try:
            length, start = _varint(skeleton, pos + len(needle), len(skeleton))
        except WireError:
            return
        for span in skeleton[start:start + length].split(b","):
            first, _, last = span.partition(b":")
            yield (int(first), int(last)) if first.isdigit() and last.isdigit() else None
        pos = skeleton.find(needle, pos + len(needle))


def move_payload(tensor: onnx.TensorProto, by: int) -> None:
    """Shift a skeleton tensor's payload ranges by `by` bytes: its source is now read at that offset of several
    files joined (a merged model's two sources, see datacopy.write_pieces_from)."""
    for entry in tensor.external_data:
        if entry.key == _RANGES_KEY:
            entry.value = ",".join(f"{r.start + by}:{r.end + by}" for r in payload_ranges(tensor) or [])


def payload_value(buf: Buffer, field: SourceRange) -> tuple[int, SourceRange]:
    """The field number and value bytes of one payload field (a length-delimited one: raw_data or a packed repeated
    field) at `field` of `buf`."""
    for number, wire, _, value_start, value_end in fields(buf, field.start, field.end):
        if wire != _LEN or value_end != field.end:
            break
        return number, SourceRange(value_start, value_end)
    raise WireError(f"bytes {field.start}:{field.end} are not one length-delimited field")
