"""Writing a merged decoder whose weights come from two files (model/decoder_pair.py), with no weight passing
through Python: the payloads are copied range by range from the two decoders' files (and their external data), as
the writer does for one source (write.py).

The file is a single .onnx when it fits protobuf's 2 GB; above that (or when either decoder already keeps its weights
in external data) every weight goes to one `<name>_data` file beside it, the layout Optimum's own merge writes with
onnx's `save_as_external_data(all_tensors_to_one_file=True)`. The result is a new, unproven file in a directory the
caller owns (a staging directory): the repair pipeline reads it, repairs, proves and lands it like any merged decoder.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..errors import BadInputError
from ..model.decoder_pair import MergedPair, merge_pair
from ..model.graph import all_tensors
from . import onnx_proto as onnx
from . import protowire
from .datacopy import write_pieces_from
from .external_data import EXTERNAL, external_location
from .portable import read_at
from .read import LoadedModel

# protobuf refuses to serialize a message of 2 GB or more; the skeleton and the headers need a little of it.
INLINE_LIMIT = 2**31 - 2**24
_CHUNK = 1 << 20
# Payload fields whose value bytes are the tensor's raw little-endian data: raw_data, and packed float / double.
_RAW_FIELDS = {9: None, 4: onnx.TensorProto.FLOAT, 10: onnx.TensorProto.DOUBLE}


class _Sources:
    """The files a merged model's payloads are read from, mapped, as one concatenation: the two model files first
    (so that the decoder's payload ranges stay as they are), then each one's external data files."""

    def __init__(self, loaded: list[LoadedModel], stack: ExitStack):
        self.loaded = loaded
        self.files: list[tuple[int, int]] = []  # (descriptor, size), in concatenation order
        self.maps: list[mmap.mmap | None] = []
        self.base: dict[tuple[int, str], int] = {}  # (source index, "" or data location) -> offset of its start
        for index, source in enumerate(loaded):
            assert source.file is not None, "a LoadedModel from read_model"
            self._add(index, "", source.file.fd, source.file.stat.st_size, stack)
        for index, source in enumerate(loaded):
            for location, data in sorted(source.data.items()):
                self._add(index, location, data.fd, data.stat.st_size, stack)

    def _add(self, index: int, location: str, fd: int, size: int, stack: ExitStack) -> None:
        self.base[(index, location)] = sum(s for _, s in self.files)
        self.files.append((fd, size))
        self.maps.append(stack.enter_context(mmap.mmap(fd, 0, access=mmap.ACCESS_READ)) if size else None)

    def buffer(self, index: int, location: str = "") -> mmap.mmap:
        mapped = self.maps[self._slot(index, location)]
        assert mapped is not None, "payload ranges point into a non-empty file"
        return mapped

    def raw(self, index: int, tensor: onnx.TensorProto) -> protowire.SourceRange | None:
        """Where `tensor`'s raw bytes are, in the concatenation; None when its payload is in the skeleton."""
        if (ranges := protowire.payload_ranges(tensor)) is not None:
            number, value = protowire.payload_value(self.buffer(index), ranges[0])
            if len(ranges) != 1 or number not in _RAW_FIELDS or _RAW_FIELDS[number] not in (None, tensor.data_type):
                raise BadInputError(f"cannot write {tensor.name!r} to external data: its values are not stored as "
                                    "raw bytes")
            base = self.base[(index, "")]
            return protowire.SourceRange(base + value.start, base + value.end)
        if tensor.data_location == EXTERNAL:
            entries = {e.key: e.value for e in tensor.external_data}
            offset, base = int(entries.get("offset", 0)), self.base[(index, external_location(tensor))]
            return protowire.SourceRange(base + offset, base + offset + int(entries["length"]))
        return None

    def digest(self, index: int, tensor: onnx.TensorProto) -> bytes:
        """A digest of `tensor`'s payload, read in chunks from wherever it lives."""
        hashed = hashlib.sha256()
        ranges = protowire.payload_ranges(tensor)
        if ranges is None and tensor.data_location != EXTERNAL:
            bare = onnx.TensorProto()
            bare.CopyFrom(tensor)
            bare.name, bare.doc_string = "", ""
            hashed.update(b"inline" + bare.SerializeToString())
            return hashed.digest()
        if ranges is not None:
            fd, spans = self.files[self._slot(index, "")][0], ranges
            hashed.update(b"field")  # the field as written: raw_data and float_data of equal values differ here
        else:
            location = external_location(tensor)
            found = self.raw(index, tensor)
            assert found is not None
            base = self.base[(index, location)]
            fd, spans = self.files[self._slot(index, location)][0], [protowire.SourceRange(found.start - base,
                                                                                             found.end - base)]
        # Read in chunks (not through the mapping, whose pages would all count as this process's memory).
        for span in spans:
            for start in range(span.start, span.end, _CHUNK):
                hashed.update(read_at(fd, min(span.end - start, _CHUNK), start))
        return hashed.digest()

    def _slot(self, index: int, location: str) -> int:
        return list(self.base).index((index, location))


@contextmanager
def _opened(loaded: list[LoadedModel]) -> Iterator[_Sources]:
    with ExitStack() as stack:
        yield _Sources(loaded, stack)


def _payload_size(model: onnx.ModelProto, sources: _Sources, origin: dict[str, int]) -> int:
    total = 0
    for tensor in model.graph.initializer:
        found = sources.raw(origin[tensor.name], tensor)
        total += len(found) if found is not None else 0
    return total


def _tensors_by_source(pair: MergedPair) -> Iterator[tuple[int, onnx.TensorProto]]:
    """Every tensor of the merged model with the index of the file its payload is in: an outer weight by its
    origin, the tensors inside a branch by the branch (then: with past, 1; else: the decoder, 0)."""
    yield from ((pair.origin[t.name], t) for t in pair.model.graph.initializer)
    for attr in pair.model.graph.node[0].attribute:
        yield from ((1 if attr.name == "then_branch" else 0, t) for t in all_tensors(attr.g))


def write_merged_pair(decoder: LoadedModel, with_past: LoadedModel, out: Path,
                      inline_limit: int = INLINE_LIMIT) -> MergedPair:
    """Merge the pair and write the merged decoder to the new file `out` (in a directory the caller removes), in
    one file or, above `inline_limit` bytes of weights or when either decoder has external data, with all weights
    in `<out name>_data`. Returns the merge (its model as written)."""
    loaded = [decoder, with_past]
    with _opened(loaded) as sources:
        pair = merge_pair(decoder.model, with_past.model, sources.digest)
        functions = onnx.ModelProto(functions=pair.model.functions)  # all_tensors walks a model's functions
        if any(protowire.payload_ranges(t) is not None for t in all_tensors(functions)):
            raise BadInputError(f"cannot merge {decoder.path.name} and {with_past.path.name}: a model-local "
                                "function holds a tensor of 1 KB or more, which graphfix does not carry over")
        external = any(source.data for source in loaded) or \
            _payload_size(pair.model, sources, pair.origin) > inline_limit
        if external:
            _write_external(pair, sources, out)
        else:
            _write_inline(pair, sources, out)
    for written in (out, out.with_name(f"{out.name}_data")):  # the decoder's permission bits, as any output's
        if written.exists():
            os.chmod(written, decoder.mode)
    return pair


def _write_inline(pair: MergedPair, sources: _Sources, out: Path) -> None:
    for index, tensor in list(_tensors_by_source(pair)):
        if index and protowire.payload_ranges(tensor) is not None:
            protowire.move_payload(tensor, sources.base[(index, "")])
    pieces = protowire.join(pair.model.SerializeToString())
    write_pieces_from(pieces, sources.files, out, mode=0o600)


def _write_external(pair: MergedPair, sources: _Sources, out: Path) -> None:
    location, offset = f"{out.name}_data", 0
    data: list[protowire.Piece] = []
    for index, tensor in list(_tensors_by_source(pair)):
        found = sources.raw(index, tensor)
        if found is None:
            continue
        del tensor.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(found)))):
            tensor.external_data.add(key=key, value=value)
        tensor.data_location = EXTERNAL
        data.append(found)
        offset += len(found)
    write_pieces_from(data, sources.files, out.with_name(location), mode=0o600)
    out.write_bytes(pair.model.SerializeToString())


__all__ = ["INLINE_LIMIT", "write_merged_pair"]
