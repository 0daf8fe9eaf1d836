"""What each onnxruntime release loads: its highest IR version and ai.onnx opset.

Measured, not copied: every row from 1.15 on is what scripts/probe_ort_limits.py found by loading one-node models
into the real wheel from PyPI (2026-11-23, CPython 3.11). The published matrix was wrong for 1.15 (it runs opset
18, not 19). 1.14 has no wheel for this Python; its row is the published one (IR 8, opset 18), unverified.
Rerun the probe when adding a release: `.venv/bin/python scripts/probe_ort_limits.py 1.33.0`.
"""

from __future__ import annotations

import re

from ..errors import BadInputError

# (major, minor) -> (max IR version, max ai.onnx opset, newest patch on PyPI: the wheel a proof "on X.Y" installs)
_TABLE: dict[tuple[int, int], tuple[int, int, str]] = {
    (1, 14): (8, 18, "1.14.1"),
    (1, 15): (9, 18, "1.15.1"),
    (1, 16): (9, 19, "1.16.3"),
    (1, 17): (9, 20, "1.17.3"),
    (1, 18): (10, 21, "1.18.1"),
    (1, 19): (10, 21, "1.19.2"),
    (1, 20): (10, 21, "1.20.1"),
    (1, 21): (10, 22, "1.21.1"),
    (1, 22): (10, 22, "1.22.1"),
    (1, 23): (11, 23, "1.23.2"),
    (1, 24): (13, 25, "1.24.4"),
    (1, 25): (13, 26, "1.25.1"),
    (1, 26): (13, 26, "1.26.0"),
    (1, 27): (13, 26, "1.27.0"),
    (1, 28): (13, 26, "1.28.0"),
    (1, 29): (13, 26, "1.29.0"),
    (1, 30): (13, 26, "1.30.0"),
    (1, 31): (13, 26, "1.31.1"),
    (1, 32): (14, 28, "1.32.0"),
}
ORT_LIMITS = {release: (ir, opset) for release, (ir, opset, _) in _TABLE.items()}
LATEST_PATCH = {release: patch for release, (_, _, patch) in _TABLE.items()}


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
