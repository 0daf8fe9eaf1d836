"""graphfix: repair Optimum merged decoders so any runtime can drive their KV cache.

    from graphfix import repair, check, validate, repair_directory, split

Imports are lazy so that `graphfix.decode_loop` runs in environments holding only numpy and onnxruntime.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "repair": "pipeline", "check": "pipeline", "RepairResult": "pipeline", "CheckResult": "pipeline",
    "validate": "validation", "ValidationResult": "validation", "Finding": "findings",
    "GraphfixError": "errors", "BadInputError": "errors", "NotAMergedDecoderError": "errors",
    "RepairRefusedError": "errors", "ValidationFailedError": "errors",
    "repair_directory": "model_directory", "DirectoryRepairResult": "model_directory", "ModelRepair": "model_directory",
    "find_merged_decoders": "layouts", "split": "split_decoder", "SplitResult": "split_decoder",
    "validate_split": "split_validation", "CaseResult": "decode_cases",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'graphfix' has no attribute {name!r}")
