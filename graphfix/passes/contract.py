"""The pass contract: what a repair pass is, and the one runner `check`, `repair` and `split` all call.

A pass has a name, the finding codes it may emit and the subject it takes: a merged decoder (a DecoderPass, it
reads the If, the past and present KV) or any ONNX model of an export (a ModelPass: an encoder, a split decoder,
version retargeting). Called on its subject it edits `subject.model` in place and returns one Finding per thing
it repaired; an empty list means there was nothing to do, so running a pipeline on its own output returns nothing.

The runner holds every pass to that contract instead of trusting it: a pass out of scope is not run; a finding
with a code the pass did not declare, a pass that reports nothing but changed the model, or one that reports
findings but changed nothing, is a bug of that pass (PassCrashedError, naming it and the passes before it); any
refusal a pass raises keeps its type and is prefixed with the pass's name.

"Changed" is judged on the serialized skeleton (model_fingerprint: weight payloads stay in the file, but a 6-layer
decoder's structure alone is large, and serializing it after every pass is a measurable share of the fastest path:
`make bench` has the figure). So the emptiness checks run where bugs are hunted:
in the tests (conftest.py sets GRAPHFIX_CHECK_PASSES=1) and under `--debug`; the declared-codes check always runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Final, Literal, Union, overload

from ..errors import GraphfixError, PassCrashedError
from ..findings import CODES, Finding
from ..io import onnx_proto as onnx
from ..model.merged_decoder import MergedDecoder, PlainModel

Scope = Literal["merged decoder", "any model"]
MERGED_DECODER: Final = "merged decoder"
ANY_MODEL: Final = "any model"
Subject = Union[MergedDecoder, PlainModel]
DecoderRepair = Callable[[MergedDecoder], list[Finding]]
ModelRepair = Callable[[Subject], list[Finding]]


# Set (to anything but "0") to have run_passes compare the model before and after each pass.
CHECK_PASSES = "GRAPHFIX_CHECK_PASSES"


def checking_changes() -> bool:
    return os.environ.get(CHECK_PASSES, "0") != "0"


class BrokenContract(AssertionError):
    """What a pass did that its declaration rules out: found by the runner, never raised by a pass."""


@dataclass(frozen=True)
class RepairPass:
    """`requires`: properties of the model (the names below) an earlier pass of the run must have established;
    `ensures`: those this pass establishes. run_passes checks the order against them."""

    name: str
    codes: frozenset[str]
    scope: ClassVar[Scope]
    requires: frozenset[str] = frozenset()
    ensures: frozenset[str] = frozenset()

    def findings_on(self, subject: Subject) -> list[Finding] | None:
        """The pass applied to `subject`; None when `subject` is not one it takes."""
        raise NotImplementedError

    def __call__(self, subject: Subject) -> list[Finding]:
        return run_passes(subject, [self])


@dataclass(frozen=True)
class DecoderPass(RepairPass):
    """A repair of the merged decoder's structure: the If, its branches, the past and present KV."""

    apply: DecoderRepair = field(kw_only=True)
    scope: ClassVar[Scope] = MERGED_DECODER

    def findings_on(self, subject: Subject) -> list[Finding] | None:
        return self.apply(subject) if isinstance(subject, MergedDecoder) else None


@dataclass(frozen=True)
class ModelPass(RepairPass):
    """A repair valid on any model of an export (it reads only `subject.model`)."""

    apply: ModelRepair = field(kw_only=True)
    scope: ClassVar[Scope] = ANY_MODEL

    def findings_on(self, subject: Subject) -> list[Finding] | None:
        return self.apply(subject)


def _documented(codes: tuple[str, ...]) -> frozenset[str]:
    unknown = [code for code in codes if code not in CODES]
    if unknown:
        raise ValueError(f"undocumented finding code {unknown[0]}: add it to findings.CODES")
    return frozenset(codes)


# The properties passes establish for the ones after them (RepairPass.requires / ensures).
ENCODER_KV_PASSED_THROUGH: Final = "the encoder KV presents pass their past through"
SYMBOLIC_DIMS: Final = "batch and sequence dims are symbolic"
FINAL_DIM_NAMES: Final = "dims carry their final names"
ATTRIBUTES_AS_INPUTS: Final = "no attribute that the model's opset takes as an input"


