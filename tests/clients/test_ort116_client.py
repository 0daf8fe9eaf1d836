"""The plain present->past client on onnxruntime 1.16.3, the C library the seeds' Rust `ort` 1.16.3 loads
(onnxruntime-node 1.16.3 bundles libonnxruntime.so.1.16.3): on an export repaired with
`graphfix repair --target-ort 1.16 EXPORT_DIR OUT_DIR` it generates exactly what the PyTorch model generates; on the
unrepaired export it dies at the first step that is fed the cache branch's dummy encoder KV.

The current exporter's files (encoder IR 8, merged decoder IR 9, both ai.onnx 18) are within what 1.16 loads (IR 9,
opset 19), so here `--target-ort 1.16` has no version to lower; what 1.16.3 proves is that the repaired decoder runs
on its kernels, fusions and If handling."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ARCHS, JS_ORT116_DIR, MAX_NEW_TOKENS, MERGED, SOURCE_IDS, assert_scores_match, repair_model_dir

_VERSION_STRING = """
import ctypes, sys
class OrtApiBase(ctypes.Structure):
    _fields_ = [("GetApi", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)),
                ("GetVersionString", ctypes.CFUNCTYPE(ctypes.c_char_p))]
lib = ctypes.CDLL(sys.argv[1])
lib.OrtGetApiBase.restype = ctypes.POINTER(OrtApiBase)
print(lib.OrtGetApiBase().contents.GetVersionString().decode())
"""


@functools.cache
def _c_library_version(library: str) -> str:
    """What the shared object itself answers to the C API's OrtGetApiBase()->GetVersionString()."""
    return subprocess.run([sys.executable, "-c", _VERSION_STRING, library], check=True, capture_output=True,
                          text=True).stdout.strip()


def _assert_ran_on_onnxruntime_1_16_3(answer: dict) -> None:
    assert answer["ortVersion"] == "1.16.3", answer.get("ortVersion")
    library = Path(answer["library"])
    assert library.name == "libonnxruntime.so.1.16.3", library
    assert library.is_relative_to(JS_ORT116_DIR / "node_modules" / "onnxruntime-node"), library
    assert _c_library_version(str(library)) == "1.16.3"


@pytest.fixture(scope="session")
def repaired_for_ort116(exports, tmp_path_factory):
    """`repaired_for_ort116(arch)`: the export directory of `arch` after `graphfix repair --target-ort 1.16`."""
    root = tmp_path_factory.mktemp("repaired-ort116")
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = repair_model_dir(exports / arch, root / arch, "--target-ort", "1.16")
        return made[arch]

    return get


def _plain_loop(node_ort116, arch, model_dir):
    return node_ort116("plain_loop.mjs", {
        "encoder": str(model_dir / "encoder_model.onnx"), "decoder": str(model_dir / MERGED),
        "config": str(model_dir / "config.json"), "inputIds": SOURCE_IDS[arch], "maxNewTokens": MAX_NEW_TOKENS,
        "minNewTokens": MAX_NEW_TOKENS})


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_loop_on_onnxruntime_1_16_3_generates_the_pytorch_tokens_on_the_export_repaired_for_1_16(
        arch, repaired_for_ort116, pytorch_reference, node_ort116):
    answer = _plain_loop(node_ort116, arch, repaired_for_ort116(arch))

    _assert_ran_on_onnxruntime_1_16_3(answer)
    assert "error" not in answer, answer
    expected = pytorch_reference(arch)
    assert answer["tokens"] == expected.tokens[0]
    assert_scores_match(answer["logits"], expected.logits[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_plain_loop_on_onnxruntime_1_16_3_fails_on_the_unrepaired_export_when_the_dummy_is_fed_back(
        arch, exports, pytorch_reference, node_ort116):
    answer = _plain_loop(node_ort116, arch, exports / arch)

    _assert_ran_on_onnxruntime_1_16_3(answer)
    # Step 1 (no-cache branch) returns real encoder KV; step 2 (cache branch) returns the dummies; step 3 feeds them.
    assert answer.get("failedStep") == 3, answer
    # 1.16.3 fuses the encoder-attention Q.K^T into a FusedMatMul named 'MatMul_With_Transpose', so its message names
    # no layer (1.30 does); what it does say is the dummy's fault: its batch dimension is 0.
    assert "MatMul" in answer["error"] and "cannot broadcast on dim 0" in answer["error"], answer["error"]
    expected = pytorch_reference(arch)
    assert answer["tokens"] == expected.tokens[0][:3]  # right until then: the dummies are the only fault
    assert_scores_match(answer["logits"], expected.logits[0][:2])
