"""The plain client loop, run in onnxruntime: the one loop behind `validate`, repair's proof and split's proof.

A plain client (Rust `ort`, C#, Java) runs "the model for step 1" over the prompt without past, then "the model for
later steps" on one new token at a time, feeding every `present.*` back as `past_key_values.*`. For a merged
decoder both are the same file (`use_cache_branch` False, then True); for a split pair they are
`decoder_model.onnx` and `decoder_with_past_model.onnx`. At every step its logits must equal full recompute (the
step-1 model over the whole prefix) and, given a reference model (the original merged decoder), that model's full
recompute too.

Only the standard library, numpy, onnxruntime and graphfix's standard-library modules (`signature`, `errors`,
`proof.cases`, `proof.paths`) are imported here: the same file runs inside an isolated interpreter holding another
onnxruntime release (child.py starts it there, with serve() reading requests from stdin).
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict
from typing import Any

import numpy as np

from ..errors import BadInputError, is_out_of_memory, one_line
from ..signature import CACHE_FLAG, PAST, PRESENT
from .cases import SOURCE, CaseResult, Dim, EncoderFeeds, LoadRequest, ProofRequest, Request, request_from_json
from .paths import is_utf8, utf8_alias

_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
          "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
Feeds = dict[str, np.ndarray]


ORT_REASON_LIMIT = 800


def raise_if_out_of_memory(err: BaseException) -> None:
    """Memory that ran out is the machine's limit, never the model's failure (a verdict) or fault (a refusal)."""
    if is_out_of_memory(err):
        raise MemoryError(ort_reason(err)) from None


def ort_reason(err: BaseException) -> str:
    """onnxruntime's error as one line. ORT nests `running If node ... running Reshape node ...`; the innermost
    node and its reason are what help."""
    text = one_line(str(err), limit=None)
    # The caller names the file; ORT's "Load model from <path> failed:" preamble would crowd out the reason.
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : Load model from .+? failed:\s*", "", text)
    # ... and its source location and C++ function, which say nothing to a user
    text = re.sub(r"^(?:\S+\.(?:h|cc):\d+ )?(?:[\w:<>]+ )?[\w:~<>]+::~?\w+\([^()]*\) ", "", text)
    # An opset refusal is ~400 characters of disclaimer around the two facts that matter; keep those, in ORT's words.
    opset = re.search(r"(Opset \d+) is under development.*?(Current official support for domain \S+ is till opset "
                      r"\d+)", text)
    if opset:
        text = f"{opset[1]} ... {opset[2]}"
    nodes = re.findall(r"running (\w+) node\. Name:'([^']*)'", text)
    if nodes:
        reason = text.rsplit("Status Message: ", 1)[-1]
        reason = re.sub(r"^\S+\.(?:h|cc):\d+\s+", "", reason)
        reason = reason.split(" was false. ", 1)[-1]
        text = f"{nodes[-1][0]} node {nodes[-1][1]!r}: {reason}"
    # Room for two tensor or node names of a deep export and the types or shapes between them: the part that says
    # what to change comes last, so a shorter cut would lose it.
    return one_line(text, limit=ORT_REASON_LIMIT)


def load_session(path: str) -> Any:
    """An onnxruntime session of the model at `path`. ORT converts a path to UTF-8, so a name holding bytes that
    are not UTF-8 (any a filesystem allows) is opened through an alias; ORT has read the model and its external
    data (or mapped them) once the session exists, so the alias goes right after."""
    if is_utf8(path):
        return _session(path, os.path.basename(path))
    alias = utf8_alias(path)
    try:
        return _session(alias, os.path.basename(path))
    finally:
        shutil.rmtree(os.path.dirname(alias), ignore_errors=True)


# Below this many bytes of model (and its external data), one thread: a small model's few proof steps finish sooner
# than a second thread starts paying. Above it, the machine's cores, as the user's session has (docs/benchmark.md).
_ONE_THREAD_BELOW = 256 << 20


def _threads_for(path: str) -> int:
    """intra_op_num_threads for the model at `path`: 1 for a small model, 0 (onnxruntime's default: one per
    physical core) for a large one. Its external data counts when it sits beside it under an exporter's name."""
    size = 0
    for candidate in (path, path + ".data", path + "_data", os.path.splitext(path)[0] + ".onnx_data"):
        try:
            size += os.stat(candidate).st_size
        except OSError:
            continue
    return 1 if size < _ONE_THREAD_BELOW else 0


