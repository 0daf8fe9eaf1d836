"""Verify graphfix/targets/ort_targets.py against real onnxruntime wheels.

For each release, installs it into graphfix's runtime cache (pip) and finds the highest IR version and ai.onnx
opset it loads, with a one-node model. Prints one table row per release; pass releases as arguments.

    .venv/bin/python scripts/probe_ort_limits.py 1.15.1 1.16.3 1.17.3
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from graphfix.proof.runtimes import runtime_python

PROBE = """
import sys, onnxruntime as o
for path in sys.argv[1:]:
    try:
        o.InferenceSession(path, providers=["CPUExecutionProvider"]); print("ok")
    except Exception as e:
        print("no")
"""


def _model(ir: int, opset: int):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)


def probe(release: str, workdir: Path) -> tuple[int, int]:
    python = runtime_python(release)
    irs, opsets = list(range(7, 16)), list(range(13, 31))
    paths = []
    for ir in irs:
        paths.append(workdir / f"ir{ir}.onnx")
        paths[-1].write_bytes(_model(ir, 13).SerializeToString())
    answers = subprocess.run([str(python), "-c", PROBE, *map(str, paths)], capture_output=True, text=True).stdout.split()
    max_ir = max(ir for ir, answer in zip(irs, answers) if answer == "ok")
    paths = []
    for opset in opsets:
        paths.append(workdir / f"opset{opset}.onnx")
        paths[-1].write_bytes(_model(max_ir, opset).SerializeToString())
    answers = subprocess.run([str(python), "-c", PROBE, *map(str, paths)], capture_output=True, text=True).stdout.split()
    max_opset = max(opset for opset, answer in zip(opsets, answers) if answer == "ok")
    return max_ir, max_opset


def main(releases: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for release in releases:
            try:
                max_ir, max_opset = probe(release, Path(tmp))
                print(f"{release}\tIR {max_ir}\topset {max_opset}", flush=True)
            except Exception as err:  # a release pip cannot install here is reported, not fatal
                print(f"{release}\tunavailable: {err}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
