"""Typed errors. The CLI maps `exit_code` to the process exit status; the library never exits or prints."""

from __future__ import annotations

import errno
import re
from typing import Any, TypeVar

# OSErrors that are the machine's limit (ulimit -v, ulimit -n), not the path's fault: never reworded as bad input,
# so that the CLI says what ran out.
EXHAUSTED_ERRNOS = frozenset({errno.ENOMEM, errno.EMFILE, errno.ENFILE})


# How onnxruntime's own message starts when it could not allocate: C++'s std::bad_alloc (GCC's and MSVC's
# what()) or its arena's words, after ORT's header, the file it was loading and the stage it caught them in. A user's
# words come before ORT's own: the path ("Load model from PATH failed:", up to the last " failed:") and a node's
# name ("... running X node. Name:'...' Status Message: ", up to the last "Status Message: ").
_ORT_ALLOCATION_FAILED = ("std::bad_alloc", "bad allocation", "Failed to allocate memory")
_ORT_PREAMBLE = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (?:Load model from .* failed:)?"
                           r"(?:Exception during (?:loading|initialization): |Failed to load model with error: )?",
                           re.DOTALL)
_ORT_SOURCE_LOCATION = re.compile(r"^\S+\.(?:cc|h):\d+ [^()]*\([^()]*\) ")


def is_out_of_memory(err: BaseException) -> bool:
    """Memory ran out: MemoryError (pybind11 turns a C++ std::bad_alloc into one too), errno ENOMEM, or
    onnxruntime's own exception whose message starts with an allocation failure. Decided by the error's type, errno
    and the start of the runtime's own text, never by a word found elsewhere: a file or node name may say anything."""
    if isinstance(err, MemoryError):
        return True
    if isinstance(err, OSError):
        return err.errno == errno.ENOMEM
    if not type(err).__module__.startswith("onnxruntime"):
        return False
    text = _ORT_PREAMBLE.sub("", str(err).strip())
    text = _ORT_SOURCE_LOCATION.sub("", text.rpartition("Status Message: ")[2])
    return text.startswith(_ORT_ALLOCATION_FAILED)


def raise_if_exhausted(err: OSError) -> None:
    """Called first in an `except OSError` that turns errors into BadInputError."""
    if err.errno in EXHAUSTED_ERRNOS:
        raise err


def one_line(text: str, limit: int | None = 300) -> str:
    """An error's text (onnx's, onnxruntime's, a bug's) as one line, of at most `limit` characters."""
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def exhausted_message(err: BaseException) -> str | None:
    """`out of memory (what ran out of it); the remedy` when `err` is the machine's limit (memory, or file
    descriptors: EMFILE, ENFILE) rather than the input's fault or graphfix's bug; else None."""
    if is_out_of_memory(err):
        what, remedy = "out of memory", "raise the memory limit (ulimit -v) or free memory"
    elif isinstance(err, OSError) and err.errno in EXHAUSTED_ERRNOS:
        what, remedy = "too many open files", "raise the limit (ulimit -n) or use fewer --jobs"
    else:
        return None
    detail = (errno.errorcode.get(err.errno or 0, "") if isinstance(err, OSError)
              else one_line(str(err), limit=200))  # what ran out of it: the proof, onnxruntime's words
    return f"{what}{f' ({detail})' if detail else ''}; {remedy}"


def import_failure(err: ImportError) -> str:
    """`cannot import MODULE: the loader's reason`, from the first ImportError of the chain (numpy re-raises its
    extension's failure inside a page of advice)."""
    first: BaseException = err
    while isinstance(first.__cause__ or first.__context__, ImportError):
        first = first.__cause__ or first.__context__  # type: ignore[assignment]
    name = getattr(first, "name", None) or err.name or "a module"
    return f"cannot import {name}: {one_line(str(first))}"


def failure_line(err: BaseException, rerun: str = "rerun with --debug") -> tuple[str, int]:
    """The one line and exit code of an error that ends a repair, the command line's and each folder's of a tree
    alike (interruptions and usage errors are the CLI's own)."""
    if isinstance(err, GraphfixError):
        return str(err), err.exit_code
    if (exhausted := exhausted_message(err)) is not None:  # the machine's limit: nothing was written
        return exhausted, 2
    if isinstance(err, ImportError):  # a dependency that cannot load: a broken install, a library the loader
        return import_failure(err), 2  # cannot map (a noexec mount, an address-space limit); not graphfix's bug
    # a bug, not the user's fault, but still one line and no partial output (writes are atomic)
    return f"unexpected {type(err).__name__}: {one_line(str(err))} ({rerun} for the traceback)", 2


E = TypeVar("E", bound="GraphfixError")


class GraphfixError(Exception):
    """Base class: `str(err)` is the one-line message shown after `error: `."""

    exit_code = 2

    def with_context(self: E, prefix: str = "", suffix: str = "") -> E:
        """The same error (type, exit code, the figures it carries) saying where it happened: `prefix` before its
        message (which decoder of a directory, which pass), `suffix` after it (what was done about it)."""
        message = str(self.args[0]) if self.args else ""
        self.args = (f"{prefix}{message}{suffix}", *self.args[1:])
        return self


class BadInputError(GraphfixError):
    """The input (or output location) is unusable: missing, empty, not ONNX, unsafe, unwritable. Exit 2."""


class NotAMergedDecoderError(BadInputError):
    """Valid ONNX, but not an Optimum-style merged decoder graphfix can reason about. Exit 2."""


class RepairRefusedError(GraphfixError):
    """A merged decoder whose repair would be a guess (ambiguous or incomplete past/present mapping). Exit 2."""


class ValidationFailedError(GraphfixError):
    """The written model did not decode like full recompute; nothing was put in place. Exit 1."""

    exit_code = 1

    def __init__(self, message: str, validation: Any = None):  # a ValidationResult: errors import nothing
        super().__init__(message)
        self.validation = validation


class PassCrashedError(GraphfixError):
    """A repair pass failed in a way that is graphfix's bug, not the model's. Exit 2; the message names the pass."""

    def __init__(self, pass_name: str, ran_before: list[str], cause: BaseException):
        before = f" (after {', '.join(ran_before)})" if ran_before else ""
        # "unexpected" is the CLI's label for a bug (the fuzz tests look for it)
        super().__init__(f"unexpected {type(cause).__name__} in pass {pass_name}{before}: "
                         f"{one_line(str(cause))} (rerun with --debug for the traceback)")
        self.pass_name = pass_name
