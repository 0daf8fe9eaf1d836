"""onnx's C++ extension (checker, shape inference) loaded alone.

`import onnx` loads numpy and onnx's Python modules too (a large share of a short run: `make bench`), which
neither `check`, `repair --no-validate` nor `validate` should pay for a question the C++ code answers by itself.
The extension is loaded under its real name, so a later `import onnx` reuses it (as io/onnx_proto.py does for the
protobuf classes).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_EXTENSION = "onnx.onnx_cpp2py_export"


def onnx_extension(part: str) -> ModuleType:
    """`onnx.onnx_cpp2py_export.<part>` ("checker", "shape_inference") without running onnx's __init__."""
    if _EXTENSION not in sys.modules:
        package = importlib.util.find_spec("onnx")  # locates the package without running its __init__
        locations = package.submodule_search_locations if package is not None else None
        found = next((Path(where) / f"onnx_cpp2py_export{suffix}" for where in locations or ()
                      for suffix in importlib.machinery.EXTENSION_SUFFIXES  # .so, .pyd: whatever this platform builds
                      if (Path(where) / f"onnx_cpp2py_export{suffix}").is_file()), None)
        spec = importlib.util.spec_from_file_location(_EXTENSION, found) if found is not None else None
        if spec is None or spec.loader is None:
            return importlib.import_module(f"{_EXTENSION}.{part}")  # any other layout: onnx's own import
        module = importlib.util.module_from_spec(spec)
        sys.modules[_EXTENSION] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{_EXTENSION}.{part}")