def _session(path: str, shown_as: str) -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # errors come back as exceptions; ORT's own log would repeat them on stderr
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = _threads_for(path)
    # A proof runs a few steps, so what a session spends up front to make steps faster is lost: prepacking copies
    # every MatMul weight into the layout its kernel prefers, which on big models costs most of the session's time and
    # doubles its memory (external data no longer stays mapped). The kernels and their numbers are the same
    # (docs/benchmark.md has the figures); the optimisation level stays onnxruntime's default.
    options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types; its text is the reason the user needs
        raise_if_out_of_memory(err)
        raise BadInputError(f"onnxruntime {ort.__version__} cannot load {shown_as}: "
                            f"{ort_reason(err)}") from None


class DecoderSession:
    """One decoder file in onnxruntime, fed the way a plain client feeds it: every input is synthesized from the
    signature or the model is refused naming the input it cannot feed."""

    KNOWN = frozenset({"input_ids", "encoder_hidden_states", "encoder_attention_mask", CACHE_FLAG, "cache_position",
                       "attention_mask", "decoder_attention_mask", "position_ids"})

    def __init__(self, path: str):
        self.name = os.path.basename(path)
        self.session = load_session(path)
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.past = sorted(n for n in self.inputs if PAST.match(n))
        if "input_ids" not in self.inputs or "logits" not in self.outputs:  # the proof feeds tokens, compares logits
            raise BadInputError(f"{self.name} is not a decoder graphfix can drive (needs input_ids and logits)")
        unknown = [n for n in self.inputs if n not in self.KNOWN and n not in self.past]
        if unknown:
            raise BadInputError(f"cannot synthesize a value for input {unknown[0]!r} of {self.name}")
        logits = self.session.get_outputs()[self.outputs.index("logits")]
        declared = list(logits.shape or [])  # none at all where the export declares no shape (onnxruntime < 1.17)
        self.declared_vocab: int | None = declared[-1] if declared and isinstance(declared[-1], int) else None
        self.vocab = self.declared_vocab or 2

    @property
    def fixed_source_length(self) -> int | None:
        """The encoder length the signature fixes (Pix2Struct's patches), if it does."""
        hidden = self.inputs.get("encoder_hidden_states")
        length = hidden.shape[1] if hidden is not None and len(hidden.shape) > 1 else None
        return length if isinstance(length, int) else None

    def encoder_inputs(self, rng: np.random.Generator, batch: int, source_length: int) -> Feeds:
        hidden = self.inputs.get("encoder_hidden_states")
        if hidden is None:
            return {}  # a decoder-only model: nothing from an encoder
        if not isinstance(hidden.shape[-1], int):
            raise BadInputError(f"{self.name} has no encoder_hidden_states with a static hidden size to "
                                "synthesize inputs from")
        mask = np.ones((batch, source_length), dtype=np.int64)
        if batch > 1:
            mask[1, -2:] = 0  # one padded row, as real batches have
        states: np.ndarray = rng.standard_normal((batch, source_length, hidden.shape[-1])).astype(_NUMPY[hidden.type])
        return {"encoder_hidden_states": states, "encoder_attention_mask": mask}

    def accepts(self, batch: int, source_length: int) -> bool:
        """False where the signature fixes the batch or source length to other sizes (a fixed-shape original)."""
        wanted = {"input_ids": (batch,), "encoder_hidden_states": (batch, source_length),
                  "encoder_attention_mask": (batch, source_length)}
        return all(not isinstance(dim, int) or dim == size
                   for name, sizes in wanted.items() if name in self.inputs
                   for dim, size in zip(self.inputs[name].shape, sizes))

    def run(self, tokens: np.ndarray, encoder: Feeds, past: Feeds | None = None, past_length: int = 0) -> Feeds:
        """One step: `past` None runs without cache (a merged decoder's no-cache branch, fed an empty past)."""
        feeds = {**encoder, "input_ids": tokens}
        if CACHE_FLAG in self.inputs:
            feeds[CACHE_FLAG] = np.array([past is not None])
        if past is not None:
            feeds.update(past)
        else:
            for name in self.past:  # a merged decoder's no-cache branch still takes (empty) past inputs
                spec = self.inputs[name]
                dims = [d if isinstance(d, int) else 1 for d in spec.shape]
                feeds[name] = np.zeros((tokens.shape[0], dims[1], 0, dims[3]), dtype=_NUMPY[spec.type])
        batch, new = tokens.shape
        if "cache_position" in self.inputs:
            feeds["cache_position"] = np.arange(past_length, past_length + new, dtype=np.int64)
        if "position_ids" in self.inputs:
            positions = np.arange(past_length, past_length + new)
            feeds["position_ids"] = np.tile(positions, (batch, 1)).astype(_NUMPY[self.inputs["position_ids"].type])
        for mask in ("attention_mask", "decoder_attention_mask"):  # the decoder's own mask: past + new tokens
            if mask in self.inputs:
                feeds[mask] = np.ones((batch, past_length + new), dtype=_NUMPY[self.inputs[mask].type])
        missing = [n for n in self.inputs if n not in feeds]
        if missing:
            raise BadInputError(f"{self.name} needs {missing[0]!r}, which no present.* of the step before provides")
        feeds = {k: v for k, v in feeds.items() if k in self.inputs}
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds)))


