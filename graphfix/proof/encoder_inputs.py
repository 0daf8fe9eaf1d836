"""What an export's encoder takes, from what the export says: the sizes a proof feeds it.

Optimum leaves every dimension of an encoder's inputs but the batch unnamed-and-symbolic (`num_channels`, `height`,
`width`, `feature_size`), so the signature alone cannot say that a ViT wants 3 x 32 x 32 pixels or Whisper 80 mel
bins over 3000 frames. The export says it elsewhere: the encoder's `config.json` (`num_channels`, `image_size`,
`patch_size`; a VisionEncoderDecoder's `encoder` sub-config; `num_mel_bins`, `input_feat_size`,
`max_source_positions`), `preprocessor_config.json` (`size`, `feature_size`), and the graph itself (the first
convolution's weight is [out, in / group, kernel...]; the embedding table behind `input_ids` has one row per token).
A dimension nothing speaks for is refused, naming the input and the dimension.

Runs on the host, on the skeleton read_model already holds (no weight is read); the client loop in the target
onnxruntime gets plain numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ..io import onnx_proto as onnx
from ..model.graph import attribute
from .cases import SOURCE, Dim, EncoderFeeds

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
_CONFIGS = ("config.json", "preprocessor_config.json")


def export_config(encoder_path: Path) -> dict[str, Any]:
    """config.json and preprocessor_config.json beside the encoder or, from onnx/ (where onnx-community keeps the
    ONNX files), one folder up, merged: a VisionEncoderDecoder's `encoder` sub-config first, as it describes the
    encoder."""
    merged: dict[str, Any] = {}
    # One folder up only from onnx/: above an Optimum export sits whatever folder the user keeps exports in.
    folders = [encoder_path.parent] + ([encoder_path.parent.parent] if encoder_path.parent.name == "onnx" else [])
    for folder in folders:
        for name in _CONFIGS:
            for key, value in _read_json(folder / name).items():
                merged.setdefault(key, value)
    encoder = merged.get("encoder")
    return {**merged, **encoder} if isinstance(encoder, dict) else merged


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent or not JSON: that file says nothing
        return {}
    return value if isinstance(value, dict) else {}


def _declared(value: onnx.ValueInfoProto) -> list[int | str]:
    """Dims after the batch: the static ones as ints, symbolic ones by name ("" when unnamed)."""
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in list(dims)[1:]]


def _consumers(graph: onnx.GraphProto, name: str) -> Iterator[onnx.NodeProto]:
    return (node for node in graph.node if name in node.input)


def first_conv_weight(graph: onnx.GraphProto, name: str) -> tuple[list[int], int] | None:
    """(weight dims, group) of the first Conv `name` reaches through single-input reshuffles (Swin pads the image
    first, Speech2Text transposes its features), or None."""
    weights = {t.name: list(t.dims) for t in graph.initializer}
    todo, seen = [name], set()
    while todo:
        tensor = todo.pop(0)
        for node in _consumers(graph, tensor):
            if node.op_type == "Conv" and node.input[0] == tensor and node.input[1] in weights:
                group = attribute(node, "group")
                return weights[node.input[1]], group.i if group is not None else 1
            if node.op_type in ("Pad", "Cast", "Transpose", "Reshape", "Unsqueeze", "Identity") and \
                    node.input[0] == tensor and node.output[0] not in seen:
                seen.add(node.output[0])
                todo.append(node.output[0])
    return None


def _pair(value: Any) -> tuple[int, int] | None:
    """An image size as configs write it: 224, [224, 224], {"height": 224, "width": 224}, {"shortest_edge": 224}."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return value[0], value[1]
    if isinstance(value, Mapping):
        if isinstance(value.get("height"), int) and isinstance(value.get("width"), int):
            return value["height"], value["width"]
        if isinstance(value.get("shortest_edge"), int):
            return value["shortest_edge"], value["shortest_edge"]
    return None


