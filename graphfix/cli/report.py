"""What the text output says: findings grouped by code, validation figures that cannot be misread, one summary line
per command, the next command to run, `explain` and `describe` (the directory table is table.py's).

A model's findings take one line per code whatever its depth: the tensors (or nodes) a code concerns are folded
into a brace pattern (`present.{0..23}.encoder.{key,value}`) and the messages into the code's short summary
(findings.EXPLANATIONS). `--verbose` shows every finding as it is (`str(Finding)`), `--quiet` only the summary
line. JSON output never comes through here: it keeps every change.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..findings import CODES, EXPLANATIONS, Explanation, Finding
from ..signature import PAST, PRESENT
from .app import Verbosity
from .layout import WIDTH, fit, name_patterns, output_width, shortened, value_set, wrapped

if TYPE_CHECKING:
    from ..batch.model_directory import DirectoryRepairResult
    from ..export_contract import Description, TensorContract
    from ..pipeline import CheckResult
    from ..proof.cases import CaseResult
    from ..proof.validation import ValidationResult
    from ..split_decoder import SplitResult
    from ..targets import TargetRuntime

OLDEST_KNOWN = "1.14"  # the oldest release of the measured tables: nothing older to suggest


# --- findings -------------------------------------------------------------------------------------------------------

def summary_of(code: str, findings: Sequence[Finding]) -> str:
    """The code's summary, its `{before}` and `{after}` filled from the findings' fields; one no finding has is
    left out."""
    explanation: Explanation | None = EXPLANATIONS.get(code)
    if explanation is None:
        return CODES.get(code, findings[0].message)
    fields = {}
    for name in ("before", "after"):
        found = list(dict.fromkeys(v for v in (getattr(f, name) for f in findings) if v is not None))
        fields[name] = value_set(found) if found else ""
    text = explanation.summary.format(**fields)
    return " ".join(text.replace("()", "").replace("''", "").split())


def grouped_lines(findings: Sequence[Finding], indent: str = "", width: int | None = None) -> list[str]:
    """One line per code, in the order codes first appear: `GF101 x12  present.{0..5}...: dummy ... -> ...`. The
    patterns are folded for WIDTH columns whatever the output's width; a narrower output (output_width) wraps the
    line between words under its pattern instead of cutting it."""
    width = width or output_width()
    by_code: dict[str, list[Finding]] = {}
    for finding in findings:
        by_code.setdefault(finding.code, []).append(finding)
    lines = []
    for code, group in by_code.items():
        head = f"{indent}{code}" + (f" x{len(group)}" if len(group) > 1 else "")
        head = f"{head:<{len(indent) + 9}}  "
        summary = summary_of(code, group)
        subjects = [s for s in (f.tensor or f.node for f in group) if s]
        if not subjects:
            lines += wrapped(head + summary, width, len(head))
            continue
        budget = max(WIDTH - len(head) - len(summary) - 2, 24)
        lines += wrapped(f"{head}{shortened(name_patterns(subjects), budget)}: {summary}", width, len(head))
    return lines


def change_lines(findings: Sequence[Finding], prefix: str = "") -> list[str]:
    """Every finding as it is: what `--verbose` shows (and what graphfix printed before grouping)."""
    return [f"{prefix}{finding}" for finding in findings]


def findings_lines(findings: Sequence[Finding], verbosity: Verbosity, *, prefix: str = "",
                   indent: str = "") -> list[str]:
    """A model's findings: none when quiet, grouped by code, or every change when verbose."""
    if verbosity is Verbosity.QUIET:
        return []
    return change_lines(findings, prefix) if verbosity is Verbosity.VERBOSE else grouped_lines(findings, indent)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def code_counts(findings: Sequence[Finding]) -> str:
    counts = Counter(finding.code for finding in findings)  # in the order codes first appear
    return ", ".join(f"{code} x{n}" if n > 1 else code for code, n in counts.items())


# --- validation -----------------------------------------------------------------------------------------------------

def tolerance_rule(tolerance: float) -> str:
    return f"tolerance {tolerance:.0e} x max(1, |logits|)"