class EncoderSession:
    """The export's encoder, fed from its own signature (token ids, pixel values, audio features or patches), whose
    output feeds the decoder as a client's would: the proof then covers the export end to end. `feeds` are the
    sizes the export says each float input has (encoder_inputs.py, on the host): dims after the batch, each an int
    or SOURCE (grows with the case's source length)."""

    def __init__(self, path: str, feeds: EncoderFeeds | None = None):
        self.name = os.path.basename(path)
        self.session = load_session(path)
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        feeds = feeds or EncoderFeeds()
        self.shapes: dict[str, list[Dim]] = feeds.shapes
        self.vocab: int | None = feeds.vocab
        self.said_by: dict[str, str] = feeds.said_by
        if "last_hidden_state" not in self.outputs:
            raise BadInputError(f"{self.name} has no output 'last_hidden_state' to feed a decoder")

    @property
    def fixed_length(self) -> bool:
        """Whether the encoder's output length cannot follow the source length: no token ids, no input sized by it."""
        return "input_ids" not in self.inputs and not any(SOURCE in dims for dims in self.shapes.values())

    def _sized(self, name: str, batch: int, source_length: int) -> list[int]:
        spec = self.inputs[name]
        if name not in self.shapes:
            raise BadInputError(f"cannot synthesize a value for input {name!r} of {self.name}: nothing in the "
                                "export says its size")
        # audio convolutions halve the frames: a source length's worth of states needs more frames than that
        return [batch] + [8 * source_length if d == SOURCE else int(d) for d in self.shapes[name]][:len(spec.shape)]

    def _mask_length(self, source_length: int, floats: Feeds) -> int:
        """The encoder's own attention mask spans what it reads: its declared length, else the frames or patches
        of its float input, else the tokens."""
        declared = self.inputs["attention_mask"].shape
        if len(declared) > 1 and isinstance(declared[1], int):
            return declared[1]
        for name, value in floats.items():
            dims = self.shapes.get(name, [])
            if SOURCE in dims:
                return int(value.shape[1 + dims.index(SOURCE)])
        return source_length

    def encode(self, rng: np.random.Generator, batch: int, source_length: int, vocab: int) -> Feeds:
        feeds: Feeds = {}
        for name, spec in self.inputs.items():
            if name == "input_ids":
                feeds[name] = _prefix(rng, self.vocab or vocab, batch, source_length)
            elif spec.type in ("tensor(float)", "tensor(float16)", "tensor(double)"):
                feeds[name] = rng.standard_normal(self._sized(name, batch, source_length)).astype(_NUMPY[spec.type])
            elif name != "attention_mask":
                raise BadInputError(f"cannot synthesize a value for input {name!r} of {self.name}")
        if "attention_mask" in self.inputs:
            mask = np.ones((batch, self._mask_length(source_length, feeds)), dtype=np.int64)
            if batch > 1:
                mask[1, -2:] = 0  # one padded row, as real batches have
            feeds["attention_mask"] = mask.astype(_NUMPY[self.inputs["attention_mask"].type])
        try:
            hidden = self.session.run(["last_hidden_state"], feeds)[0]
        except Exception as err:  # the export's own encoder refuses what its config says it takes
            raise_if_out_of_memory(err)
            shapes = ", ".join(f"{n} {list(v.shape)} (from {self.said_by.get(n, 'the signature')})"
                               for n, v in feeds.items() if n in self.shapes)
            raise BadInputError(f"{self.name} fails in onnxruntime on {shapes or 'its inputs'}: "
                                f"{one_line(str(err))}") from None
        given = feeds.get("attention_mask")
        # frames or patches were pooled: every state is real
        states_mask = given if given is not None and given.shape[1] == hidden.shape[1] else \
            np.ones(hidden.shape[:2], dtype=np.int64)
        return {"encoder_hidden_states": hidden, "encoder_attention_mask": states_mask.astype(np.int64)}


