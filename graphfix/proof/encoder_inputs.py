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

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ..io import onnx_proto as onnx
from ..io.config_files import ConfigValues, positive_int, read_config
from ..model.graph import attribute
from .cases import SOURCE, Dim, EncoderFeeds

_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
_CONFIGS = ("config.json", "preprocessor_config.json")


def export_config(encoder_path: Path) -> ConfigValues:
    """config.json and preprocessor_config.json beside the encoder or, from onnx/ (where onnx-community keeps the
    ONNX files), one folder up, merged: a VisionEncoderDecoder's `encoder` sub-config first, as it describes the
    encoder. Each key remembers its file, for a refusal to name (io/config_files.py reads them)."""
    files: list[tuple[str, dict[str, Any]]] = []
    # One folder up only from onnx/: above an Optimum export sits whatever folder the user keeps exports in.
    folders = [encoder_path.parent] + ([encoder_path.parent.parent] if encoder_path.parent.name == "onnx" else [])
    for folder in folders:
        files += [(name, read_config(folder / name)) for name in _CONFIGS]
    merged = ConfigValues()
    for name, config in files:
        if isinstance(config.get("encoder"), dict):
            for key, value in config["encoder"].items():
                merged.add(key, value, f"{name} (its encoder)")
    for name, config in files:
        for key, value in config.items():
            merged.add(key, value, name)
    return merged


# What no real encoder comes near: a value beyond these is a broken or hostile config, refused before the proof
# allocates anything from it.
MAX_CHANNELS = 1024
MAX_SIDE = 16384  # pixels of an image side; Donut reads 2560 x 1920
MAX_FEATURES = 16384  # mel bins or feature size per frame
MAX_POSITIONS = 1 << 20  # audio positions (frames / 2)
MAX_VALUES = 1 << 26  # values of one input per example: 256 MB of float32


def _config_int(config: ConfigValues, key: str, limit: int) -> int | None:
    """config[key], checked (io/config_files.positive_int); None when the configs do not say it."""
    return positive_int(config[key], config.where(key), limit) if config.get(key) is not None else None


def _agreed(config: ConfigValues, key: str, value: int | None, graph: int | None, what: str) -> int | None:
    """The graph's own size when it has one, refusing a config value that contradicts it; else the config's."""
    if graph is not None and value is not None and value != graph:
        raise BadInputError(f"{config.where(key)} is {value}, but {what} {graph}")
    return graph if graph is not None else value


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


def _pair(config: ConfigValues, key: str) -> tuple[int, int] | None:
    """An image size as configs write it: 224, [224, 224], {"height": 224, "width": 224}, {"shortest_edge": 224};
    None when absent or in another form, a refusal naming the file and key when a size in it is no size."""
    value = config.get(key)
    where = config.where(key)
    if isinstance(value, Mapping):
        sides = [value[k] for k in ("height", "width") if k in value] if "height" in value or "width" in value \
            else [value["shortest_edge"]] * 2 if "shortest_edge" in value else None
    elif isinstance(value, (list, tuple)):
        sides = list(value)
    else:
        sides = None if value is None else [value, value]
    if sides is None or len(sides) != 2:
        return None
    return positive_int(sides[0], where, MAX_SIDE), positive_int(sides[1], where, MAX_SIDE)