def _image(name: str, declared: list[int | str], config: Mapping[str, Any],
           conv: tuple[list[int], int] | None) -> tuple[list[Dim], str]:
    """[channels, height, width] of pixel values."""
    channels, side = declared[0], declared[1:3]
    said: list[str] = []
    if not isinstance(channels, int):
        if isinstance(config.get("num_channels"), int):
            channels, said = config["num_channels"], said + ["config num_channels"]
        elif conv is not None:
            channels, said = conv[0][1] * conv[1], said + ["the first Conv's weight"]
        else:
            raise BadInputError(f"cannot tell how many channels input {name!r} of the encoder takes: no "
                                "num_channels in config.json and no Conv reads it")
    if not all(isinstance(d, int) for d in side):
        size = _pair(config.get("size")) or _pair(config.get("image_size"))
        said.append("preprocessor size" if _pair(config.get("size")) else "config image_size")
        if size is None:
            raise BadInputError(f"cannot tell the image size input {name!r} of the encoder takes: no image_size in "
                                "config.json and no size in preprocessor_config.json beside it")
        side = [d if isinstance(d, int) else s for d, s in zip(side, size)]
    return [channels, *side], ", ".join(said) or "the signature"


def _features(name: str, declared: list[int | str], config: Mapping[str, Any],
              conv: tuple[list[int], int] | None) -> tuple[list[Dim], str]:
    """[features, frames] or [frames, features] of audio features, as the signature orders them: the dim named for a
    length is the frames, the other the feature size."""
    said = []
    features: int | None = next((config[k] for k in ("num_mel_bins", "feature_size", "input_feat_size")
                                 if isinstance(config.get(k), int)), None)
    if features is not None:
        said.append("config's feature size")
    elif conv is not None:
        features, said = conv[0][1] * conv[1], ["the first Conv's weight"]
    # Whisper's encoder takes exactly its 30 s window: two frames per position, its convolutions halve them.
    frames: Dim = 2 * config["max_source_positions"] if "num_mel_bins" in config and \
        isinstance(config.get("max_source_positions"), int) else SOURCE
    dims: list[Dim] = []
    for dim in declared:
        if isinstance(dim, int):
            dims.append(dim)
        elif "length" in dim or "sequence" in dim or "frames" in dim:
            dims.append(frames)
        elif features is not None:
            dims.append(features)
        else:
            raise BadInputError(f"cannot tell the feature size of input {name!r} of the encoder: no num_mel_bins "
                                "or input_feat_size in config.json and no Conv reads it")
    return dims, ", ".join(said) or "the signature"


def _embedding_rows(graph: onnx.GraphProto) -> int | None:
    """Rows of the table `input_ids` is gathered from: the encoder's vocabulary, which may not be the decoder's."""
    weights: dict[str, list[int]] = {t.name: list(t.dims) for t in graph.initializer}
    for node in _consumers(graph, "input_ids"):
        if node.op_type == "Gather" and node.input[0] in weights and len(weights[node.input[0]]) == 2:
            return weights[node.input[0]][0]
    return None


def encoder_feeds(model: onnx.ModelProto, path: Path) -> EncoderFeeds:
    """The sizes of every float input of the encoder at `path` (its skeleton `model`), and its vocabulary."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    config = export_config(path)
    shapes: dict[str, list[Dim]] = {}
    said_by: dict[str, str] = {}
    for value in graph.input:
        if value.name in initializers or value.type.tensor_type.elem_type not in _FLOATS:
            continue
        declared = _declared(value)
        conv = first_conv_weight(graph, value.name)
        if all(isinstance(d, int) for d in declared):
            shapes[value.name], said_by[value.name] = list(declared), "the signature"
        elif len(declared) == 3:
            shapes[value.name], said_by[value.name] = _image(value.name, declared, config, conv)
        elif len(declared) == 2 and (conv is not None or value.name == "input_features"):
            shapes[value.name], said_by[value.name] = _features(value.name, declared, config, conv)
        else:
            dims = [d if isinstance(d, int) else SOURCE for d in declared]
            if sum(d == SOURCE for d in dims) > 1:
                raise BadInputError(f"cannot tell what input {value.name!r} of the encoder holds: "
                                    f"{len(declared) + 1} dims, {sum(d == SOURCE for d in dims)} of them unsized")
            shapes[value.name], said_by[value.name] = dims, "the signature"
    vocab = _embedding_rows(graph) if any(v.name == "input_ids" for v in graph.input) else None
    if vocab is None and isinstance(config.get("vocab_size"), int):
        vocab = config["vocab_size"]
    return EncoderFeeds(shapes=shapes, vocab=vocab, said_by=said_by)


__all__ = ["SOURCE", "EncoderFeeds", "encoder_feeds", "export_config", "first_conv_weight"]
