"""The pass contract: what a repair pass is, and the one runner `check`, `repair` and `split` all call.

A pass has a name, the finding codes it may emit and a scope: a merged decoder (it reads the If, the past and
present KV) or any ONNX model of an export (an encoder, a split decoder: version retargeting). Called on its
subject it edits `subject.model` in place and returns one Finding per thing it repaired; an empty list means there
was nothing to do, so running a pipeline on its own output returns nothing (tested pass by pass).

The runner holds passes to that contract: a pass out of scope is not run, a finding with a code the pass did not
declare is a bug, and any error a pass raises names the pass (and, for a crash, the passes that ran before it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Union

from ..errors import GraphfixError, PassCrashedError
from ..findings import CODES, Finding
from ..model.merged_decoder import MergedDecoder, PlainModel

Scope = Literal["merged decoder", "any model"]
MERGED_DECODER: Scope = "merged decoder"
ANY_MODEL: Scope = "any model"
Subject = Union[MergedDecoder, PlainModel]


@dataclass(frozen=True)
class RepairPass:
    name: str
    codes: frozenset[str]
    scope: Scope
    apply: Callable[..., list[Finding]]

    def applies_to(self, subject: Subject) -> bool:
        return self.scope == ANY_MODEL or isinstance(subject, MergedDecoder)

    def __call__(self, subject: Subject) -> list[Finding]:
        return run_passes(subject, [self])


def repair_pass(*codes: str, scope: Scope = MERGED_DECODER,
                name: str | None = None) -> Callable[[Callable[..., list[Finding]]], RepairPass]:
    """Declare a function `f(subject) -> list[Finding]` a pass emitting `codes`."""
    unknown = [code for code in codes if code not in CODES]
    if unknown:
        raise ValueError(f"undocumented finding code {unknown[0]}: add it to findings.CODES")

    def declare(apply: Callable[..., list[Finding]]) -> RepairPass:
        return RepairPass(name=name or apply.__name__, codes=frozenset(codes), scope=scope, apply=apply)

    return declare


def run_passes(subject: Subject, passes: Sequence[RepairPass]) -> list[Finding]:
    """Run each pass that applies to `subject`, in order; the findings of all of them."""
    findings: list[Finding] = []
    ran: list[str] = []
    for repair in passes:
        if not repair.applies_to(subject):
            continue
        try:
            found = repair.apply(subject)
        except GraphfixError as err:  # a refusal: the user's model, so keep its type and exit code
            err.args = (f"{repair.name}: {err.args[0]}" if err.args else repair.name, *err.args[1:])
            raise
        except Exception as err:  # a bug in the pass
            raise PassCrashedError(repair.name, ran, err) from err
        undeclared = sorted({f.code for f in found} - repair.codes)
        if undeclared:
            raise PassCrashedError(repair.name, ran, AssertionError(f"emitted undeclared code {undeclared[0]}"))
        findings += found
        ran.append(repair.name)
    return findings
