"""Would onnxruntime load this model? Asked cheaply of the skeleton first, of onnxruntime only when in doubt.

A full load reads every weight (many times what `check` costs: `make bench`), so `check`, `repair`
and `split` first put to the weightless skeleton read_model holds the questions onnxruntime's loader asks before
it runs anything:

- onnx's strict type and shape inference (`check_type`, `strict_mode`): a float16 converter's mixed-type nodes,
  a LayerNormalization whose T is bound to float and float16, a Constant whose value lives in external data
  (its consumers cannot be inferred; onnxruntime says "Cannot parse data from external tensors");
- the rule onnxruntime adds to ONNX's: a subgraph may not return an outer-scope value directly (the float16
  converter's `logits`).

Where any of them objects, onnxruntime itself loads the file, and its reason is the verdict (a model onnx calls
doubtful but onnxruntime loads stays loadable). A skeleton that passes is not loaded at all.

`check` promises more of a file it calls ok: the installed onnxruntime loads it. `undecided` says where the
skeleton and the measured tables (targets/) cannot promise that: a release the tables refuse or do not cover, a
domain they do not measure, an element type whose kernels they do not list (anything beyond float32, int32/64 and
bool), a weight whose stored size the skeleton cannot match to its shape. Only those are loaded, and their verdict
is remembered per file content and release (load_verdicts.py), so an unchanged model is not loaded again.
"""

from __future__ import annotations

from pathlib import Path

from ..io import onnx_proto as onnx
from ..io import protowire
from ..io.external_data import external_location
from ..io.portable import read_at
from ..io.read import LoadedModel
from ..model.graph import all_graphs, subgraphs
from ..targets import TargetRuntime

_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


def outer_scope_outputs(model: onnx.ModelProto) -> list[str]:
    """Outputs of subgraphs that name a value defined outside them: onnxruntime refuses each (ONNX allows it)."""
    found = []
    for graph, _ in all_graphs(model.graph):
        for node in graph.node:
            if node.op_type not in _CONTROL_FLOW:  # only control flow holds subgraphs (a hot loop: skip the rest)
                continue
            for _, branch in subgraphs(node):
                own = {o for n in branch.node for o in n.output} | {v.name for v in branch.input} | \
                      {t.name for t in branch.initializer}
                found += [o.name for o in branch.output if o.name not in own]
    return found


def _constants_in_external_data(model: onnx.ModelProto) -> bool:
    """A node attribute's tensor in an external-data file (not a payload the skeleton left in the model file)."""
    return any(a.type == onnx.AttributeProto.TENSOR and _in_external_file(a.t)
               for graph, _ in all_graphs(model.graph) for node in graph.node for a in node.attribute)


def _in_external_file(tensor: onnx.TensorProto) -> bool:
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    return tensor.data_location == onnx.TensorProto.EXTERNAL and not protowire.is_payload_marker(location)


def doubt(model: onnx.ModelProto, *, infer: bool = True, external_data: bool = True) -> str | None:
    """Why onnxruntime might refuse the skeleton `model`, or None when nothing in it says so. `infer` False asks
    only the structural rules (pure Python): strict inference imports onnx's C++ extension and walks every node,
    about what `repair --no-validate` costs on a 352 MB model all by itself. `external_data` False (the model
    references no external-data file) skips looking for Constants stored there."""
    if outer := outer_scope_outputs(model):
        return f"subgraph output {outer[0]!r} is an outer scope value"
    if external_data and _constants_in_external_data(model):
        return "a Constant's value is in external data"
    if not infer:
        return None
    from ..io.onnx_extension import onnx_extension  # the C++ inference alone: `import onnx` costs more than it

    try:  # onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=False)
        onnx_extension("shape_inference").infer_shapes(model.SerializeToString(), True, True, False)
    except Exception as err:  # onnx raises InferenceError, ValidationError or C++ errors: any is a doubt
        return " ".join(str(err).split())[:300]
    return None


