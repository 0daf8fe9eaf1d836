"""graphfix: repair Optimum merged decoders so any runtime can drive their KV cache.

    from graphfix import repair, check, validate, repair_directory, split

Imports are lazy: `graphfix.proof.client_loop` runs in environments holding only numpy and onnxruntime, and a
command imports only the stages it runs. The package tree is the pipeline: io/ (read, write, stage, land),
model/ (graph walks, finding the merged decoder), passes/ (the repairs), targets/ (the onnxruntime releases: tables
and opset converters), proof/ (the gates, the client loop, validation, isolated runtimes), batch/ (directories,
layouts, split), cli/ (commands, progress).
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "repair": "pipeline", "check": "pipeline", "RepairResult": "pipeline", "CheckResult": "pipeline",
    "validate": "proof.validation", "ValidationResult": "proof.validation", "Finding": "findings",
    "GraphfixError": "errors", "BadInputError": "errors", "NotAMergedDecoderError": "errors",
    "RepairRefusedError": "errors", "ValidationFailedError": "errors", "PassCrashedError": "errors",
    "repair_directory": "batch.model_directory", "DirectoryRepairResult": "batch.model_directory",
    "ModelRepair": "batch.model_directory", "find_merged_decoders": "batch.layouts", "split": "batch.split",
    "SplitResult": "batch.split", "validate_split": "proof.validation", "CaseResult": "proof.cases",
    "RepairOptions": "options", "TargetRuntime": "targets", "parse_release": "targets",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'graphfix' has no attribute {name!r}")
