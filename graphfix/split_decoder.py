"""Split a merged decoder into `decoder_model.onnx` and `decoder_with_past_model.onnx`, for runtimes and compilers
without `If` support (and for clients written against Optimum's older two-file layout).

Each branch of the `If` becomes a model of its own: its graph inputs are the outer inputs the branch reads, its
outputs are the `If`'s outputs, and the outer initializers it reads are copied in, each once per file. The repair
passes run first, so the with-past model already passes the encoder KV through. Both files are written into a
staging directory, proven by the same gates as a repair (proof/gates.py: the checker, the split pair's decode loop, the
load on a --target-ort release), and only then renamed into place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInputError, NotAMergedDecoderError
from .findings import Finding
from .io import onnx_proto as onnx
from .io.read import read_model
from .io.write import check_output_directory, write_models
from .model.graph import ancestors, outer_reads, producers
from .model.merged_decoder import MergedDecoder
from .options import RepairOptions
from .pipeline import find_and_fix
from .proof.gates import Evidence, SplitDecodeGate, proof_gates
from .proof.validation import ValidationResult

DECODER = "decoder_model.onnx"
DECODER_WITH_PAST = "decoder_with_past_model.onnx"


@dataclass
class SplitResult:
    input: Path
    decoder: Path
    decoder_with_past: Path
    changes: list[Finding] = field(default_factory=list)  # the repairs applied before splitting
    validation: ValidationResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"input": str(self.input), "decoder": str(self.decoder),
                "decoder_with_past": str(self.decoder_with_past),
                "changes": [c.to_dict() for c in self.changes],
                "validation": self.validation.to_dict() if self.validation else None}


def branch_model(decoder: MergedDecoder, branch: onnx.GraphProto, name: str) -> onnx.ModelProto:
    """`branch` as a model of its own, reading the merged model's inputs and initializers directly."""
    main = decoder.model.graph
    reads = outer_reads(branch)
    # Values the branch reads from main-graph nodes (quantize_dynamic's DynamicQuantizeLinear on
    # encoder_hidden_states, ahead of the If) come along: those nodes, and what they read in turn.
    made_by = producers(main)
    carried: list[onnx.NodeProto] = []
    for needed in sorted(name for name in reads if name in made_by):
        if made_by[needed] is decoder.if_node or made_by[needed].op_type == "If":
            raise NotAMergedDecoderError(f"not a merged decoder graphfix can split: the branch reads "
                                         f"{needed!r}, an output of an If")
        names, nodes = ancestors(main, needed, made_by)
        reads |= names
        carried += [node for node in nodes if all(node is not c for c in carried)]
    order = {id(node): index for index, node in enumerate(main.node)}
    carried.sort(key=lambda node: order[id(node)])

    graph = onnx.GraphProto(name=name, doc_string=branch.doc_string)
    graph.input.extend(v for v in main.input if v.name in reads)
    graph.initializer.extend(t for t in main.initializer if t.name in reads)
    graph.sparse_initializer.extend(t for t in main.sparse_initializer if t.values.name in reads)
    graph.initializer.extend(branch.initializer)
    graph.node.extend(carried)
    graph.node.extend(branch.node)
    unknown = reads - {v.name for v in graph.input} - {t.name for t in graph.initializer} - \
        {t.values.name for t in graph.sparse_initializer} - {o for node in carried for o in node.output}
    if unknown:
        raise NotAMergedDecoderError(f"not a merged decoder graphfix can split: the branch reads "
                                     f"{sorted(unknown)[0]!r}, which is neither a graph input nor an initializer")

    declared = {v.name: v for v in main.output}
    for if_output, branch_output in zip(decoder.if_node.output, branch.output):
        if if_output not in declared:
            continue  # an If output the merged model does not expose
        if branch_output.name != if_output:
            graph.node.append(onnx.make_node("Identity", [branch_output.name], [if_output],
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


def split(source: str | os.PathLike[str], out_dir: str | os.PathLike[str], options: RepairOptions | None = None,
          **keywords: object) -> SplitResult:
    """Write `decoder_model.onnx` and `decoder_with_past_model.onnx` from the merged decoder at `source` into
    `out_dir` (created if missing; existing files of those names are replaced), as `options` say (keywords change
    single fields, e.g. `validate=False`, `ort_version="1.16"`: the release the proof runs in). Raises
    NotAMergedDecoderError on any other model and ValidationFailedError when the pair does not decode like full
    recompute; writes nothing then. With a target, both files are retargeted for it and loaded in it."""
    options = (options or RepairOptions()).but(**keywords)
    source, out_dir = Path(source), Path(out_dir)
    loaded = read_model(source)
    decoder, changes = find_and_fix(loaded, options.target_ort, infer_types=options.validate)
    assert isinstance(decoder, MergedDecoder)
    models = {out_dir / DECODER: branch_model(decoder, decoder.no_cache_branch, "decoder"),
              out_dir / DECODER_WITH_PAST: branch_model(decoder, decoder.cache_branch, "decoder_with_past")}
    check_output_directory(out_dir, must_be_empty=False)
    result = SplitResult(input=source, decoder=out_dir / DECODER, decoder_with_past=out_dir / DECODER_WITH_PAST,
                         changes=changes)
    evidence = Evidence()
    decode = SplitDecodeGate(result.decoder, result.decoder_with_past, merged=source, shown_as=out_dir,
                             runtime=options.proof_runtime, evidence=evidence)
    outputs: dict[Path, onnx.ModelProto | None] = dict(models)
    gates = proof_gates(options, loaded, outputs, decode, evidence)
    created = not out_dir.exists()
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as err:
        raise BadInputError(f"cannot create {out_dir}: {err.strerror}") from None
    try:
        write_models(outputs, loaded, gates, data_mode=options.data_mode)
    except BaseException:
        if created:
            try:
                out_dir.rmdir()  # only while still empty: a Ctrl-C held through the renames keeps the output
            except OSError:
                pass
        raise
    result.validation = evidence.validation
    return result