def _prefix(rng: np.random.Generator, vocab: int, batch: int, length: int) -> np.ndarray:
    """Teacher-forced tokens. Low ids and the last id are where exporters put pad/bos/eos; a pad fed mid-sequence
    changes position ids in M2M100-style models between cached and full runs, which no real client does."""
    low, high = (4, vocab - 1) if vocab > 8 else (0, vocab)
    return rng.integers(low, high, size=(batch, length), dtype=np.int64)


def _last_logits(outputs: Feeds) -> np.ndarray:
    return outputs["logits"][:, -1, :].astype(np.float64)


def logits_problem(outputs: Feeds, batch: int, fed: int, vocab: int | None) -> str | None:
    """What a client would see wrong in a step's logits, in words (None when they are floats of (batch, 1 or the
    tokens fed, vocab) with finite last-token values): the verdict then names it instead of a numpy error."""
    logits = outputs.get("logits")
    if logits is None:
        return "returned no logits"
    if logits.dtype.kind != "f":
        return f"returned logits of dtype {logits.dtype} (a client reads floats)"
    shape = tuple(int(d) for d in logits.shape)
    if logits.size == 0:
        return f"returned empty logits of shape {shape}"
    if len(shape) != 3 or shape[0] != batch or shape[1] not in (1, fed) or vocab not in (None, shape[2]):
        return (f"returned logits of shape {shape} where ({batch}, {fed}, {vocab or 'vocab'}) was expected "
                "(batch, tokens fed, vocabulary)")
    last = logits[:, -1, :]
    if not np.all(np.isfinite(last)):
        return f"returned logits holding {'NaN' if np.isnan(last).any() else 'inf'}"
    return None


class OptimumLoop:
    """A decoder driven as Optimum's own client drives it: `first` over the prompt, then `later` on one token at a
    time, fed its presents as past except the encoder KV, which is kept from step 1. For the original merged decoder
    both are that model (its cache branch returns dummies for the encoder KV); for a split pair they are
    decoder_model.onnx and decoder_with_past_model.onnx (which returns no encoder presents)."""

    def __init__(self, first: DecoderSession, later: DecoderSession | None = None):
        self.first, self.later = first, later or first
        self.past: Feeds | None = None
        self.encoder_kv: Feeds = {}

    def step(self, tokens: np.ndarray, encoder: Feeds, step: int) -> np.ndarray:
        if self.past is None:
            out = self.first.run(tokens, encoder)
            self.encoder_kv = {_as_past(n): v for n, v in out.items() if PRESENT.match(n) and ".encoder." in n}
        else:
            out = self.later.run(tokens[:, -1:], encoder, self.past, step - 1)
        self.past = {**{_as_past(n): v for n, v in out.items() if PRESENT.match(n)}, **self.encoder_kv}
        return _last_logits(out)


def _as_past(present: str) -> str:
    return present.replace("present", "past_key_values", 1)


class _AskTheJudge(Exception):
    """A step diverged and the original has not been asked yet: the case runs again, judged."""


FLOAT_PRECISION = 1e-5  # "the same numbers": what differs between two runs of the same ops, relative to the logits


