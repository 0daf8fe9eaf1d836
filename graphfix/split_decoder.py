"""Split a merged decoder into `decoder_model.onnx` and `decoder_with_past_model.onnx`, for runtimes and compilers
without `If` support (and for clients written against Optimum's older two-file layout).

Each branch of the `If` becomes a model of its own: its graph inputs are the outer inputs the branch reads, its
outputs are the `If`'s outputs, and the outer initializers it reads are copied in, each once per file. The repair
passes run first, so the with-past model already passes the encoder KV through. Both files are written into a
staging directory, proven by the split-pair decode loop (split_validation.py), and only then renamed into place.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from .errors import BadInputError, NotAMergedDecoderError, ValidationFailedError
from .findings import Finding
from .interrupts import held_for_main_thread
from .merged_decoder import MergedDecoder, find_merged_decoder, node_reads
from .modelfile import read_model, staging_directory, write_model
from .passes import PIPELINE
from .pipeline import _checker_passes
from .split_validation import validate_split
from .validation import ValidationResult

DECODER = "decoder_model.onnx"
DECODER_WITH_PAST = "decoder_with_past_model.onnx"


@dataclass
class SplitResult:
    input: Path
    decoder: Path
    decoder_with_past: Path
    changes: list[Finding] = field(default_factory=list)  # the repairs applied before splitting
    validation: ValidationResult | None = None

    def to_dict(self) -> dict:
        return {"input": str(self.input), "decoder": str(self.decoder), "decoder_with_past": str(self.decoder_with_past),
                "changes": [c.to_dict() for c in self.changes],
                "validation": self.validation.to_dict() if self.validation else None}


def _graph_names(graph: onnx.GraphProto) -> set[str]:
    """Every name defined inside `graph`, nested subgraphs included."""
    names = {t.name for t in graph.initializer} | {v.name for v in graph.input}
    for node in graph.node:
        names.update(o for o in node.output if o)
        for attr in node.attribute:
            for inner in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                names |= _graph_names(inner)
    return names


def branch_model(decoder: MergedDecoder, branch: onnx.GraphProto, name: str) -> onnx.ModelProto:
    """`branch` as a model of its own, reading the merged model's inputs and initializers directly."""
    main = decoder.model.graph
    local = _graph_names(branch)
    reads = {read for node in branch.node for read in node_reads(node)} - local
    outer_reads = reads | {o.name for o in branch.output if o.name not in local}

    graph = onnx.GraphProto(name=name, doc_string=branch.doc_string)
    graph.input.extend(v for v in main.input if v.name in outer_reads)
    graph.initializer.extend(t for t in main.initializer if t.name in outer_reads)
    graph.sparse_initializer.extend(t for t in main.sparse_initializer if t.values.name in outer_reads)
    graph.initializer.extend(branch.initializer)
    graph.node.extend(branch.node)
    unknown = outer_reads - {v.name for v in graph.input} - {t.name for t in graph.initializer} - \
        {t.values.name for t in graph.sparse_initializer}
    if unknown:
        # e.g. a value computed by a main-graph node: Optimum's merge never makes one, so refuse rather than guess
        raise NotAMergedDecoderError(f"not a merged decoder graphfix can split: the branch reads {sorted(unknown)[0]!r}, "
                                     "which is neither a graph input nor an initializer")

    declared = {v.name: v for v in main.output}
    for if_output, branch_output in zip(decoder.if_node.output, branch.output):
        if if_output not in declared:
            continue  # an If output the merged model does not expose
        if branch_output.name != if_output:
            graph.node.append(onnx.helper.make_node("Identity", [branch_output.name], [if_output],
                                                    name=f"{if_output}_from_branch"))
        output = graph.output.add()
        output.CopyFrom(branch_output)
        output.name = if_output
    if {o.name for o in graph.output} != set(declared):
        raise NotAMergedDecoderError("not a merged decoder graphfix can split: its outputs are not the If's outputs")
    graph.value_info.extend(branch.value_info)

    model = onnx.ModelProto()
    model.CopyFrom(decoder.model)
    model.graph.CopyFrom(graph)
    return model


def split(source: str | os.PathLike, out_dir: str | os.PathLike, *, run_validation: bool = True,
          data_mode: str = "clone") -> SplitResult:
    """Write `decoder_model.onnx` and `decoder_with_past_model.onnx` from the merged decoder at `source` into
    `out_dir` (created if missing; existing files of those names are replaced). Raises NotAMergedDecoderError on
    any other model and ValidationFailedError when the pair does not decode like full recompute; writes nothing
    then."""
    source, out_dir = Path(source), Path(out_dir)
    loaded = read_model(source)
    decoder = find_merged_decoder(loaded.model)
    changes = [finding for repair_pass in PIPELINE for finding in repair_pass(decoder)]
    models = {DECODER: branch_model(decoder, decoder.no_cache_branch, "decoder"),
              DECODER_WITH_PAST: branch_model(decoder, decoder.cache_branch, "decoder_with_past")}

    created = not out_dir.exists()
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"output {out_dir} is not a directory")
    if created and not (out_dir.parent if str(out_dir.parent) else Path(".")).is_dir():
        raise BadInputError(f"output directory {out_dir.parent} does not exist")
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as err:
        raise BadInputError(f"cannot create {out_dir}: {err.strerror}") from None
    try:
        with staging_directory(out_dir, "split") as staging:
            for name, model in models.items():
                write_model(model, staging / name, loaded, data_mode=data_mode)
            result = SplitResult(input=source, decoder=out_dir / DECODER,
                                 decoder_with_past=out_dir / DECODER_WITH_PAST, changes=changes)
            if run_validation:
                if _checker_passes(source):
                    for name in models:
                        try:
                            onnx.checker.check_model(os.fspath(staging / name), full_check=True)
                        except Exception as err:  # onnx's several error types all mean "did not pass"
                            raise ValidationFailedError(
                                f"{name} fails onnx.checker: {' '.join(str(err).split())}") from None
                result.validation = validate_split(staging / DECODER, staging / DECODER_WITH_PAST, merged=source)
                result.validation.model = str(out_dir)
                if not result.validation.ok:
                    raise ValidationFailedError(f"split decoders do not decode like full recompute: "
                                                f"{result.validation.first_failure}", result.validation)
            staged = sorted(staging.iterdir(), key=lambda p: p.suffix == ".onnx")  # data files first, models last
            with held_for_main_thread():  # all of them or, on Ctrl-C before this, none
                for path in staged:
                    os.replace(path, out_dir / path.name)
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return result
