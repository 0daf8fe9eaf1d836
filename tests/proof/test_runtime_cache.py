"""Other users' limits. The runtime cache ($GRAPHFIX_CACHE, else ~/.cache/graphfix) fails in one line naming the path and what to do, and
nothing else graphfix does needs a home directory: a service user whose HOME is /nonexistent, a uid with no passwd
entry, a read-only or foreign-owned cache, a cache path below a file.

Other users are real ones (setpriv to nobody, or to a uid with no passwd entry), given only the capability to read
and traverse what root owns (this interpreter lives under /root, mode 0700): every write obeys their own rights.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ..process.test_interruption_and_limits import SOURCE, graphfix_command

NOBODY = 65534
NO_PASSWD_ENTRY = 54321

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
def shared():
    """A directory every user may write to (pytest's own tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="graphfix-cache-test-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_user(uid: int, args: list, env: dict[str, str], cwd: Path, preexec_fn=None) -> subprocess.CompletedProcess:
    switch = ["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
              "--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search"]
    base = {k: v for k, v in os.environ.items() if k not in ("HOME", "GRAPHFIX_CACHE", "XDG_CACHE_HOME")}
    return subprocess.run([*switch, *graphfix_command(), *map(str, args)], capture_output=True, text=True,
                          env={**base, **env}, cwd=cwd, timeout=300, preexec_fn=preexec_fn)


def assert_one_cache_line(result: subprocess.CompletedProcess, path: Path | str, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "unexpected" not in lines[0] and str(path) in lines[0] and "GRAPHFIX_CACHE" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def target_repair(shared: Path) -> list:
    return ["repair", "--target-ort", "1.16", SOURCE, shared / "fixed.onnx"]


def test_a_read_only_cache_is_one_line_naming_it(shared):
    cache = shared / "cache"
    cache.mkdir(mode=0o755)  # root's: nobody may read it, not write it
    result = as_user(NOBODY, target_repair(shared), {"GRAPHFIX_CACHE": str(cache), "HOME": "/nonexistent"}, shared)
    assert_one_cache_line(result, cache, "Permission denied")
    assert sorted(p.name for p in shared.iterdir()) == ["cache"] and list(cache.iterdir()) == []


def test_a_service_user_whose_home_does_not_exist_is_told_to_set_the_cache(shared):
    result = as_user(NOBODY, target_repair(shared), {"HOME": "/nonexistent"}, shared)
    assert_one_cache_line(result, "/nonexistent/.cache", "Permission denied")


def test_a_uid_without_a_passwd_entry_or_home_is_told_to_set_the_cache(shared):
    result = as_user(NO_PASSWD_ENTRY, target_repair(shared), {}, shared)
    assert_one_cache_line(result, "", "no home directory")


def test_a_cache_path_below_a_file_is_one_line_naming_it(shared):
    (shared / "file").write_text("not a directory\n")
    cache = shared / "file" / "cache"
    result = as_user(NOBODY, target_repair(shared), {"GRAPHFIX_CACHE": str(cache)}, shared)
    assert_one_cache_line(result, shared / "file", "Not a directory")


def test_a_runtime_someone_else_put_in_the_cache_is_never_run(shared):
    from graphfix.proof.interpreters import find_interpreter
    from graphfix.proof.runtimes import COMPLETE

    runtime = shared / "cache" / f"onnxruntime-1.16.3-{find_interpreter('1.16.3').tag}"
    (runtime / "bin").mkdir(parents=True)
    (runtime / "bin" / "python").symlink_to(shutil.which("true") or "/bin/true")
    (runtime / COMPLETE).write_text("")
    os.chown(runtime, NOBODY, NOBODY)
    result = subprocess.run([*graphfix_command(), *map(str, target_repair(shared))], capture_output=True, text=True,
                            env={**os.environ, "GRAPHFIX_CACHE": str(shared / "cache")}, timeout=300)
    assert_one_cache_line(result, runtime, f"belongs to uid {NOBODY}")


@pytest.mark.parametrize("args", [["check", SOURCE], ["repair", SOURCE, "fixed.onnx"], ["explain", "GF101"]],
                         ids=["check", "repair-with-proof", "explain"])
def test_nothing_but_the_runtime_cache_needs_a_home_directory(args, shared):
    result = as_user(NO_PASSWD_ENTRY, args, {}, shared)
    assert result.returncode == (1 if args[0] == "check" else 0), result.stderr
    assert result.stderr == ""


# --- a process limit (root is exempt from RLIMIT_NPROC, so the run is another user's) -----------------------------


@pytest.mark.parametrize("limit", [3, 6])
def test_jobs_under_a_process_limit_succeeds_or_is_one_line_and_leaves_nothing(limit, shared):
    import resource

    model = shared / "model"
    (model / "onnx").mkdir(parents=True)
    for name in ("decoder_model_merged.onnx", "decoder_model_merged_quantized.onnx"):
        shutil.copyfile(SOURCE, model / "onnx" / name)
    subprocess.run(["chmod", "-R", "a+rwX", str(model)], check=True)
    result = as_user(NOBODY, ["repair", "--no-validate", "--jobs", "2", model, shared / "fixed"],
                     {"HOME": "/nonexistent"}, shared,
                     preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit)))
    lines = result.stderr.splitlines()
    if limit > 3 and result.returncode == 0:  # room enough for two workers (nothing is counted up front)
        assert (shared / "fixed" / "onnx" / "decoder_model_merged_quantized.onnx").is_file()
        return
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot start 2 --jobs worker processes: the process limit"), lines[0]
    assert sorted(p.name for p in shared.iterdir()) == ["model"]
