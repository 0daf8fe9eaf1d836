"""Typed errors. The CLI maps `exit_code` to the process exit status; the library never exits or prints."""

from __future__ import annotations


class GraphfixError(Exception):
    """Base class: `str(err)` is the one-line message shown after `error: `."""

    exit_code = 2


class BadInputError(GraphfixError):
    """The input (or output location) is unusable: missing, empty, not ONNX, unsafe, unwritable. Exit 2."""


class NotAMergedDecoderError(BadInputError):
    """Valid ONNX, but not an Optimum-style merged decoder graphfix can reason about. Exit 2."""


class RepairRefusedError(GraphfixError):
    """A merged decoder whose repair would be a guess (ambiguous or incomplete past/present mapping). Exit 2."""


class ValidationFailedError(GraphfixError):
    """The written model did not decode like full recompute; nothing was put in place. Exit 1."""

    exit_code = 1

    def __init__(self, message: str, validation=None):
        super().__init__(message)
        self.validation = validation