def _image(name: str, declared: list[int | str], config: ConfigValues,
           conv: tuple[list[int], int] | None) -> tuple[list[Dim], str]:
    """[channels, height, width] of pixel values: the graph's own sizes (declared dims, the first Conv's weight)
    first, the configs' where the graph says nothing; a config contradicting the graph is refused."""
    channels, side = declared[0], declared[1:3]
    said: list[str] = []
    from_conv = conv[0][1] * conv[1] if conv is not None else None
    graph_channels = channels if isinstance(channels, int) else from_conv
    agreed = _agreed(config, "num_channels", _config_int(config, "num_channels", MAX_CHANNELS), graph_channels,
                     f"input {name!r} of the encoder declares" if isinstance(channels, int) else
                     "the encoder's first Conv reads")
    if agreed is None:
        raise BadInputError(f"cannot tell how many channels input {name!r} of the encoder takes: no "
                            "num_channels in config.json and no Conv reads it")
    if not isinstance(declared[0], int):
        said.append("the first Conv's weight" if from_conv is not None else "config num_channels")
    size = _pair(config, "size") or _pair(config, "image_size")
    key = "size" if _pair(config, "size") else "image_size"
    if all(isinstance(d, int) for d in side):
        if size is not None and tuple(side) != size:
            raise BadInputError(f"{config.where(key)} is {size[0]}, but input {name!r} of the encoder declares "
                                f"{side[0]} x {side[1]}")
    else:
        said.append("preprocessor size" if key == "size" else "config image_size")
        if size is None:
            raise BadInputError(f"cannot tell the image size input {name!r} of the encoder takes: no image_size in "
                                "config.json and no size in preprocessor_config.json beside it")
        side = [d if isinstance(d, int) else s for d, s in zip(side, size)]
    dims: list[Dim] = [agreed, *side]
    _within_budget(name, dims, config, ["num_channels", key])
    return dims, ", ".join(said) or "the signature"


def _within_budget(name: str, dims: list[Dim], config: ConfigValues, keys: list[str]) -> None:
    values = 1
    for dim in dims:
        values *= int(dim) if dim != SOURCE else 1
    if values > MAX_VALUES:
        sources = ", ".join(config.where(k) for k in keys if k in config) or "its signature"
        raise BadInputError(f"input {name!r} of the encoder would take {' x '.join(map(str, dims))} values per "
                            f"example (from {sources}); the proof feeds at most {MAX_VALUES}")


_FEATURE_KEYS = ("num_mel_bins", "feature_size", "input_feat_size")


def _features(name: str, declared: list[int | str], config: ConfigValues,
              conv: tuple[list[int], int] | None) -> tuple[list[Dim], str]:
    """[features, frames] or [frames, features] of audio features, as the signature orders them: the dim named for a
    length is the frames, the other the feature size. The graph's own sizes win; a config contradicting them (a
    feature size or a window none of the declared dims has) is refused."""
    said = []
    key = next((k for k in _FEATURE_KEYS if config.get(k) is not None), None)
    features = _config_int(config, key, MAX_FEATURES) if key is not None else None
    static = [d for d in declared if isinstance(d, int)]
    if features is not None and len(static) == len(declared) and features not in static:
        raise BadInputError(f"{config.where(key or '')} is {features}, but input {name!r} of the encoder declares "
                            f"{' x '.join(map(str, declared))}")
    if features is not None:
        said.append("config's feature size")
    elif conv is not None:
        features, said = conv[0][1] * conv[1], ["the first Conv's weight"]
    # Whisper's encoder takes exactly its 30 s window: two frames per position, its convolutions halve them.
    positions = _config_int(config, "max_source_positions", MAX_POSITIONS) if "num_mel_bins" in config else None
    frames: Dim = 2 * positions if positions is not None else SOURCE
    if positions is not None and len(static) == len(declared) and frames not in static:
        raise BadInputError(f"{config.where('max_source_positions')} is {positions} ({frames} frames), but input "
                            f"{name!r} of the encoder declares {' x '.join(map(str, declared))}")
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
    _within_budget(name, dims, config, [k for k in (key, "max_source_positions") if k])
    return dims, ", ".join(said) if len(static) < len(declared) else "the signature"


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
        if len(declared) == 3:
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
    if vocab is None:
        vocab = _config_int(config, "vocab_size", 1 << 31)
    return EncoderFeeds(shapes=shapes, vocab=vocab, said_by=said_by)


__all__ = ["SOURCE", "EncoderFeeds", "encoder_feeds", "export_config", "first_conv_weight"]
