"""The onnx API, with its protobuf classes available without importing `onnx` itself.

`import onnx` imports numpy and onnx's C++ extension, costing as much as copying a large model (`make bench`),
and `repair --no-validate` needs only the generated message classes. They are loaded here from onnx's own
`onnx_ml_pb2.py` under its real module name, so when something later does import onnx (the checker, shape
inference, validation), onnx reuses this very module and its classes: there is one ModelProto, not two.
Any other attribute (checker, helper, numpy_helper, shape_inference, defs, ...) imports the real onnx on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any


def _load_generated_classes() -> ModuleType:
    name = "onnx.onnx_ml_pb2"
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("onnx")  # locates the package without running its __init__
    if package is None or not package.submodule_search_locations:
        raise ImportError("graphfix needs the onnx package")
    spec = importlib.util.spec_from_file_location(name, Path(package.submodule_search_locations[0]) / "onnx_ml_pb2.py")
    if spec is None or spec.loader is None:
        raise ImportError("onnx has no onnx_ml_pb2.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:  # onnx's stubs describe the very classes loaded below
    from onnx.onnx_ml_pb2 import (
        AttributeProto,
        GraphProto,
        ModelProto,
        NodeProto,
        OperatorSetIdProto,
        TensorProto,
        TensorShapeProto,
        ValueInfoProto,
    )
else:
    _pb = _load_generated_classes()
    ModelProto, GraphProto, NodeProto = _pb.ModelProto, _pb.GraphProto, _pb.NodeProto
    TensorProto, AttributeProto, ValueInfoProto = _pb.TensorProto, _pb.AttributeProto, _pb.ValueInfoProto
    TensorShapeProto, OperatorSetIdProto = _pb.TensorShapeProto, _pb.OperatorSetIdProto


def make_node(op_type: str, inputs: list[str], outputs: list[str], name: str = "") -> NodeProto:
    """onnx.helper.make_node for attribute-less nodes, without importing onnx.helper (and numpy)."""
    return NodeProto(op_type=op_type, input=inputs, output=outputs, name=name)


def __getattr__(attr: str) -> Any:
    if attr.startswith("__"):  # importlib probes __path__ & co.; answering them would import onnx for nothing
        raise AttributeError(attr)
    return getattr(importlib.import_module("onnx"), attr)


# The message classes are what this module is for: exported by name for `mypy --strict` (no implicit re-exports).
__all__ = ["AttributeProto", "GraphProto", "ModelProto", "NodeProto", "OperatorSetIdProto", "TensorProto",
           "TensorShapeProto", "ValueInfoProto", "make_node"]
