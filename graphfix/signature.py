"""Names in an Optimum merged decoder's signature. No imports: the decode loop uses these in environments that
hold nothing but numpy and onnxruntime."""

import re

CACHE_FLAG = "use_cache_branch"
PAST = re.compile(r"^past_key_values\.(\d+)\.(encoder|decoder)\.(key|value)$")
PRESENT = re.compile(r"^present\.(\d+)\.(encoder|decoder)\.(key|value)$")
