"""The decode-loop proof for a split pair (`decoder_model.onnx` + `decoder_with_past_model.onnx`).

A client of the two-file layout runs the no-past model at step 1 and the with-past model afterwards, feeding every
`present.*` back as `past_key_values.*`. At every step its logits must equal full recompute (the no-past model
over the whole prefix) and, given the merged decoder the pair came from, that model's full recompute too: the
split must not change a single number of the no-cache path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .decode_loop import _NUMPY, BATCHES, SOURCE_LENGTHS, STEPS, CaseResult, _one_line, _prefix, _session
from .errors import BadInputError
from .modelfile import read_model
from .signature import CACHE_FLAG, PAST, PRESENT
from .validation import ValidationResult, _tolerance


class _Model:
    def __init__(self, path: str | os.PathLike):
        self.name = os.path.basename(path)
        self.session = _session(os.fspath(path))
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        if "logits" not in self.outputs or "input_ids" not in self.inputs:
            raise BadInputError(f"{self.name} is not a seq2seq decoder (needs input_ids and logits)")

    def run(self, tokens: np.ndarray, encoder: dict, past: dict | None = None, past_length: int = 0) -> dict:
        feeds = {**encoder, "input_ids": tokens, **(past or {})}
        if CACHE_FLAG in self.inputs:  # the merged decoder, always on its no-cache path here
            feeds[CACHE_FLAG] = np.array([False])
            for name in (n for n in self.inputs if PAST.match(n)):
                spec = self.inputs[name]
                dims = [d if isinstance(d, int) else 1 for d in spec.shape]
                feeds[name] = np.zeros((tokens.shape[0], dims[1], 0, dims[3]), dtype=_NUMPY[spec.type])
        if "cache_position" in self.inputs:
            feeds["cache_position"] = np.arange(past_length, past_length + tokens.shape[1], dtype=np.int64)
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise BadInputError(f"cannot synthesize a value for input {missing[0]!r} of {self.name}")
        feeds = {k: v for k, v in feeds.items() if k in self.inputs}
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds)))

    def accepts(self, batch: int, source_length: int) -> bool:
        """False where the signature fixes the batch or source length to other sizes (a fixed-shape export, whose
        split pair graphfix has made dynamic): there is nothing to compare with."""
        wanted = {"input_ids": (batch,), "encoder_hidden_states": (batch, source_length),
                  "encoder_attention_mask": (batch, source_length)}
        return all(not isinstance(dim, int) or dim == size
                   for name, sizes in wanted.items() if name in self.inputs
                   for dim, size in zip(self.inputs[name].shape, sizes))


def _encoder_inputs(no_past: _Model, rng: np.random.Generator, batch: int, source_length: int) -> dict:
    hidden = no_past.inputs.get("encoder_hidden_states")
    if hidden is None or not isinstance(hidden.shape[-1], int):
        raise BadInputError(f"{no_past.name} has no encoder_hidden_states with a static hidden size")
    mask = np.ones((batch, source_length), dtype=np.int64)
    if batch > 1:
        mask[1, -2:] = 0  # one padded row, as real batches have
    states = rng.standard_normal((batch, source_length, hidden.shape[-1])).astype(_NUMPY[hidden.type])
    return {"encoder_hidden_states": states, "encoder_attention_mask": mask}


def _split_case(no_past: _Model, with_past: _Model, merged: _Model | None, batch: int, source_length: int,
                steps: int, tolerance: float, seed: int, against_merged: dict) -> CaseResult:
    case = CaseResult(batch=batch, source_length=source_length)
    rng = np.random.default_rng(seed)
    encoder = _encoder_inputs(no_past, rng, batch, source_length)
    vocab = no_past.session.get_outputs()[no_past.outputs.index("logits")].shape[-1]
    prefix = _prefix(rng, vocab if isinstance(vocab, int) else 2, batch, steps)
    past = None
    for step in range(1, steps + 1):
        tokens = prefix[:, :step]
        try:
            cached = no_past.run(tokens, encoder) if past is None else \
                with_past.run(tokens[:, -1:], encoder, past, step - 1)
        except Exception as err:  # onnxruntime's own exception types: the crash a client of the pair would meet
            model = no_past.name if past is None else with_past.name
            case.failure = f"step {step}: {model} fails in onnxruntime: {_one_line(err)}"
            return case
        full = cached if step == 1 else no_past.run(tokens, encoder)
        want = full["logits"][:, -1, :].astype(np.float64)
        diff = float(np.max(np.abs(cached["logits"][:, -1, :].astype(np.float64) - want)))
        case.steps, case.max_abs_diff = step, max(case.max_abs_diff, diff)
        case.tokens_total += batch
        case.tokens_agree += int(np.sum(cached["logits"][:, -1, :].argmax(-1) == want.argmax(-1)))
        scale = max(1.0, float(np.max(np.abs(want))))
        if not np.isfinite(diff) or diff > tolerance * scale:
            case.failure = f"step {step}: logits differ from full recompute by {diff:.3g} (tolerance {tolerance * scale:.3g})"
            return case
        if merged is not None and merged.accepts(batch, source_length):
            reference = merged.run(tokens, encoder)["logits"].astype(np.float64)
            merged_diff = float(np.max(np.abs(full["logits"].astype(np.float64) - reference)))
            against_merged["max_abs_diff"] = max(against_merged["max_abs_diff"], merged_diff)
            if merged_diff > tolerance * scale and not against_merged["failure"]:
                against_merged["failure"] = (f"batch {batch}, source length {source_length}, step {step}: logits "
                                             f"differ from the merged decoder's by {merged_diff:.3g}")
        past = {name.replace("present", "past_key_values", 1): value
                for name, value in cached.items() if PRESENT.match(name)}
    missing = [name for name in with_past.inputs if PAST.match(name) and name not in past]
    if missing:
        case.failure = f"{with_past.name} needs {missing[0]!r}, which no present.* of the pair provides"
    return case


def validate_split(decoder: str | os.PathLike, decoder_with_past: str | os.PathLike,
                   merged: str | os.PathLike | None = None, *, steps: int = STEPS,
                   batches: Sequence[int] = BATCHES, source_lengths: Sequence[int] = SOURCE_LENGTHS,
                   seed: int = 0) -> ValidationResult:
    """The plain two-file client loop against full recompute, at every step, batch and source length of
    `graphfix validate`; with `merged`, the pair's logits are also compared with that merged decoder's."""
    import onnxruntime

    for path in (decoder, decoder_with_past, *([merged] if merged else [])):
        read_model(path)  # the same refusals as everywhere, before onnxruntime sees the file
    tolerance = _tolerance(read_model(decoder_with_past).model)
    no_past, with_past = _Model(decoder), _Model(decoder_with_past)
    reference = _Model(merged) if merged else None
    against_merged = {"max_abs_diff": 0.0, "failure": None}
    cases = [_split_case(no_past, with_past, reference, batch, source_length, steps, tolerance,
                         seed + 10 * i + j, against_merged)
             for i, batch in enumerate(batches) for j, source_length in enumerate(source_lengths)]
    return ValidationResult(model=os.fspath(decoder), tolerance=tolerance, onnxruntime=onnxruntime.__version__,
                            cases=cases, original=against_merged if merged else None)