def _within(diff: float, tolerance: float) -> str:
    """`max diff 6e-08 <= 1e-04`; a diff above the bare tolerance passed only because logits are larger than 1."""
    if diff <= tolerance:  # one digit: the summary line stays within 100 columns whatever the diff
        return f"max diff {diff:.1g} <= {tolerance:.0e}"
    return f"max diff {diff:.2g}, within {tolerance_rule(tolerance)}"


def _steps(n: int) -> str:
    return "no step" if n < 1 else "step 1" if n == 1 else f"steps 1-{n}"


def _failure(case: CaseResult) -> tuple[str, str, str]:
    """(the steps proven, the step that failed, why) of a failed case: never the failed step counted as proven."""
    step, reason = case.failed_step, case.failure or ""
    if step is None:
        return "", "", reason
    if reason.startswith("logits differ"):  # the step ran and its figures are the failing ones
        return f"{_steps(step - 1)} matched", f"step {step}", reason
    proven = f"{_steps(case.steps)} matched, max diff {case.max_abs_diff:.2g}" if case.steps else "no step ran"
    if step <= case.steps:  # every step ran; what the last one returned cannot be fed to the next
        return proven, f"after step {step}", reason
    return proven, f"step {step}", reason


def case_line(case: CaseResult, tolerance: float) -> str:
    """One (batch, source length) case: the steps proven, then the step that failed and why, never mixed up."""
    where = f"  batch {case.batch}, source length {case.source_length}: "
    if case.failure is None and case.original_differs is not None:  # the model's own difference, not the repair's
        return (f"{where}{_steps(case.steps)} match the original driven as Optimum drives it; the original itself "
                f"differs from full recompute by {case.original_differs:.2g}")
    if case.failure is None:
        return (f"{where}{_steps(case.steps)} match full recompute, {_within(case.max_abs_diff, tolerance)}, "
                f"tokens {case.tokens_agree}/{case.tokens_total}")
    proven, step, reason = _failure(case)
    failed = f"FAILED {step}" if step.startswith("after") else f"{step} FAILED" if step else "FAILED"
    return f"{where}{proven + '; ' if proven else ''}{failed}: {reason}"


def validation_lines(result: ValidationResult, reference: str = "--original") -> list[str]:
    lines = [case_line(case, result.tolerance) for case in result.cases]
    if result.original is not None:
        original = result.original
        diff = original.get("max_abs_diff")
        figure = f"max diff {diff:.2g}" if isinstance(diff, (int, float)) else "no figure"
        status = "ok" if not original.get("failure") else f"FAILED: {original['failure']}"
        lines.append(f"  full-recompute logits vs {reference}: {figure}: {status}")
    return lines


def proof_lines(result: ValidationResult | None, title: str, reference: str = "--original") -> list[str]:
    """`title` (which ends in an open parenthesis) with the runtime and tolerance, then the proof case by case."""
    if result is None:
        return []
    return [f"{title}onnxruntime {result.onnxruntime}, {tolerance_rule(result.tolerance)}):",
            *validation_lines(result, reference)]


def first_failure(result: ValidationResult) -> str:
    """`batch 1, source length 5, step 3 (steps 1-2 matched ...): <reason>`: where the proof first broke."""
    for case in result.cases:
        if case.failure is not None:
            proven, step, reason = _failure(case)
            where = f"batch {case.batch}, source length {case.source_length}" + (f", {step}" if step else "")
            return f"{where}{f' ({proven})' if proven else ''}: {reason}"
    return result.first_failure or ""


def proof_phrase(result: ValidationResult, reference: str | None = None) -> str:
    """`proven in onnxruntime 1.32.0 (6 steps, max diff 6e-08 <= 1e-04)`, or where it failed; with
    `reference`, how far full recompute is from that model's logits."""
    if not result.ok:
        return f"FAILED in onnxruntime {result.onnxruntime}: {first_failure(result)}"
    steps = sum(c.steps for c in result.cases)  # every case, every step: the verbose lines show them one by one
    figures = f"{steps} steps, {_within(result.max_abs_diff, result.tolerance)}"
    diff = (result.original or {}).get("max_abs_diff")
    if reference and isinstance(diff, (int, float)):
        figures += f", logits equal {reference}'s" if diff == 0 else f", {diff:.2g} from {reference}'s logits"
    return f"proven in onnxruntime {result.onnxruntime} ({figures})"


