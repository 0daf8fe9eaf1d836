"""The plain client loop, run in onnxruntime: only numpy and onnxruntime are imported here, so the same code runs
in an isolated environment holding another onnxruntime release (`graphfix validate --ort-version`), where it is
started as `python -m graphfix.decode_loop '<json request>'` and answers with one JSON document.

The plain client (step 1 without cache, then every `present.*` fed back as `past_key_values.*` with
`use_cache_branch=True`) must give, at every step, the logits of full recompute: the no-cache branch over the
whole prefix. That is exactly what a Rust/C#/Java client does.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict

import numpy as np

from .decode_cases import BATCHES, SOURCE_LENGTHS, STEPS, CaseResult
from .errors import BadInputError
from .signature import CACHE_FLAG, PAST, PRESENT

_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def _session(path: str):
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # errors come back as exceptions; ORT's own log would repeat them on stderr
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types; its text is the reason the user needs
        raise BadInputError(f"onnxruntime cannot load {os.path.basename(path)}: {_one_line(err)}") from None


def _one_line(err: Exception) -> str:
    """ORT nests `running If node ... running Reshape node ...`; the innermost node and its reason are what help."""
    text = " ".join(str(err).split())
    # The caller names the file; ORT's "Load model from <path> failed:" preamble would crowd out the reason.
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : Load model from .+? failed:\s*", "", text)
    nodes = re.findall(r"running (\w+) node\. Name:'([^']*)'", text)
    if nodes:
        reason = text.rsplit("Status Message: ", 1)[-1]
        reason = re.sub(r"^\S+\.(?:h|cc):\d+\s+", "", reason)
        reason = reason.split(" was false. ", 1)[-1]
        text = f"{nodes[-1][0]} node {nodes[-1][1]!r}: {reason}"
    return text if len(text) <= 300 else text[:297] + "..."


class _Decoder:
    """Feeds synthesized inputs to one session of a merged decoder."""

    def __init__(self, path: str):
        self.session = _session(path)
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.past = sorted(n for n in self.inputs if PAST.match(n))
        hidden = self.inputs.get("encoder_hidden_states")
        if hidden is None or CACHE_FLAG not in self.inputs or "input_ids" not in self.inputs or not self.past:
            raise BadInputError(f"{os.path.basename(path)} is not a merged seq2seq decoder "
                                "(needs input_ids, encoder_hidden_states, past_key_values.*, use_cache_branch)")
        if "logits" not in self.outputs:  # the proof compares logits
            raise BadInputError(f"{os.path.basename(path)} has no output 'logits'")
        if not isinstance(hidden.shape[-1], int):
            raise BadInputError("encoder_hidden_states has no static hidden size to synthesize inputs from")
        self.hidden_size = hidden.shape[-1]
        self.hidden_dtype = _NUMPY[hidden.type]
        logits = self.session.get_outputs()[self.outputs.index("logits")] if "logits" in self.outputs else None
        self.vocab = logits.shape[-1] if logits is not None and isinstance(logits.shape[-1], int) else 2
        known = {"input_ids", "encoder_hidden_states", "encoder_attention_mask", CACHE_FLAG, "cache_position"}
        unknown = [n for n in self.inputs if n not in known and n not in self.past]
        if unknown:
            raise BadInputError(f"cannot synthesize a value for input {unknown[0]!r}")

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        feeds = {}
        for name in self.past:
            spec = self.inputs[name]
            heads = spec.shape[1] if isinstance(spec.shape[1], int) else 1
            head_dim = spec.shape[3] if isinstance(spec.shape[3], int) else 1
            feeds[name] = np.zeros((batch, heads, 0, head_dim), dtype=_NUMPY[spec.type])
        return feeds

    def run(self, tokens: np.ndarray, encoder: dict, past: dict | None, past_length: int) -> dict[str, np.ndarray]:
        feeds = dict(encoder)
        feeds["input_ids"] = tokens
        feeds[CACHE_FLAG] = np.array([past is not None])
        feeds.update(past if past is not None else self.empty_past(tokens.shape[0]))
        if "cache_position" in self.inputs:
            feeds["cache_position"] = np.arange(past_length, past_length + tokens.shape[1], dtype=np.int64)
        feeds = {k: v for k, v in feeds.items() if k in self.inputs}
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds)))

    def encoder_inputs(self, rng: np.random.Generator, batch: int, source_length: int) -> dict[str, np.ndarray]:
        mask = np.ones((batch, source_length), dtype=np.int64)
        if batch > 1:
            mask[1, -2:] = 0  # one padded row, as real batches have
        hidden = rng.standard_normal((batch, source_length, self.hidden_size)).astype(self.hidden_dtype)
        return {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}


def _prefix(rng: np.random.Generator, vocab: int, batch: int, length: int) -> np.ndarray:
    """Teacher-forced tokens. Low ids and the last id are where exporters put pad/bos/eos; a pad fed mid-sequence
    changes position ids in M2M100-style models between cached and full runs, which no real client does."""
    low, high = (4, vocab - 1) if vocab > 8 else (0, vocab)
    return rng.integers(low, high, size=(batch, length), dtype=np.int64)


def _decode_case(dec: _Decoder, batch: int, source_length: int, steps: int, tolerance: float,
                 seed: int) -> CaseResult:
    """The plain client loop against full recompute, step by step; stops at the first divergence."""
    case = CaseResult(batch=batch, source_length=source_length)
    rng = np.random.default_rng(seed)
    encoder = dec.encoder_inputs(rng, batch, source_length)
    prefix = _prefix(rng, dec.vocab, batch, steps)
    past = None
    for step in range(1, steps + 1):
        tokens = prefix[:, :step]
        try:
            cached = dec.run(tokens[:, -1:] if past is not None else tokens, encoder, past, step - 1)
        except Exception as err:  # the crash a plain client meets, e.g. the seeds' Reshape error
            case.failure = f"step {step}: the present->past loop fails in onnxruntime: {_one_line(err)}"
            return case
        try:
            full = cached if step == 1 else dec.run(tokens, encoder, None, 0)
        except Exception as err:  # a broken no-cache path: there is nothing to compare against
            case.failure = f"step {step}: full recompute (no past) fails in onnxruntime: {_one_line(err)}"
            return case
        got, want = cached["logits"][:, -1, :].astype(np.float64), full["logits"][:, -1, :].astype(np.float64)
        diff = float(np.max(np.abs(got - want)))
        case.steps, case.max_abs_diff = step, max(case.max_abs_diff, diff)
        case.tokens_total += batch
        case.tokens_agree += int(np.sum(got.argmax(-1) == want.argmax(-1)))
        scale = max(1.0, float(np.max(np.abs(want))))
        if not np.isfinite(diff) or diff > tolerance * scale:
            case.failure = (f"step {step}: logits differ from full recompute by {diff:.3g} "
                            f"(tolerance {tolerance * scale:.3g})")
            return case
        past = {name.replace("present", "past_key_values", 1): value
                for name, value in cached.items() if PRESENT.match(name)}
    # The last presents are never fed back, so check them as the next step would need them.
    for name, value in past.items():
        if value.shape[0] != batch:
            case.failure = f"step {steps}: {name.replace('past_key_values', 'present', 1)} has shape " \
                           f"{tuple(value.shape)}, unusable as past for batch {batch}"
    return case


def _compare_original(dec: _Decoder, original: _Decoder, tolerance: float, seed: int) -> dict:
    """First-step and full-recompute logits must equal the original's: the repair left the no-cache path alone."""
    rng = np.random.default_rng(seed)
    batch, source_length = BATCHES[-1], SOURCE_LENGTHS[0]
    encoder = dec.encoder_inputs(rng, batch, source_length)
    prefix = _prefix(rng, min(dec.vocab, original.vocab), batch, STEPS)
    worst = 0.0
    for tokens in (prefix[:, :1], prefix):
        try:
            ours = dec.run(tokens, encoder, None, 0)["logits"]
            theirs = original.run(tokens, encoder, None, 0)["logits"]
        except Exception as err:
            return {"max_abs_diff": None, "failure": f"{tokens.shape[1]} token(s) without past fail in onnxruntime: "
                                                     f"{_one_line(err)}"}
        if ours.shape != theirs.shape:
            return {"max_abs_diff": None, "failure": f"logits shape {ours.shape} != original {theirs.shape}"}
        worst = max(worst, float(np.max(np.abs(ours.astype(np.float64) - theirs))))
    failure = None if worst <= tolerance else f"logits differ from the original's by {worst:.3g}"
    return {"max_abs_diff": worst, "failure": failure}


def run_cases(model: str, original: str | None, tolerance: float, steps: int = STEPS, batches=BATCHES,
              source_lengths=SOURCE_LENGTHS, seed: int = 0) -> dict:
    import onnxruntime

    dec = _Decoder(model)
    cases = [_decode_case(dec, batch, source_length, steps, tolerance, seed + 10 * i + j)
             for i, batch in enumerate(batches) for j, source_length in enumerate(source_lengths)]
    compared = _compare_original(dec, _Decoder(original), tolerance, seed) if original else None
    return {"onnxruntime": onnxruntime.__version__, "cases": [asdict(c) for c in cases], "original": compared}


def main(request: str) -> int:
    try:
        print(json.dumps({"result": run_cases(**json.loads(request))}))
    except BadInputError as err:
        print(json.dumps({"error": str(err)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