class PlainClient:
    """`first` runs step 1 and full recompute; `later` every step after, fed the presents of the one before.
    `judge` (the unrepaired merged decoder, loaded only if needed) decides when the loop differs from full
    recompute: if the original, driven as Optimum drives it, gives the loop's very numbers, the difference is the
    model's own (static QDQ int8 exports round differently on the cached path) and the repair is not at fault."""

    def __init__(self, first: DecoderSession, later: DecoderSession, reference: DecoderSession | None = None,
                 encoder: EncoderSession | None = None, judge: str | None = None):
        if first is later and (CACHE_FLAG not in first.inputs or not first.past):
            raise BadInputError(f"{first.name} is not a merged decoder (needs past_key_values.* and {CACHE_FLAG})")
        if not later.past:
            raise BadInputError(f"{later.name} takes no past_key_values.*: not a decoder with past")
        self.first, self.later, self.reference, self.encoder = first, later, reference, encoder
        self.against_reference: dict[str, Any] = {"max_abs_diff": 0.0, "failure": None}
        self.judge_path = judge
        self.judge: DecoderSession | None = None
        self.pair: tuple[DecoderSession, DecoderSession] | None = None
        self.against_pair: dict[str, Any] = {"max_abs_diff": 0.0, "tokens_agree": 0, "tokens_total": 0,
                                             "failure": None}

    def decode_case(self, batch: int, source_length: int, steps: int, tolerance: float, seed: int,
                    judged: bool = False) -> CaseResult:
        """The loop against full recompute: `steps` cached steps, then one run without past over the final tokens,
        whose logits at every position are what full recompute gives at that step (the decoder is causal); the
        first step that differs, or whose logits a client could not use, is the failure. `judged` runs the
        original's Optimum loop beside it (after a divergence, when there is a judge to ask)."""
        case = CaseResult(batch=batch, source_length=source_length)
        optimum = OptimumLoop(self.judge) if judged and self.judge is not None else None
        rng = np.random.default_rng(seed)
        if self.encoder is not None:
            encoder = self.encoder.encode(rng, batch, source_length, self.first.vocab)
            case.source_length = int(encoder["encoder_hidden_states"].shape[1])  # what the decoder attends to
        else:
            encoder = self.first.encoder_inputs(rng, batch, source_length)
        prefix = _prefix(rng, self.first.vocab, batch, steps)
        past: Feeds | None = None
        vocab = self.first.declared_vocab  # else what step 1 gives: every later step must give the same
        loop: list[np.ndarray] = []  # the cached loop's last logits, per step
        theirs: list[np.ndarray | None] = []  # the original's, driven as Optimum drives it (judged only)
        pair = OptimumLoop(*self.pair) if self.pair is not None and not judged else None
        paired: list[np.ndarray | str] = []  # the split pair's logits per step, or how it failed
        crash: tuple[int, str] | None = None  # (the step, why)
        for step in range(1, steps + 1):
            tokens = prefix[:, :step]
            model = self.first if past is None else self.later
            if past is not None and (missing := self._missing_past(past)):
                crash = step, missing
                break
            where = "the present->past loop" if self.first is self.later else model.name
            fed = step if past is None else 1
            try:
                cached = model.run(tokens if past is None else tokens[:, -1:], encoder, past, step - 1)
            except BadInputError:  # an input the loop cannot synthesize: the model, not the proof, is at fault
                raise
            except Exception as err:  # the crash a plain client meets, e.g. the seeds' Reshape error
                raise_if_out_of_memory(err)
                crash = step, f"{where} fails in onnxruntime: {ort_reason(err)}"
                break
            if problem := logits_problem(cached, batch, fed, vocab):
                crash = step, f"{where} {problem}"
                break
            vocab = vocab or int(cached["logits"].shape[-1])
            got = _last_logits(cached)
            loop.append(got)
            if optimum is not None:
                theirs.append(self._judged_step(optimum, tokens, encoder, step, got.shape))
            if pair is not None and not (paired and isinstance(paired[-1], str)):
                try:
                    paired.append(pair.step(tokens, encoder, step))
                except Exception as err:
                    raise_if_out_of_memory(err)
                    paired.append(f"the split pair fails in onnxruntime: {ort_reason(err)}")
            past = {name.replace("present", "past_key_values", 1): value
                    for name, value in cached.items() if PRESENT.match(name)}
        if loop:
            try:
                full, unusable = self._full_recompute(prefix[:, :len(loop)], encoder, vocab)
            except Exception as err:  # a broken no-cache path: there is nothing to compare against
                raise_if_out_of_memory(err)
                case.failed_step = len(loop)
                case.failure = f"full recompute (no past) fails in onnxruntime: {ort_reason(err)}"
                return case
            compared = loop if unusable is None else loop[:unusable[0] - 1]  # full recompute's usable steps
            try:
                failure = self._compare_steps(case, compared, theirs, full, tolerance, judged)
            except _AskTheJudge:
                return self.decode_case(batch, source_length, steps, tolerance, seed, judged=True)
            held = len(compared) if failure is None else case.steps - 1
            if failure is None and unusable is not None:
                failure = unusable[0], f"full recompute (no past) {unusable[1]}"
            self._compare_pair(paired[:held], loop, full, tolerance, batch, source_length)
            if failure is not None:
                case.failed_step, case.failure = failure
                return case
            self._compare_reference(prefix[:, :len(loop)], encoder, full, tolerance * self._scale(full), batch,
                                    source_length, len(loop))
        if failed := crash or self._unusable_presents(past or {}, batch, steps):
            case.failed_step, case.failure = failed
        return case

    def _full_recompute(self, tokens: np.ndarray, encoder: Feeds,
                        vocab: int | None) -> tuple[Feeds, tuple[int, str] | None]:
        """One run without past over `tokens`: its logits at position k are full recompute's at step k + 1 (the
        decoder is causal). A model that returns fewer positions than it was given is run once per step instead.
        Also the first step whose full-recompute logits a client could not use and what is wrong with them (what
        logits_problem says of a run over that step's tokens), or None; the logits before that step are usable."""
        batch, count = tokens.shape
        full = self.first.run(tokens, encoder)
        logits = full.get("logits")
        if logits is not None and logits.ndim == 3 and logits.shape[1] == count:
            for step in range(1, count + 1):  # positions 1..step are what a run over step tokens gives
                if problem := logits_problem({"logits": logits[:, :step, :]}, batch, step, vocab):
                    return full, (step, problem)
            return full, None
        runs = [self.first.run(tokens[:, :k], encoder) for k in range(1, count)] + [full]
        unusable = next(((step, problem) for step, run in enumerate(runs, start=1)
                         if (problem := logits_problem(run, batch, step, vocab))), None)
        usable = runs if unusable is None else runs[:unusable[0] - 1]
        if not usable:
            return full, unusable
        return {**full, "logits": np.stack([run["logits"][:, -1, :] for run in usable], axis=1)}, unusable

    @staticmethod
    def _scale(full: Feeds) -> float:
        return max(1.0, float(np.max(np.abs(full["logits"].astype(np.float64)))))

    def _compare_steps(self, case: CaseResult, loop: list[np.ndarray], theirs: list[np.ndarray | None],
                       full: Feeds, tolerance: float, judged: bool) -> tuple[int, str] | None:
        """Each step's cached logits against full recompute's at that position, in order: the first divergence's
        step and message, None when every step held; _AskTheJudge when the judge should be asked first."""
        for step, got in enumerate(loop, start=1):
            batch = got.shape[0]
            want = full["logits"][:, step - 1, :].astype(np.float64)
            diff = float(np.max(np.abs(got - want)))
            case.steps, case.max_abs_diff = step, max(case.max_abs_diff, diff)
            case.tokens_total += batch
            case.tokens_agree += int(np.sum(got.argmax(-1) == want.argmax(-1)))
            scale = max(1.0, float(np.max(np.abs(want))))
            if np.isfinite(diff) and diff <= tolerance * scale:
                continue
            judge = theirs[step - 1] if step <= len(theirs) else None
            if judge is None and not judged and self._load_judge():
                raise _AskTheJudge
            wiring = float(np.max(np.abs(got - judge))) if judge is not None else None
            if wiring is not None and wiring <= FLOAT_PRECISION * scale:
                case.original_differs = max(case.original_differs or 0.0, diff)  # the model's own, not ours
                continue
            return step, (f"logits differ from full recompute by {diff:.3g} (tolerance {tolerance * scale:.3g})"
                    + (f" and from the original driven as Optimum drives it by {wiring:.3g}"
                       if wiring is not None else ""))
        return None

    def _compare_reference(self, tokens: np.ndarray, encoder: Feeds, full: Feeds, tolerance: float,
                           batch: int, source_length: int, step: int) -> None:
        """Full recompute must equal the reference's at every position: the repair or split left the no-cache path
        alone. One run of the reference over the final tokens."""
        record = self.against_reference
        if self.reference is None or record["failure"] or not self.reference.accepts(batch, source_length):
            return
        where = f"batch {batch}, source length {source_length}, steps 1-{step}"
        try:
            theirs = self.reference.run(tokens, encoder)["logits"].astype(np.float64)
        except Exception as err:
            raise_if_out_of_memory(err)
            record["failure"] = f"{where}: the reference fails in onnxruntime: {ort_reason(err)}"
            record["max_abs_diff"] = None
            return
        ours = full["logits"].astype(np.float64)
        if ours.shape != theirs.shape:
            record["failure"] = f"{where}: logits shape {ours.shape} != reference {theirs.shape}"
            record["max_abs_diff"] = None
            return
        diff = float(np.max(np.abs(ours - theirs)))
        record["max_abs_diff"] = max(record["max_abs_diff"], diff)
        if not np.isfinite(diff) or diff > tolerance:
            record["failure"] = f"{where}: logits differ from the reference's by {diff:.3g}"

    @staticmethod
    def _judged_step(optimum: OptimumLoop, tokens: np.ndarray, encoder: Feeds, step: int,
                     shape: tuple[int, ...]) -> np.ndarray | None:
        """The original's logits at `step`, driven as Optimum drives it; None when the judge cannot say (it fails,
        or gives logits of another shape): the loop's divergence then stands as it is."""
        try:
            theirs = optimum.step(tokens, encoder, step)
        except Exception:  # a judge that cannot run is no evidence either way
            return None
        return theirs if theirs.shape == shape else None

    def _compare_pair(self, paired: list[np.ndarray | str], loop: list[np.ndarray], full: Feeds, tolerance: float,
                      batch: int, source_length: int) -> None:
        """The loop's logits must be the split pair's it was merged from, and pick the same tokens, at each step
        that held against full recompute."""
        record = self.against_pair
        for step, (theirs, got) in enumerate(zip(paired, loop), start=1):
            if record["failure"]:
                return
            where = f"batch {batch}, source length {source_length}, step {step}"
            if isinstance(theirs, str):
                record["failure"] = f"{where}: {theirs}"
                return
            scale = max(1.0, float(np.max(np.abs(full["logits"][:, step - 1, :].astype(np.float64)))))
            diff = float(np.max(np.abs(got - theirs)))
            record["max_abs_diff"] = max(record["max_abs_diff"], diff)
            record["tokens_total"] += batch
            record["tokens_agree"] += int(np.sum(got.argmax(-1) == theirs.argmax(-1)))
            if not np.isfinite(diff) or diff > tolerance * scale:
                record["failure"] = f"{where}: logits differ from the split pair's by {diff:.3g}"

    def _load_judge(self) -> bool:
        if self.judge is None and self.judge_path is not None:
            self.judge = DecoderSession(self.judge_path)
        return self.judge is not None

    def _missing_past(self, past: Feeds) -> str | None:
        """Why the presents of the step before cannot be fed as the past of this one: one missing, or of a dtype
        or rank the past input does not take (said as a client meets it, not as onnxruntime's refusal)."""
        missing = [name for name in self.later.past if name not in past]
        if missing:
            return f"{self.later.name} needs {missing[0]!r}, which no present.* provides"
        for name in self.later.past:
            spec, value = self.later.inputs[name], past[name]
            present = name.replace("past_key_values", "present", 1)
            if _NUMPY.get(spec.type) not in (None, value.dtype.type):
                return (f"{present} of dtype {value.dtype} is fed back as {name}, which takes "
                        f"{spec.type[len('tensor('):-1]}")
            if spec.shape and len(spec.shape) != value.ndim:
                return f"{present} of shape {tuple(value.shape)} is fed back as {name}, of rank {len(spec.shape)}"
        return None

    def _unusable_presents(self, past: Feeds, batch: int, steps: int) -> tuple[int, str] | None:
        """The last presents are never fed back, so check them as the next step would need them."""
        if missing := self._missing_past(past):
            return steps, missing
        for name, value in past.items():
            if value.shape[0] != batch:
                return steps, (f"{name.replace('past_key_values', 'present', 1)} has shape "
                        f"{tuple(value.shape)}, unusable as past for batch {batch}")
        return None