def validate_verdict(result: ValidationResult) -> str:
    return f"ok: {proof_phrase(result)}" if result.ok else f"FAILED: {first_failure(result)}"


def release_line(oldest: str | None, target_ort: TargetRuntime | None, *, subject: str = "it",
                 plural: bool = False) -> str:
    """The line after a summary: `it loads in onnxruntime >= 1.18 (older: --target-ort X.Y)`, which runtimes can
    take the output, by graphfix's measured tables, and the flag for an older one when none was given."""
    if oldest is None:
        return f"{subject}: no onnxruntime release in graphfix's tables loads {'them' if plural else 'it'}"
    hint = "" if target_ort is not None or oldest == OLDEST_KNOWN else " (older: --target-ort X.Y)"
    return f"{subject} {'load' if plural else 'loads'} in onnxruntime >= {oldest}{hint}"


def first_use_line(release: str, home: Path) -> str:
    return f"installing onnxruntime {release} into {home} (first use)"


def waiting_line(release: str, home: Path) -> str:
    return f"waiting for another graphfix process installing onnxruntime {release} into {home}"


def repair_summary(output: str, changes: int, validation: ValidationResult | None, loaded_on: str | None,
                   seconds: float, backup: Path | None = None, landed: bool = True) -> str:
    """The one line a repair ends with: what was written, what was proven, in which onnxruntime, how long."""
    if not landed:
        return f"nothing to repair; {output} left as it is; {seconds:.1f} s"
    written = (f"wrote {output}: {changes} change{'s' if changes != 1 else ''}" if changes
               else f"nothing to repair; copied to {output}")
    if validation is not None:
        proven = proof_phrase(validation)
        if loaded_on and loaded_on != validation.onnxruntime:
            proven += f", loads in onnxruntime {loaded_on}"
    elif loaded_on:
        proven = f"loads in onnxruntime {loaded_on} (not decoded: --no-validate)"
    else:
        proven = "not proven (--no-validate)"
    return f"{written}; {proven}; {seconds:.1f} s" + (f" (backup {backup})" if backup else "")


def directory_findings_lines(result: DirectoryRepairResult, verbosity: Verbosity) -> list[str]:
    """Each decoder's findings, under its name when grouped."""
    lines = []
    for model in result.models:
        if verbosity is Verbosity.NORMAL and model.result.changes:
            lines.append(f"{model.path}:")
        lines += findings_lines(model.result.changes, verbosity, prefix=f"{model.path}: ", indent="  ")
    return lines


def directory_summary(result: DirectoryRepairResult, seconds: float) -> str:
    """`repaired IN -> OUT: 2 of 3 merged decoder(s) changed, 5 file(s) linked, 1 copied; 3.2 s`."""
    changed = sum(m.result.changed for m in result.models)
    where = "in place" if result.output == result.input else f"-> {result.output}"
    kinds = (f"{len(result.models)} model(s) ({len(result.models) - len(result.retargeted)} merged decoder(s), "
             f"{len(result.retargeted)} other(s) retargeted)" if result.retargeted
             else f"{len(result.models)} merged decoder(s)")
    return (f"repaired {result.input} {where}: {changed} of {kinds} changed"
            + (f", {len(result.linked)} file(s) linked, {len(result.copied)} copied" if where != "in place" else "")
            + f"; {seconds:.1f} s")


