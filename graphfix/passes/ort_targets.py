"""What each onnxruntime release loads: its highest IR version and ai.onnx opset (below), and what it runs in
the other domains (ai.onnx.ml, com.microsoft: ort_domains.json, see domain_limits).

Measured, not copied: every row from 1.15 on is what scripts/probe_ort_limits.py found by loading one-node models
into the real wheel from PyPI (2026-11-23, CPython 3.11). The published matrix was wrong for 1.15 (it runs opset
18, not 19). 1.14 has no wheel for this Python; its row is the published one (IR 8, opset 18), unverified.
Rerun the probe when adding a release: `.venv/bin/python scripts/probe_ort_limits.py 1.33.0`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class DomainLimits:
    """What one release runs beyond ai.onnx, measured on its wheel by scripts/probe_ort_domains.py (2026-12-01):
    the highest ai.onnx.ml and com.microsoft opsets it loads, the contrib ops it registers, and of those the ones
    with a CPU kernel (None where the release does not list kernels: 1.15)."""

    release: str
    ml_max_opset: int
    ms_max_opset: int
    contrib_ops: frozenset[str]
    cpu_kernels: frozenset[str] | None


def _expanded(rows: dict[str, Any], release: str, field: str) -> list[str] | None:
    """The stored deltas (the first release in full, then {added, removed}) expanded for one release."""
    full: list[str] | None = None
    for name, row in rows.items():
        value = row.get(field)
        if value is None:
            full = None
        elif full is None or "added" not in value:
            full = sorted(value)
        else:
            full = sorted((set(full) | set(value["added"])) - set(value["removed"]))
        if name == release:
            return full
    raise KeyError(release)


@functools.cache
def _measured_domains() -> dict[str, Any]:
    """ort_domains.json, parsed once per process (a directory run retargets every model of an export)."""
    rows: dict[str, Any] = json.loads((Path(__file__).parent / "ort_domains.json").read_text())["releases"]
    return rows


def domain_limits(release: str) -> DomainLimits | None:
    """`1.16` or `1.16.3` -> what that release's newest patch runs in the other domains; None where nothing was
    measured (1.14: no wheel for this Python), so that nothing is changed on a guess (the load on the target,
    where it can be installed, still decides)."""
    ort_limits(release)  # the same refusal of unknown releases
    major, minor = (int(x) for x in release.split(".")[:2])
    patch = LATEST_PATCH[(major, minor)]
    rows = _measured_domains()
    if patch not in rows:
        return None
    kernels = _expanded(rows, patch, "contrib_cpu_kernels")
    return DomainLimits(release=patch, ml_max_opset=rows[patch]["ml_max_opset"],
                        ms_max_opset=rows[patch]["ms_max_opset"],
                        contrib_ops=frozenset(_expanded(rows, patch, "contrib_ops") or ()),
                        cpu_kernels=frozenset(kernels) if kernels is not None else None)
