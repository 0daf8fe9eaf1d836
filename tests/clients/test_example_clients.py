"""examples/javascript/greedy_decode.mjs, the onnxruntime-node client a user copies (installed from its own
package.json by make test-clients): on every text architecture's repaired export it generates the tokens of the
Python example and of graphfix's full-recompute decode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ..end_to_end.test_examples import EXAMPLE, full_recompute_tokens
from .conftest import ARCHS, ROOT, SOURCE_IDS

JS_EXAMPLE = ROOT / "examples" / "javascript"
MAX_NEW_TOKENS = 10


def _js_example(folder, ids):
    node = shutil.which("node")
    assert node and (JS_EXAMPLE / "node_modules" / "onnxruntime-node").is_dir(), "run make test-clients"
    done = subprocess.run([node, "greedy_decode.mjs", str(folder), *map(str, ids)], cwd=JS_EXAMPLE, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, "MAX_NEW_TOKENS": str(MAX_NEW_TOKENS), "IGNORE_EOS": "1"})
    assert done.returncode == 0, done.stderr
    return [int(token) for token in done.stdout.strip().splitlines()[-1].split()]


def _python_example(folder, ids):
    done = subprocess.run([sys.executable, str(EXAMPLE), str(folder), "--ids", *map(str, ids), "--max-new-tokens",
                           str(MAX_NEW_TOKENS), "--ignore-eos", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["tokens"]


@pytest.mark.parametrize("arch", ARCHS)
def test_the_javascript_and_python_examples_generate_the_full_recompute_tokens(arch, repaired_export):
    folder = repaired_export(arch)
    # EOS is held off so that every step is compared: random-weight BART picks its EOS at step 1
    expected = full_recompute_tokens(folder, SOURCE_IDS[arch], MAX_NEW_TOKENS, stop_at_eos=False)
    assert len(expected) == MAX_NEW_TOKENS + 1

    assert _js_example(folder, SOURCE_IDS[arch]) == expected
    assert _python_example(folder, SOURCE_IDS[arch]) == expected