def split_lines(result: SplitResult, verbosity: Verbosity, seconds: float) -> list[str]:
    """The repairs split applied, the proof case by case when verbose, and its summary line."""
    reference = "the merged decoder"
    lines = findings_lines(result.changes, verbosity)
    if verbosity is Verbosity.VERBOSE:
        lines += proof_lines(result.validation, "validation (no-past model, then with-past model fed its presents, "
                             "vs full recompute, ", reference=reference)
    proven = (proof_phrase(result.validation, reference=reference) if result.validation is not None
              else "not proven (--no-validate)")
    return lines + [f"split {result.input} -> {result.decoder}, {result.decoder_with_past}; {proven}; "
                    f"{seconds:.1f} s"]


def validate_lines(result: ValidationResult, verbosity: Verbosity = Verbosity.NORMAL) -> list[str]:
    """A proof case by case, then its verdict; only the verdict when quiet."""
    if verbosity is Verbosity.QUIET:
        return [f"{result.model}: {validate_verdict(result)}"]
    fed = f", fed by {result.encoder}" if result.encoder else ""
    title = f"{result.model}: plain present->past loop vs full recompute{fed} ("
    return [*proof_lines(result, title), validate_verdict(result)]


def check_lines(result: CheckResult, verbosity: Verbosity) -> list[str]:
    """One checked file: its findings under `path: N findings`, or `path: skipped (...)` / `path: ok`."""
    if verbosity is Verbosity.QUIET:
        return []
    path = result.path
    lines = [f"{path}: {_plural(len(result.findings), 'finding')}"] if result.findings and \
        verbosity is Verbosity.NORMAL else []
    lines += findings_lines(result.findings, verbosity, prefix=f"{path}: ", indent="  ")
    if result.skipped:
        lines.append(f"{path}: skipped ({result.skipped})")
    elif not result.findings:
        lines.append(f"{path}: ok")
    return lines


def check_summary(results: Sequence[CheckResult], seconds: float) -> str:
    """`checked 3 files: 2 with findings (GF101 x52, GF103 x2), 1 ok; 0.4 s`."""
    found = [r for r in results if r.findings]
    codes = f" ({code_counts([f for r in found for f in r.findings])})" if found else ""
    counts = [(len(found), f"with findings{codes}"), (sum(r.ok and not r.skipped for r in results), "ok"),
              (sum(bool(r.skipped) for r in results), "skipped"),
              *_error_counts(results)]
    parts = ", ".join(f"{n} {what}" for n, what in counts if n)
    return f"checked {_plural(len(results), 'file')}: {parts or 'none'}; {seconds:.1f} s"


def _error_counts(results: Sequence[CheckResult]) -> list[tuple[int, str]]:
    """`1 unreadable`, `1 not a merged decoder`: errors counted by what they are, in the order they came."""
    kinds = [r.error_kind for r in results if r.error is not None]
    return [(kinds.count(kind), kind) for kind in dict.fromkeys(kinds)]


def next_commands(results: Sequence[CheckResult], paths: Sequence[Path],
                  target_ort: TargetRuntime | None) -> list[str]:
    """After findings, the commands that come next, one a line to copy: the repair of the first path with findings
    (with the same --target-ort) and the explanation of its first code; none when nothing needs repair."""
    found = next((r for r in results if r.findings), None)
    if found is None:
        return []
    given = next((p for p in paths if p == found.path or p in found.path.parents), found.path)
    target = f" --target-ort {target_ort.series}" if target_ort is not None else ""
    return [f"next: graphfix repair{target} {given} OUT", f"next: graphfix explain {found.findings[0].code}"]


# --- explain --------------------------------------------------------------------------------------------------------

def _wrapped(label: str, text: str, width: int = WIDTH) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, initial_indent=f"{label:<11}", subsequent_indent=" " * 11,
                         break_on_hyphens=False, break_long_words=False)


def explain_lines(code: str) -> list[str]:
    explanation = EXPLANATIONS[code]
    lines = [f"{code}: {CODES[code]}", ""]
    for label, text in (("breaks", explanation.breaks), ("written by", explanation.exporters),
                        ("fix", explanation.fix), ("safe", explanation.safe)):
        lines += _wrapped(label, text)
    return lines + _wrapped("example", explanation.example)


def explain_index() -> list[str]:
    return [fit(f"{code}  {title}") for code, title in CODES.items()] + [
        "", "graphfix explain CODE says what breaks, which exporters write it, what the fix does and why it is safe."]