@overload
def repair_pass(*codes: str, scope: Literal["merged decoder"] = ..., name: str | None = ...,
                requires: tuple[str, ...] = ..., ensures: tuple[str, ...] = ...
                ) -> Callable[[DecoderRepair], DecoderPass]: ...


@overload
def repair_pass(*codes: str, scope: Literal["any model"], name: str | None = ..., requires: tuple[str, ...] = ...,
                ensures: tuple[str, ...] = ...) -> Callable[[ModelRepair], ModelPass]:
    ...


def repair_pass(*codes: str, scope: Scope = MERGED_DECODER, name: str | None = None, requires: tuple[str, ...] = (),
                ensures: tuple[str, ...] = ()) -> Callable[[DecoderRepair], DecoderPass] | Callable[[ModelRepair],
                                                                                                   ModelPass]:
    """Declare `f(subject) -> list[Finding]` a pass emitting `codes`: a DecoderPass taking a MergedDecoder, or with
    `scope=ANY_MODEL` a ModelPass taking any Subject; `requires` and `ensures` declare its place in the order."""
    declared = _documented(codes)
    order = {"requires": frozenset(requires), "ensures": frozenset(ensures)}

    def decoder(apply: DecoderRepair) -> DecoderPass:
        return DecoderPass(name=name or apply.__name__, codes=declared, apply=apply, **order)

    def any_model(apply: ModelRepair) -> ModelPass:
        return ModelPass(name=name or apply.__name__, codes=declared, apply=apply, **order)

    return decoder if scope == MERGED_DECODER else any_model


def model_fingerprint(model: onnx.ModelProto) -> bytes:
    """What "the pass changed the model" is judged on: the serialized skeleton (kilobytes; weight payloads are
    markers), so any edit of a node, a value, a tensor or a version shows, and nothing else does."""
    return model.SerializeToString()


def _broken_contract(found: list[Finding], changed: bool | None, repair: RepairPass) -> str | None:
    """What `repair` did against its declaration; `changed` None when the model was not compared."""
    undeclared = sorted({f.code for f in found} - repair.codes)
    if undeclared:
        return f"emitted undeclared code {undeclared[0]}"
    if changed is None:
        return None
    if changed and not found:
        return "reported no finding but changed the model"
    if found and not changed:
        return f"reported {len(found)} finding(s) ({found[0].code}) but changed nothing"
    return None


def order_breach(passes: Sequence[RepairPass], *, complete: bool) -> str | None:
    """Why `passes` cannot run in this order: a pass requires a property that a later pass ensures, or (`complete`:
    a whole pipeline) that no earlier pass ensures. None when the order holds."""
    ensured: set[str] = set()
    for index, repair in enumerate(passes):
        for needed in sorted(repair.requires - ensured):
            later = [p.name for p in passes[index + 1:] if needed in p.ensures]
            if later:
                return f"{repair.name} requires {needed!r}, which {later[0]} ensures only after it"
            if complete:
                return f"{repair.name} requires {needed!r}, which no pass before it ensures"
        ensured |= repair.ensures
    return None


def run_passes(subject: Subject, passes: Sequence[RepairPass], *, check_changes: bool | None = None) -> list[Finding]:
    """Run each pass that applies to `subject`, in order, holding each to the contract; the findings of all.
    `check_changes` (default: GRAPHFIX_CHECK_PASSES) also compares the model before and after each pass. An order
    that breaks a pass's `requires` is graphfix's bug: ValueError, before anything runs."""
    breach = order_breach(passes, complete=False)
    if breach is not None:
        raise ValueError(f"passes out of their declared order: {breach}")
    findings: list[Finding] = []
    ran: list[str] = []
    compare = checking_changes() if check_changes is None else check_changes
    before = model_fingerprint(subject.model) if compare else b""
    for repair in passes:
        try:
            found = repair.findings_on(subject)
        except GraphfixError as err:  # a refusal: the user's model, so keep its type and exit code
            err.with_context(f"{repair.name}: ")
            raise
        except Exception as err:  # a bug in the pass
            raise PassCrashedError(repair.name, ran, err) from err
        if found is None:  # out of its scope
            continue
        after = model_fingerprint(subject.model) if compare else b""
        breach = _broken_contract(found, after != before if compare else None, repair)
        if breach is not None:
            raise PassCrashedError(repair.name, ran, BrokenContract(breach))
        findings += [replace(finding, pass_name=repair.name) for finding in found]
        ran.append(repair.name)
        before = after
    return findings
