"""The onnxruntime releases graphfix knows, and the converters that bring a model within one: tables and
converters the retargeting passes (passes/) and the proof (proof/) read, not passes themselves.

`parse_release("1.16")` gives the one TargetRuntime value every command and pass takes (its release, max IR,
opsets, domains and float16 gaps); `opset_adapters.py` converts a model's opset down, loading onnx's schemas
only when a run retargets.
"""

from .ort_targets import DomainLimits, TargetRuntime, as_target, known_releases, parse_release

__all__ = ["DomainLimits", "TargetRuntime", "as_target", "known_releases", "parse_release"]
