"""The plain present->past client loop, for runtimes driven from Python (OpenVINO, tract): what a Rust/C#/Java client
does with an Optimum export, written against numpy only, so each runtime's client supplies nothing but one call of
its own API. It imports nothing from graphfix and nothing from pytest (tract_client.py runs it in a subprocess).

A client is `decode(input_ids, past) -> (logits, presents)`:
- `past=None`: the no-cache path over `input_ids` (step 1 of the loop, and full recompute of a whole prefix);
- `past=dict`: the cache path, `past` being the previous step's presents renamed present.* -> past_key_values.*.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Decode = Callable[[np.ndarray, "dict[str, np.ndarray] | None"], "tuple[np.ndarray, dict[str, np.ndarray]]"]


def text_source(source_ids: list[int]) -> dict[str, np.ndarray]:
    """Encoder feeds of a text model: one source, no padding."""
    return {"input_ids": np.array([source_ids], dtype=np.int64),
            "attention_mask": np.ones((1, len(source_ids)), dtype=np.int64)}


def speech_source(num_mel_bins: int, frames: int = 3000, seed: int = 0) -> dict[str, np.ndarray]:
    """Encoder feeds of Whisper: log-mel input_features of (1, num_mel_bins, frames), seeded noise (the tiny model's
    encoder needs exactly 2 x max_source_positions frames)."""
    return {"input_features": np.random.default_rng(seed).standard_normal((1, num_mel_bins, frames)).astype(np.float32)}


def decoder_feeds(input_ids: np.ndarray, encoder_hidden_states: np.ndarray, encoder_feeds: dict[str, np.ndarray],
                  names: set[str]) -> dict[str, np.ndarray]:
    """The decoder inputs every step has (its tokens, the encoder output, the source mask for text models), limited
    to those the decoder declares."""
    feeds = {"input_ids": input_ids, "encoder_hidden_states": encoder_hidden_states}
    if "attention_mask" in encoder_feeds:
        feeds["encoder_attention_mask"] = encoder_feeds["attention_mask"]
    return {name: value for name, value in feeds.items() if name in names}


def as_past(presents: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name.replace("present.", "past_key_values.", 1): value for name, value in presents.items()
            if name.startswith("present.")}


def greedy_loop(decode: Decode, *, start_token: int, eos_token: int, max_new_tokens: int) -> dict:
    """Greedy decoding of max_new_tokens tokens, EOS held off throughout (as transformers' min_new_tokens does).

    Returns {"tokens": start + generated, "logits": last-position logits of every cached step,
    "full_recompute": last-position logits of the no-cache path over the same prefix, "past_lengths": the
    self-attention cache length fed at each step}.
    """
    tokens = [start_token]
    logits, full, past_lengths = [], [], []
    past = None
    for _ in range(max_new_tokens):
        step_logits, presents = decode(np.array([tokens[-1:]], dtype=np.int64), past)
        full_logits, _ = decode(np.array([tokens], dtype=np.int64), None)
        past_lengths.append(0 if past is None else
                            next(v.shape[2] for k, v in past.items() if ".decoder." in k))
        last = np.asarray(step_logits, dtype=np.float64)[0, -1]
        logits.append(last.tolist())
        full.append(np.asarray(full_logits, dtype=np.float64)[0, -1].tolist())
        choice = last.copy()
        choice[eos_token] = -np.inf
        tokens.append(int(np.argmax(choice)))
        past = as_past(presents)
    return {"tokens": tokens, "logits": logits, "full_recompute": full, "past_lengths": past_lengths}
