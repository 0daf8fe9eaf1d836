"""What one decode-loop proof runs and reports, shared by the host (validation.py) and the client loop running in
another onnxruntime (client_loop.py); standard library only, so reading results never imports numpy."""

from __future__ import annotations

from dataclasses import dataclass

STEPS = 8
BATCHES = (1, 3)
SOURCE_LENGTHS = (5, 11)


@dataclass
class CaseResult:
    batch: int
    source_length: int
    steps: int = 0  # steps that ran
    max_abs_diff: float = 0.0
    tokens_agree: int = 0
    tokens_total: int = 0
    failure: str | None = None
    # The loop differed from full recompute by this much, but equals the original model driven as Optimum drives
    # it: the original itself differs from full recompute (static QDQ int8 exports do), the repair does not.
    original_differs: float | None = None
