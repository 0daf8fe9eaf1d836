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
"""

from __future__ import annotations

from pathlib import Path

from ..io import onnx_proto as onnx
from ..io import protowire
from ..io.native_libraries import address_space_limit
from ..io.read import LoadedModel
from ..model.graph import all_graphs, subgraphs

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
    """Raise BadInputError with onnxruntime's reason when it cannot load the model; loads only on a doubt."""
    if doubt(loaded.model, infer=infer, external_data=bool(loaded.external_files)) is None:
        return
    require_loadable(loaded.path)


def require_loadable(path: Path) -> None:
    """Raise BadInputError with onnxruntime's reason unless the installed onnxruntime loads the model.

    In this process (onnxruntime is imported only on the paths that need it), except under an address-space limit:
    there the dynamic loader ends a process that cannot map onnxruntime (exit 127, no handler runs) and its
    std::bad_alloc reads like the model's fault, so a child process loads it and its death is reported as memory."""
    if address_space_limit() is None:
        from .client_loop import load_session

        load_session(str(path))
        return
    from .cases import LoadRequest
    from .runtimes import run_in_runtime

    run_in_runtime(LoadRequest(str(Path(path).resolve()), None))


__all__ = ["doubt", "outer_scope_outputs", "require_loadable", "require_loadable_if_doubtful"]
