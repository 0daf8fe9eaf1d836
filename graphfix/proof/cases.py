"""What one decode-loop proof runs and reports, shared by the host (validation.py) and the client loop running in
another onnxruntime (client_loop.py): the request that crosses the process boundary and the figures that come back.
Standard library only: runtimes.py carries this file into the isolated interpreter, and reading results never
imports numpy."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Union

# The fewest that catch what the proof exists to catch (tests/proof/test_proof_cases.py holds a broken model for each):
# step 3 is the first fed presents the cache branch made (dummy encoder KV of the right shape breaks there); a
# batch above 1 catches a batch-dim bug (rows mixed up); two source lengths catch an encoder length baked into the
# graph. The cases go in pairs, (1, 5) and (3, 11), not as every combination: each pair covers one of each.
STEPS = 3
BATCHES = (1, 3)
SOURCE_LENGTHS = (5, 11)
# A dimension of an encoder input that grows with the proof's source length (audio frames, text tokens).
SOURCE = "source"
Dim = Union[int, str]  # an int, or SOURCE


@dataclass
class CaseResult:
    batch: int
    source_length: int
    steps: int = 0  # steps that ran
    max_abs_diff: float = 0.0
    tokens_agree: int = 0
    tokens_total: int = 0
    failure: str | None = None  # why the case failed, at failed_step
    failed_step: int | None = None
    # The loop differed from full recompute by this much, but equals the original model driven as Optimum drives
    # it: the original itself differs from full recompute (static QDQ int8 exports do), the repair does not.
    original_differs: float | None = None


@dataclass(frozen=True)
class EncoderFeeds:
    """The sizes the export says its encoder's inputs have (encoder_inputs.py reads them on the host): per input,
    its dims after the batch (ints, or SOURCE), and where each came from, for messages."""

    shapes: dict[str, list[Dim]] = field(default_factory=dict)
    vocab: int | None = None  # rows of the encoder's own token embedding, when it takes input_ids
    said_by: dict[str, str] = field(default_factory=dict)  # input -> what gave its sizes


@dataclass(frozen=True)
class ProofRequest:
    """One decode-loop proof, as the host asks it and the child process (client_loop.main, possibly inside another
    onnxruntime release) reads it: the same names on both sides, through to_json / from_json."""

    model: str  # the model under proof: it runs step 1 and full recompute
    model_with_past: str  # the model for every later step, fed the presents (`model` itself for a merged decoder)
    tolerance: float
    reference: str | None = None  # the model whose full recompute `model`'s must equal (the unrepaired original)
    judge: str | None = None  # the unrepaired merged decoder that judges a divergence from full recompute
    encoder: str | None = None  # the export's encoder, whose output feeds the decoder instead of synthesized states
    encoder_feeds: EncoderFeeds | None = None  # the sizes of `encoder`'s inputs, from the export
    release: str | None = None  # the onnxruntime release it must run in (None: whichever the child has)
    steps: int = STEPS
    batches: tuple[int, ...] = BATCHES
    source_lengths: tuple[int, ...] = SOURCE_LENGTHS
    seed: int = 0
    pairwise: bool = False  # the i-th batch with the i-th source length (the default proof), not every combination
    # The split pair (decoder_model.onnx, decoder_with_past_model.onnx) the model under proof was merged from: the
    # loop's logits must equal the pair's, driven as Optimum drives a pair, at every step.
    pair: tuple[str, str] | None = None

    def to_json(self) -> str:
        return json.dumps({"proof": asdict(self)})

    @classmethod
    def from_json(cls, fields: dict[str, Any]) -> ProofRequest:
        feeds = fields.get("encoder_feeds")
        return cls(**{**fields, "batches": tuple(fields["batches"]), "source_lengths": tuple(fields["source_lengths"]),
                      "encoder_feeds": EncoderFeeds(**feeds) if feeds is not None else None,
                      "pair": tuple(fields["pair"]) if fields.get("pair") else None})


@dataclass(frozen=True)
class LoadRequest:
    """Only load `model` in the child's onnxruntime (a model with no decode loop of its own: an encoder)."""

    model: str
    release: str | None = None

    def to_json(self) -> str:
        return json.dumps({"load": asdict(self)})


Request = Union[ProofRequest, LoadRequest]


def request_from_json(text: str) -> Request:
    """The request `to_json` wrote, of either kind."""
    document: dict[str, dict[str, Any]] = json.loads(text)
    if "load" in document:
        return LoadRequest(**document["load"])
    return ProofRequest.from_json(document["proof"])