def run_proof(request: ProofRequest) -> dict[str, Any]:
    """Every (batch, source length) case of the plain loop; the JSON-ready answer of a proof. With an encoder, the
    decoder is fed that encoder's output instead of synthesized hidden states; with a judge (the unrepaired merged
    decoder), a divergence from full recompute is judged against it (see PlainClient)."""
    import onnxruntime

    first_session = DecoderSession(request.model)
    later_session = (first_session if request.model_with_past == request.model
                     else DecoderSession(request.model_with_past))
    client = PlainClient(first_session, later_session,
                         DecoderSession(request.reference) if request.reference else None,
                         EncoderSession(request.encoder, request.encoder_feeds) if request.encoder else None,
                         request.judge)
    if request.pair is not None:
        client.pair = (DecoderSession(request.pair[0]), DecoderSession(request.pair[1]))
    source_lengths: tuple[int, ...] = request.source_lengths
    if "encoder_hidden_states" not in first_session.inputs:
        source_lengths = (0,)  # a decoder-only model: no encoder to vary
    elif (fixed := first_session.fixed_source_length) is not None:
        source_lengths = (fixed,)
    elif client.encoder is not None and client.encoder.fixed_length:
        source_lengths = source_lengths[:1]  # a fixed image or audio window: every case would be the same length
    if request.pairwise:  # each batch with one source length (the last one again where fewer lengths apply)
        chosen = [(i, batch, min(i, len(source_lengths) - 1)) for i, batch in enumerate(request.batches)]
    else:
        chosen = [(i, batch, j) for i, batch in enumerate(request.batches) for j in range(len(source_lengths))]
    cases = [client.decode_case(batch, source_lengths[j], request.steps, request.tolerance, request.seed + 10 * i + j)
             for i, batch, j in chosen]
    return {"onnxruntime": onnxruntime.__version__, "cases": [asdict(c) for c in cases],
            "original": client.against_reference if request.reference else None,
            "pair": client.against_pair if request.pair else None}


