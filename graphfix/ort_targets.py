"""What each onnxruntime release loads: its highest IR version and ai.onnx opset.

From onnxruntime's published compatibility matrix (docs/Versioning.md, "Version matrix"). The 1.16 row is
checked against the real 1.16.3 wheel by tests/test_target_runtime.py (IR 10 refused, IR 9 / opset 19 loaded).
"""

from __future__ import annotations

import re

from .errors import BadInputError

# (major, minor) -> (max IR version, max ai.onnx opset)
ORT_LIMITS: dict[tuple[int, int], tuple[int, int]] = {
    (1, 14): (8, 18),
    (1, 15): (9, 19),
    (1, 16): (9, 19),
    (1, 17): (9, 20),
    (1, 18): (10, 21),
    (1, 19): (10, 21),
    (1, 20): (10, 21),
}


# The newest patch of each release on PyPI for this Python, the wheel a proof "on 1.16" installs.
LATEST_PATCH = {(1, 14): "1.14.1", (1, 15): "1.15.1", (1, 16): "1.16.3", (1, 17): "1.17.3", (1, 18): "1.18.1",
                (1, 19): "1.19.2", (1, 20): "1.20.1"}


def ort_limits(release: str) -> tuple[int, int]:
    """`1.16` or `1.16.3` -> (max IR, max opset); refuse releases the table does not know rather than guess."""
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?", release)
    if not match:
        raise BadInputError(f"--target-ort takes an onnxruntime release like 1.16 or 1.16.3, got {release!r}")
    key = (int(match[1]), int(match[2]))
    if key not in ORT_LIMITS:
        known = ", ".join(f"{a}.{b}" for a, b in sorted(ORT_LIMITS))
        raise BadInputError(f"no compatibility data for onnxruntime {release} (known: {known})")
    return ORT_LIMITS[key]
