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
