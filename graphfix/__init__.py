"""graphfix: repair Optimum merged decoders so any runtime can drive their KV cache.

    from graphfix import repair, check, validate, describe, repair_directory, repair_tree, split

Imports are lazy: `graphfix.proof.client_loop` runs in environments holding only numpy and onnxruntime, and a
command imports only the stages it runs. The package tree is the pipeline: io/ (read, write, stage, land),
model/ (graph walks, finding the merged decoder), passes/ (the repairs), targets/ (the onnxruntime releases: tables
and opset converters), proof/ (the gates, the client loop, validation, isolated runtimes), batch/ (directories,
layouts, split), cli/ (commands, progress).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it from here

# name -> the module (relative to graphfix) that defines it, imported on first use
_EXPORTS = {
    "repair": "pipeline", "check": "pipeline", "RepairResult": "pipeline", "CheckResult": "pipeline",
    "validate": "proof.validation", "ValidationResult": "proof.validation", "Finding": "findings",
    "GraphfixError": "errors", "BadInputError": "errors", "NotAMergedDecoderError": "errors",
    "RepairRefusedError": "errors", "ValidationFailedError": "errors", "PassCrashedError": "errors",
    "repair_directory": "batch.model_directory", "DirectoryRepairResult": "batch.model_directory",
    "repair_tree": "batch.tree", "TreeRepairResult": "batch.tree", "ModelOutcome": "batch.tree",
    "ModelRepair": "batch.model_directory", "find_merged_decoders": "batch.layouts", "split": "split_decoder",
    "SplitResult": "split_decoder", "validate_split": "proof.validation", "CaseResult": "proof.cases",
    "describe": "export_contract", "Description": "export_contract",
    "RepairOptions": "options", "TargetRuntime": "targets", "parse_release": "targets",
}
# Spelled out so that linters and type checkers read it; a test keeps it equal to _EXPORTS.
__all__ = [
    "BadInputError", "CaseResult", "CheckResult", "Description", "DirectoryRepairResult", "Finding", "GraphfixError",
    "ModelOutcome", "ModelRepair", "NotAMergedDecoderError", "PassCrashedError", "RepairOptions", "RepairRefusedError",
    "RepairResult", "SplitResult", "TargetRuntime", "TreeRepairResult", "ValidationFailedError", "ValidationResult",
    "__version__", "check", "describe", "find_merged_decoders", "parse_release", "repair", "repair_directory",
    "repair_tree", "split", "validate", "validate_split",
]

if TYPE_CHECKING:  # what type checkers see: the real signatures, not Any (kept equal to _EXPORTS by a test)
    from .batch.layouts import find_merged_decoders
    from .batch.model_directory import DirectoryRepairResult, ModelRepair, repair_directory
    from .batch.tree import ModelOutcome, TreeRepairResult, repair_tree
    from .errors import (
        BadInputError,
        GraphfixError,
        NotAMergedDecoderError,
        PassCrashedError,
        RepairRefusedError,
        ValidationFailedError,
    )
    from .export_contract import Description, describe
    from .findings import Finding
    from .options import RepairOptions
    from .pipeline import CheckResult, RepairResult, check, repair
    from .proof.cases import CaseResult
    from .proof.validation import ValidationResult, validate, validate_split
    from .split_decoder import SplitResult, split
    from .targets import TargetRuntime, parse_release


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'graphfix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(__all__) | {"__doc__", "__file__", "__name__", "__path__"})