# --- describe --------------------------------------------------------------------------------------------------------

def describe_lines(description: Description) -> list[str]:
    """`graphfix describe`: verdict, tokens, each model's signature in the model's order, then the loop as a step
    table."""
    lines = [f"{description.path}: " + (f"needs repair ({code_counts(description.findings)}): graphfix repair "
                                        f"{description.path} OUT" if description.needs_repair else "no repair needed"),
             f"loads in {description.loads_on}"]
    lines += grouped_lines(description.findings, indent="  ")
    tokens = ", ".join(f"{key} {entry['value']}" for key, entry in description.tokens.items())
    lines.append(f"tokens: {tokens or 'no config.json / generation_config.json beside the model'}")
    lines += [f"warning: {warning}" for warning in description.warnings]
    for model in description.models:
        lines.append(f"{model.path} ({model.kind}; {model.versions}; loads in {model.loads_on}):")
        for direction, tensors in (("in ", model.inputs), ("out", model.outputs)):
            lines += [f"  {direction} {row}" for row in _signature_rows(tensors)]
    for step in description.steps:
        lines.append(f"step {step.steps}:")
        lines += [f"  {feed.input} {feed.dtype} {feed.shape} = {feed.value}" for feed in step.feeds]
        lines.append(f"  then {step.then}")
    return lines


def _dims(tensor: TensorContract) -> str:
    """[batch_size, 4, encoder_sequence_length, 8] (batch, heads, source length, head_dim)."""
    return f"[{', '.join(map(str, tensor.shape))}] ({', '.join(tensor.dims)})"


_LAYER = re.compile(r"^(past_key_values|present)\.(\d+)\.(.+)$")


def _signature_rows(tensors: Sequence[TensorContract]) -> list[str]:
    """`name: dtype dims` per tensor, in the model's order (a binding whose run() is positional, such as Rust ort
    1.16.3, feeds and reads them in exactly this order); each run of KV tensors folded layer by layer."""
    rows: list[str] = []
    run: list[TensorContract] = []
    for tensor in [*tensors, None]:
        if tensor is not None and (PAST.match(tensor.name) or PRESENT.match(tensor.name)):
            run.append(tensor)
            continue
        if run:
            rows += _kv_rows(run)
            run = []
        if tensor is not None:
            rows.append(f"{tensor.name}: {tensor.dtype} {_dims(tensor)}")
    return rows


def _kv_rows(run: list[TensorContract]) -> list[str]:
    """`for each layer N in 0, 1, in this order:` and one row per same-signature span of a layer's tensors, when
    every layer repeats the first one's names and signatures in order; else one row per tensor."""
    matches = [_LAYER.match(t.name) for t in run]
    layers = list(dict.fromkeys(m[2] for m in matches if m))
    width = len(run) // max(len(layers), 1)
    first = run[:width]

    def same_as_first(index: int, tensor: TensorContract) -> bool:
        match, model = matches[index], _LAYER.match(first[index % width].name)
        return bool(match and model and match[1] == model[1] and match[3] == model[3]
                    and match[2] == layers[index // width] and _dims(tensor) == _dims(first[index % width])
                    and tensor.dtype == first[index % width].dtype)

    if not layers or width * len(layers) != len(run) or not all(same_as_first(i, t) for i, t in enumerate(run)):
        return [f"{t.name}: {t.dtype} {_dims(t)}" for t in run]
    spans: list[tuple[str, list[str]]] = []
    for tensor in first:
        match = _LAYER.match(tensor.name)
        assert match is not None
        signature, name = f"{tensor.dtype} {_dims(tensor)}", f"{match[1]}.N.{match[3]}"
        if spans and spans[-1][0] == signature:
            spans[-1][1].append(name)
        else:
            spans.append((signature, [name]))
    rows = [f"for each layer N in {value_set(layers)}, in this order:"]
    return rows + [f"  {pattern}: {signature}" for signature, names in spans for pattern in name_patterns(names)]
