"""Names in an Optimum merged decoder's signature. No imports: the decode loop uses these in environments that
hold nothing but numpy and onnxruntime.

Seq2seq decoders name their KV `past_key_values.N.encoder.key` (cross attention) and `.decoder.key` (self
attention); decoder-only ones (GPT-2, the GPT-2 decoder of a VisionEncoderDecoder) `past_key_values.N.key`, which
is self attention. Group 2 of a match is then None.
"""

import re

CACHE_FLAG = "use_cache_branch"
KV_SEQUENCE_AXIS = 2  # KV tensors are (batch, heads, sequence, head_dim)
PAST = re.compile(r"^past_key_values\.(\d+)\.(?:(encoder|decoder)\.)?(key|value)$")
PRESENT = re.compile(r"^present\.(\d+)\.(?:(encoder|decoder)\.)?(key|value)$")


def kv_key(match: "re.Match[str]") -> tuple[int, str, str]:
    """(layer, "encoder" | "decoder", "key" | "value") of a PAST or PRESENT match."""
    return int(match[1]), match[2] or "decoder", match[3]
