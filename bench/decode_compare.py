"""Greedy decoding three ways, in onnxruntime, on the same encoder output:

- merged:   the repaired merged decoder driven by the plain present->past loop (what a Rust/C#/Java client does);
- split:    Optimum's own client: decoder_model for step 1, then decoder_with_past_model, fed the encoder KV of
            step 1 at every later step (ORTModelForSeq2SeqLM's behaviour);
- no-cache: the workaround for an unrepaired merged decoder: the no-cache branch over the whole prefix every step.

EOS is ignored so every run decodes exactly the requested number of tokens.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

START = 65000  # opus-mt-en-zh's decoder_start_token_id (its pad)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Decoders:
    def __init__(self, export_dir: Path, repaired_merged: Path, source_length: int = 16, seed: int = 0):
        encoder = _session(export_dir / "encoder_model.onnx")
        self.merged = _session(repaired_merged)
        self.first = _session(export_dir / "decoder_model.onnx")
        self.with_past = _session(export_dir / "decoder_with_past_model.onnx")
        ids = np.random.default_rng(seed).integers(4, 60000, size=(1, source_length), dtype=np.int64)
        mask = np.ones_like(ids)
        hidden = encoder.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        self.encoder = {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        self.merged_out = [o.name for o in self.merged.get_outputs()]
        self.past_names = [i.name for i in self.merged.get_inputs() if i.name.startswith("past_key_values.")]
        self.empty_past = {}
        for spec in self.merged.get_inputs():
            if spec.name in self.past_names:
                self.empty_past[spec.name] = np.zeros((1, spec.shape[1], 0, spec.shape[3]), dtype=np.float32)

    def _merged_step(self, tokens: np.ndarray, past: dict | None) -> dict[str, np.ndarray]:
        feeds = {**self.encoder, "input_ids": tokens, "use_cache_branch": np.array([past is not None]),
                 **(past if past is not None else self.empty_past)}
        return dict(zip(self.merged_out, self.merged.run(self.merged_out, feeds)))

    def merged_cached(self, steps: int, logits: list | None = None) -> list[int]:
        tokens, past = [START], None
        for _ in range(steps):
            out = self._merged_step(np.array([tokens[-1:] if past else tokens], dtype=np.int64), past)
            if logits is not None:
                logits.append(out["logits"][0, -1])
            tokens.append(int(out["logits"][0, -1].argmax()))
            past = {name.replace("present.", "past_key_values.", 1): value
                    for name, value in out.items() if name.startswith("present.")}
        return tokens[1:]

    def split(self, steps: int, logits: list | None = None) -> list[int]:
        first_out = [o.name for o in self.first.get_outputs()]
        later_out = [o.name for o in self.with_past.get_outputs()]
        later_in = {i.name for i in self.with_past.get_inputs()}
        out = dict(zip(first_out, self.first.run(first_out, {**self.encoder, "input_ids": np.array([[START]])})))
        tokens = [int(out["logits"][0, -1].argmax())]
        if logits is not None:
            logits.append(out["logits"][0, -1])
        encoder_kv = {n.replace("present.", "past_key_values.", 1): v for n, v in out.items() if ".encoder." in n}
        past = {n.replace("present.", "past_key_values.", 1): v for n, v in out.items() if ".decoder." in n}
        for _ in range(steps - 1):
            feeds = {**self.encoder, "input_ids": np.array([[tokens[-1]]]), **past, **encoder_kv}
            out = dict(zip(later_out, self.with_past.run(later_out, {k: v for k, v in feeds.items() if k in later_in})))
            tokens.append(int(out["logits"][0, -1].argmax()))
            if logits is not None:
                logits.append(out["logits"][0, -1])
            past = {n.replace("present.", "past_key_values.", 1): v for n, v in out.items() if ".decoder." in n}
        return tokens

    def no_cache(self, steps: int) -> list[int]:
        tokens = [START]
        for _ in range(steps):
            out = self._merged_step(np.array([tokens], dtype=np.int64), None)
            tokens.append(int(out["logits"][0, -1].argmax()))
        return tokens[1:]


def timed(run, steps: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = run(steps)
    return time.perf_counter() - start, tokens


def compare(export_dir: Path, repaired_merged: Path, runs: int = 9) -> dict:
    decoders = Decoders(export_dir, repaired_merged)
    merged_logits, split_logits = [], []
    decoders.merged_cached(64, merged_logits), decoders.split(64, split_logits)  # also warms up the arenas
    logits_diff = max(float(np.abs(a - b).max()) for a, b in zip(merged_logits, split_logits))
    merged_times, split_times = [], []
    for run in range(runs):  # interleaved in alternating order, so load and warm-up hit both alike
        for name in (("merged", "split") if run % 2 == 0 else ("split", "merged")):
            if name == "merged":
                t, merged_tokens = timed(decoders.merged_cached, 64)
                merged_times.append(t)
            else:
                t, split_tokens = timed(decoders.split, 64)
                split_times.append(t)
    result = {"merged_64": statistics.median(merged_times), "split_64": statistics.median(split_times),
              "merged_over_split": statistics.median(m / s for m, s in zip(merged_times, split_times)),
              "tokens_identical": merged_tokens == split_tokens, "distinct_tokens": len(set(merged_tokens)),
              "max_logits_diff": logits_diff,
              "speedup": {}}
    for steps in (32, 64, 128):
        cached = statistics.median(timed(decoders.merged_cached, steps)[0] for _ in range(3))
        full_time, full_tokens = timed(decoders.no_cache, steps)
        result["speedup"][steps] = {"cached": cached, "no_cache": full_time, "ratio": full_time / cached,
                                    "tokens_identical": full_tokens == decoders.merged_cached(steps)}
    return result
