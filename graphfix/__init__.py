"""graphfix: repair Optimum merged decoders so any runtime can drive their KV cache."""

from .errors import (BadInputError, GraphfixError, NotAMergedDecoderError, RepairRefusedError,
                     ValidationFailedError)
from .findings import Finding
from .pipeline import CheckResult, RepairResult, check, repair
from .validate import ValidationResult, validate

__version__ = "0.1.0"

__all__ = ["BadInputError", "CheckResult", "Finding", "GraphfixError", "NotAMergedDecoderError",
           "RepairRefusedError", "RepairResult", "ValidationFailedError", "ValidationResult", "__version__",
           "check", "repair", "validate"]