def require_loadable_if_doubtful(loaded: LoadedModel, *, infer: bool = True) -> None:
    """Raise BadInputError with onnxruntime's reason when it cannot load the model; loads only on a doubt (and
    remembers the verdict for these bytes: load_verdicts.py)."""
    if doubt(loaded.model, infer=infer, external_data=bool(loaded.external_files)) is None:
        return
    from .load_verdicts import load_remembered

    load_remembered(loaded, lambda: require_loadable(loaded.path))


def require_loadable(path: Path) -> None:
    """Raise BadInputError with onnxruntime's reason unless the installed onnxruntime loads the model (in this
    process: onnxruntime is imported only on the paths that need it)."""
    from .client_loop import load_session

    load_session(str(path))


_T = onnx.TensorProto
# Element types whose CPU kernels every ai.onnx op graphfix meets has in every release of the tables: a model that
# holds only these needs no session to know its kernels exist.
_PLAIN_TYPES = frozenset({_T.FLOAT, _T.INT64, _T.INT32, _T.BOOL})
_ITEM_SIZE: dict[int, int] = {_T.FLOAT: 4, _T.INT64: 8, _T.INT32: 4, _T.BOOL: 1}
# ai.onnx ops whose output type is none of their inputs' (beyond a `to`/`dtype` attribute, read separately).
_NEW_TYPE_OPS = frozenset({"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "MatMulInteger",
                           "ConvInteger", "QLinearMatMul", "QLinearConv", "StringNormalizer", "TfIdfVectorizer"})
_TENSOR_ATTRIBUTES = frozenset({onnx.AttributeProto.TENSOR, onnx.AttributeProto.TENSORS,
                                onnx.AttributeProto.SPARSE_TENSOR, onnx.AttributeProto.SPARSE_TENSORS})
_RAW_DATA_TAG = 9 << 3 | 2  # TensorProto.raw_data, length-delimited


_SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})  # the ai.onnx ops that hold graphs


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """`graph` and its subgraphs, looking only at the ops that hold one (a node of any other domain is undecided
    before its attributes matter)."""
    found, todo = [], [graph]
    while todo:
        current = todo.pop()
        found.append(current)
        for node in current.node:
            if node.op_type in _SUBGRAPH_OPS:
                todo += [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
                todo += [g for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs]
    return found


def _beyond_tables(loaded: LoadedModel, release: TargetRuntime) -> str | None:
    """A node, value or tensor the tables do not cover (another domain, an element type beyond _PLAIN_TYPES), or a
    weight whose stored size is not what its shape needs. One walk: it runs on every model `check` calls ok."""
    model = loaded.model
    known = {"", "ai.onnx"} | ({"com.microsoft"} if release.domains and release.domains.cpu_kernels is not None
                                else set())
    kernels = release.domains.cpu_kernels if release.domains and release.domains.cpu_kernels else frozenset()
    if model.functions or model.training_info:
        return "it holds model-local functions or training graphs"
    for graph in _graphs(model.graph):
        for value in [*graph.input, *graph.output, *graph.value_info]:
            if value.type.WhichOneof("value") != "tensor_type" or value.type.tensor_type.elem_type not in _PLAIN_TYPES:
                return f"{value.name!r} is not a float32/int32/int64/bool tensor"
        tensors = [*graph.initializer, *(t for s in graph.sparse_initializer for t in (s.values, s.indices))]
        for node in graph.node:
            if node.domain not in known:
                return f"{node.domain}.{node.op_type} is in a domain the tables do not cover"
            if node.domain == "com.microsoft" and node.op_type not in kernels:
                return f"the tables list no CPU kernel for com.microsoft.{node.op_type}"
            if node.op_type in _NEW_TYPE_OPS:
                return f"{node.op_type} makes a type the tables do not cover"
            for attr in node.attribute:
                if attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i not in _PLAIN_TYPES:
                    return f"{node.op_type} {node.name!r} makes element type {attr.i}"
                if attr.type in _TENSOR_ATTRIBUTES:
                    tensors += [attr.t, *attr.tensors, attr.sparse_tensor.values, attr.sparse_tensor.indices,
                                *(t for s in attr.sparse_tensors for t in (s.values, s.indices))]
        if (unmatched := _tensors_unmatched(loaded, tensors)) is not None:
            return unmatched
    return None


def _tensors_unmatched(loaded: LoadedModel, tensors: list[onnx.TensorProto]) -> str | None:
    for tensor in tensors:
        if tensor.data_type not in _PLAIN_TYPES:
            if not tensor.ByteSize():
                continue  # an unset field of an attribute (attr.t of a TENSORS attribute)
            return f"tensor {tensor.name!r} has element type {tensor.data_type}"
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue  # in the skeleton as it is: small, and parsed by protobuf already
        count = 1
        for dim in tensor.dims:
            count *= dim
        if _stored_size(loaded, tensor) != count * _ITEM_SIZE[tensor.data_type]:
            return f"the stored size of {tensor.name!r} is not what its shape needs"
    return None


def _stored_size(loaded: LoadedModel, tensor: onnx.TensorProto) -> int | None:
    """The byte count of `tensor`'s raw data, read off the skeleton's marker (one read of the field's header) or the
    external-data entry; None when it is not stored as one raw_data field."""
    info = {e.key: e.value for e in tensor.external_data}
    location = external_location(tensor)
    if not protowire.is_payload_marker(location):
        return int(info["length"]) if "length" in info else None
    ranges = info.get("graphfix_source_ranges", "")
    if "," in ranges or ":" not in ranges or loaded.file is None:
        return None
    start, end = (int(x) for x in ranges.split(":"))
    header = read_at(loaded.file.fd, min(11, end - start), start)
    if not header or header[0] != _RAW_DATA_TAG:
        return None
    size, shift, pos = 0, 0, 1
    while pos < len(header):
        size |= (header[pos] & 0x7F) << shift
        shift, pos = shift + 7, pos + 1
        if not header[pos - 1] & 0x80:
            return size if pos + size == end - start else None
    return None


def installed_in_tables() -> TargetRuntime | None:
    """The tables' row of the installed onnxruntime (the newest row at or below it for a newer release), None when
    it is older than every row or not a release number."""
    from ..targets import known_releases
    from .load_verdicts import installed_release

    parts = installed_release().split(".")
    try:
        installed = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return None
    rows = [r for r in known_releases() if tuple(int(x) for x in r.series.split(".")) <= installed]
    return rows[-1] if rows else None


def undecided(loaded: LoadedModel) -> str | None:
    """Why the skeleton and the measured tables cannot promise that the installed onnxruntime loads `loaded` (a
    session must say), or None when they promise it. Run after `doubt` found nothing."""
    release = installed_in_tables()
    if release is None:
        return "the installed onnxruntime is older than the tables"
    if (refused := _versions_refused(loaded.model, release)) is not None:
        return f"the tables say onnxruntime {release.series} refuses it ({refused})"
    return _beyond_tables(loaded, release)


def _versions_refused(model: onnx.ModelProto, release: TargetRuntime) -> str | None:
    """release_floor.refusal without its walks over the nodes (contrib kernels, float16 fallbacks): _beyond_tables
    walks them once, and a float16 model is undecided anyway."""
    if model.ir_version > release.max_ir:
        return f"IR {model.ir_version} > {release.max_ir}"
    limits = {"": release.max_opset, "ai.onnx": release.max_opset}
    if release.domains is not None:
        limits.update({"ai.onnx.ml": release.domains.ml_max_opset, "com.microsoft": release.domains.ms_max_opset})
    for opset in model.opset_import:
        if opset.domain in limits and opset.version > limits[opset.domain]:
            return f"{opset.domain or 'opset'} {opset.version} > {limits[opset.domain]}"
    return None


def confirm_loadable(loaded: LoadedModel, *, load: bool = False) -> None:
    """Raise BadInputError with onnxruntime's reason unless the installed onnxruntime loads `loaded`: from the
    skeleton and tables where they decide (`undecided`), else from onnxruntime, whose verdict is remembered for these
    bytes and this release. `load` asks onnxruntime whatever the tables say, and whatever is remembered."""
    from .load_verdicts import load_remembered

    if not load and undecided(loaded) is None:
        return
    load_remembered(loaded, lambda: require_loadable(loaded.path), ask_anyway=load)


__all__ = ["confirm_loadable", "doubt", "outer_scope_outputs", "require_loadable", "require_loadable_if_doubtful",
           "undecided"]