def answer(request: Request) -> dict[str, Any]:
    """The result of one request, in the release it names (refused in any other: the promise is where it ran)."""
    import onnxruntime

    if request.release is not None and onnxruntime.__version__ != request.release:
        raise BadInputError(f"the proof meant for onnxruntime {request.release} ran in {onnxruntime.__version__}")
    if isinstance(request, LoadRequest):
        load_session(request.model)
        return {"onnxruntime": onnxruntime.__version__}
    return run_proof(request)


def main(request: str) -> int:
    """Answer one JSON request (cases.ProofRequest or cases.LoadRequest, as to_json wrote it) on stdout."""
    try:
        print(json.dumps({"result": answer(request_from_json(request))}))
    except BadInputError as err:
        print(json.dumps({"error": str(err)}))
    except MemoryError as err:
        print(json.dumps({"error": one_line(str(err)) or "MemoryError", "out_of_memory": True}))
    except ImportError as err:  # a broken or unloadable onnxruntime (a noexec mount, a missing library)
        print(json.dumps({"error": f"cannot import {err.name or 'a module'}: {one_line(str(err))}"}))
    return 0


def serve(idle_seconds: float) -> int:
    """main() of each request read from stdin, a line each, each answer flushed, until stdin closes: onnxruntime is
    imported first, as the process is started before graphfix knows its first request (child.RuntimeChild), and
    it is kept for the next proof. It ends when its stdin closes or its answer finds no reader (graphfix died),
    after `idle_seconds` without a request, or by graphfix's SIGKILL.

    Its temporary files (the `.ses` onnxruntime 1.32 writes on some hosts as it is imported; the alias of a path that
    is not UTF-8) go in a directory of its own, named for its pid: removed as it ends, or by graphfix when it killed
    it."""
    scratch = tempfile.mkdtemp(prefix=f"graphfix-proof-{os.getpid()}-")
    os.environ["TMPDIR"] = tempfile.tempdir = scratch
    try:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            pass  # main says so, as the answer to the request
        while True:
            idle = threading.Timer(idle_seconds, _end_idle, (scratch,))
            idle.daemon = True
            idle.start()
            request = sys.stdin.readline()
            idle.cancel()
            if not request:
                return 0
            if request.strip():
                main(request)
                sys.stdout.flush()
                gc.collect()  # the proof's session and arrays go before the process waits, idle, for the next one
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _end_idle(scratch: str) -> None:
    """End the process from its idle timer, while the main thread waits on stdin."""
    shutil.rmtree(scratch, ignore_errors=True)
    os._exit(0)

