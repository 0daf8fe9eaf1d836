"""The suite depends on nothing of the developer's: its own onnxruntime cache, and no shell among its parents."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from graphfix.proof.runtimes import cache_dir

ROOT = Path(__file__).resolve().parents[2]
GRAPHFIX = Path(sys.executable).with_name("graphfix")


def test_the_suite_uses_its_own_runtime_cache():
    expected = os.environ.get("GRAPHFIX_TEST_CACHE") or str(ROOT / "build" / "test-runtime-cache")
    assert cache_dir() == Path(expected)


def _orphaned_run(args: list[str], env: dict[str, str]) -> str:
    """`args` run by a process whose parent is init: no shell among its ancestors, as under CI runners and IDEs."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the forked child
        try:
            if os.fork() == 0:
                os.dup2(write, 1)
                os.dup2(write, 2)
                os.execve(args[0], args, env)
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    return b"".join(chunks).decode()


def test_shell_completion_needs_no_shell_among_the_parents():
    """What tests/cli/test_output.py asks for: the bash completion script, whatever process started the suite."""
    printed = _orphaned_run([str(GRAPHFIX)], {**os.environ, "_GRAPHFIX_COMPLETE": "source_bash"})
    assert "_graphfix_completion" in printed
