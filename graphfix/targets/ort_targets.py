"""What each onnxruntime release loads: its highest IR version and ai.onnx opset (below), and what it runs in
the other domains (ai.onnx.ml, com.microsoft: ort_domains.json) and which float16 kernels it lacks: all of it one
TargetRuntime per release, made by parse_release.

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
# (major, minor) -> ops whose float16 CPU kernel is missing, and whose fallback (the op's function body, written
# with attributes the same release refuses) fails to load: see passes/float16_fallbacks.py.
NO_FLOAT16_KERNEL: dict[tuple[int, int], frozenset[str]] = {
    family: frozenset({"Softmax", "LayerNormalization"}) for family in ((1, 14), (1, 15), (1, 16))}
_RELEASE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?", re.ASCII)


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


def _domain_limits(patch: str) -> DomainLimits | None:
    """What release `patch` runs in the other domains; None where nothing was measured (1.14: no wheel for this
    Python), so that nothing is changed on a guess (the load on the target, where it can be installed, decides)."""
    rows = _measured_domains()
    if patch not in rows:
        return None
    kernels = _expanded(rows, patch, "contrib_cpu_kernels")
    return DomainLimits(release=patch, ml_max_opset=rows[patch]["ml_max_opset"],
                        ms_max_opset=rows[patch]["ms_max_opset"],
                        contrib_ops=frozenset(_expanded(rows, patch, "contrib_ops") or ()),
                        cpu_kernels=frozenset(kernels) if kernels is not None else None)


@dataclass(frozen=True)
class TargetRuntime:
    """One onnxruntime release, as graphfix knows it: what `--target-ort` retargets for and loads the output in,
    and what `--ort-version` runs the proof in. Made only by parse_release, so holding one means the release is
    known; standard-library values only, so it crosses into worker processes as it is."""

    release: str  # X.Y.Z: the wheel a proof or a load on this target installs
    max_ir: int
    max_opset: int  # ai.onnx
    domains: DomainLimits | None  # ai.onnx.ml, com.microsoft; None where not measured
    float16_gaps: frozenset[str]  # ops whose float16 CPU fallback fails to load there

    def __str__(self) -> str:
        return self.release

    @property
    def series(self) -> str:
        """X.Y: the release line, as --target-ort names it and the tables are keyed."""
        return self.release.rsplit(".", 1)[0]


@functools.lru_cache(maxsize=256)  # TargetRuntime is frozen; the tables are read per model otherwise
def parse_release(text: str) -> TargetRuntime:
    """`1.16` (its newest patch, 1.16.3) or `1.16.3` -> that release; anything else, malformed or unknown, is
    the one BadInputError every option taking a release gives."""
    match = _RELEASE.fullmatch(text)
    family = (int(match[1]), int(match[2])) if match else None
    if match is None or family not in _TABLE:
        first, last = min(_TABLE), max(_TABLE)
        shown = repr(text) if len(text) <= 40 else repr(text[:40]) + "..."
        raise BadInputError(f"unknown onnxruntime release {shown}: give X.Y or X.Y.Z with X.Y from "
                            f"{first[0]}.{first[1]} to {last[0]}.{last[1]} (X.Y means its newest patch)")
    max_ir, max_opset, newest = _TABLE[family]
    release = f"{family[0]}.{family[1]}.{int(match[3])}" if match[3] is not None else newest
    return TargetRuntime(release=release, max_ir=max_ir, max_opset=max_opset, domains=_domain_limits(newest),
                         float16_gaps=NO_FLOAT16_KERNEL.get(family, frozenset()))


def as_target(value: TargetRuntime | str | None) -> TargetRuntime | None:
    """The library API's convenience: a release given as text is parsed here, at the boundary."""
    return parse_release(value) if isinstance(value, str) else value


def known_releases() -> list[TargetRuntime]:
    """Every release line the tables know, oldest first, each at its newest patch."""
    return list(_known_releases())


@functools.cache
def _known_releases() -> tuple[TargetRuntime, ...]:
    return tuple(parse_release(f"{major}.{minor}") for major, minor in sorted(_TABLE))
