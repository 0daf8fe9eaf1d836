"""The runtime cache is the user's alone and the same whatever shell it was first filled from: installs ignore
PYTHONPATH, user site-packages and pip's environment and config; the cache is private and refused when others may
write to it; a runtime is complete only once it imports onnxruntime and numpy at the expected versions; probes of a
named interpreter end in seconds with everything they started; pip's reason is kept whole; and "installing" is said
only when an install starts.

Each test has a GRAPHFIX_CACHE of its own in tmp. pip and venv are stood in for by a recorder that lays out a venv
whose python is a script answering the verification, so that these tests run in seconds."""

from __future__ import annotations

import os
import stat
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from graphfix.errors import BadInputError
from graphfix.proof import interpreters, runtimes
from graphfix.proof.interpreters import find_interpreter

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "1.16.3"


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def _venv(home: Path, imports: bool = True) -> Path:
    """A venv whose python answers the verification as one holding onnxruntime 1.16.3 and numpy 1.26.4 would, or
    fails it as one without numpy does."""
    (home / "lib" / "python3.11" / "site-packages").mkdir(parents=True, exist_ok=True)
    answer = 'echo \'["1.16.3", "1.26.4"]\'' if imports else "echo \"ModuleNotFoundError: No module named 'numpy'\" >&2; exit 1"
    return _script(home / "bin" / "python", answer + "\n")


class Installs:
    """Stands in for venv and pip (runtimes.run_child): records each command and its environment."""

    def __init__(self, pip_exit: int = 0, pip_stderr: str = "", imports: bool = True):
        self.calls: list[tuple[list[str], dict[str, str]]] = []
        self.pip_exit, self.pip_stderr, self.imports = pip_exit, pip_stderr, imports

    def __call__(self, command: list[str], env: dict[str, str] | None = None, timeout: float | None = None):
        self.calls.append((command, dict(env or {})))
        if "venv" in command:
            _venv(Path(command[-1]), self.imports)
            return subprocess.CompletedProcess(command, 0, "", "")
        return subprocess.CompletedProcess(command, self.pip_exit, "", self.pip_stderr)

    @property
    def pip(self) -> tuple[list[str], dict[str, str]]:
        return next(call for call in self.calls if "pip" in call[0])


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("GRAPHFIX_CACHE", str(path))
    monkeypatch.delenv("GRAPHFIX_PYTHON", raising=False)
    return path


def test_an_install_ignores_pythonpath_user_site_and_pip_settings(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "elsewhere"))  # where a numpy pip would count as installed
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_TARGET", str(tmp_path / "elsewhere"))
    installs = Installs()
    monkeypatch.setattr(runtimes, "run_child", installs)
    runtimes.runtime_python(RELEASE)
    command, env = installs.pip
    assert "--isolated" in command and command[1] == "-I"
    assert "PYTHONPATH" not in env and env["PYTHONNOUSERSITE"] == "1"
    assert not [k for k in env if k.startswith("PIP_")]  # with --isolated: no user pip.conf either
    assert command[command.index("--index-url") + 1] == "http://127.0.0.1:9/simple"  # where packages come from
    assert not any("elsewhere" in part for part in command)  # PIP_TARGET: where they would go, ignored
    venv_command, venv_env = next(call for call in installs.calls if "venv" in call[0])
    assert venv_command[1] == "-I" and "PYTHONPATH" not in venv_env


def test_the_cache_is_made_private(cache, monkeypatch):
    monkeypatch.setattr(runtimes, "run_child", Installs())
    os.umask(0)
    try:
        python = runtimes.runtime_python(RELEASE)
    finally:
        os.umask(0o022)
    home = python.parent.parent
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for site in home.glob("lib/python3*/site-packages"):
        assert not site.stat().st_mode & 0o022


@pytest.mark.parametrize("shared", ["cache", "runtime", "site-packages"])
def test_a_cache_others_may_write_to_is_refused_at_use_in_one_line(cache, cli, marian_current, monkeypatch, shared):
    home = cache / f"onnxruntime-{RELEASE}-{find_interpreter(RELEASE).tag}"
    _venv(home)
    (home / runtimes.COMPLETE).write_text(f"onnxruntime=={RELEASE} numpy==1.26.4 verified\n")
    path = {"cache": cache, "runtime": home, "site-packages": home / "lib" / "python3.11" / "site-packages"}[shared]
    path.chmod(0o777)
    installs = Installs()
    monkeypatch.setattr(runtimes, "run_child", installs)
    with pytest.raises(BadInputError, match="writable by others") as refused:
        runtimes.runtime_python(RELEASE)
    assert str(path) in str(refused.value) and installs.calls == []
    result = cli("validate", marian_current, "--ort-version", RELEASE)
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "writable by others" in result.stderr


def test_without_posix_owners_a_cache_is_used_whatever_its_mode_bits_say(cache, monkeypatch):
    """Windows: no os.getuid, every st_uid 0 and every directory 0o777 by its mode bits; ACLs guard the cache
    there, so neither owner nor mode bits refuse it."""
    home = cache / f"onnxruntime-{RELEASE}-{find_interpreter(RELEASE).tag}"
    _venv(home)
    (home / runtimes.COMPLETE).write_text(f"onnxruntime=={RELEASE} numpy==1.26.4 verified\n")
    for path in (cache, home):
        path.chmod(0o777)
    installs = Installs()
    monkeypatch.setattr(runtimes, "run_child", installs)
    monkeypatch.delattr(os, "getuid")
    assert runtimes.runtime_python(RELEASE) == home / "bin" / "python"
    assert installs.calls == []  # used as it is, not built again


def test_a_runtime_is_complete_only_once_it_imports_onnxruntime_and_numpy(cache, monkeypatch):
    monkeypatch.setattr(runtimes, "run_child", Installs(imports=False))
    with pytest.raises(BadInputError, match="does not import onnxruntime and numpy"):
        runtimes.runtime_python(RELEASE)
    assert not any(cache.glob("onnxruntime-*")) and not any(cache.glob(".onnxruntime-*"))


def test_a_broken_runtime_in_the_cache_is_rebuilt_not_reused(cache, monkeypatch):
    home = cache / f"onnxruntime-{RELEASE}-{find_interpreter(RELEASE).tag}"
    _venv(home, imports=False)
    (home / runtimes.COMPLETE).write_text(f"onnxruntime=={RELEASE}\n")  # an older graphfix's mark, never verified
    installs = Installs()
    monkeypatch.setattr(runtimes, "run_child", installs)
    python = runtimes.runtime_python(RELEASE)
    assert installs.pip  # built again
    assert subprocess.run([python], capture_output=True).returncode == 0  # and this one imports both
    assert (home / runtimes.COMPLETE).read_text().endswith("verified\n")


def test_pips_reason_is_kept_whole(cache, monkeypatch):
    reason = ("Configuration file could not be loaded.\nFile contains no section headers.\n"
              "file: '/home/u/.config/pip/pip.conf', line: 1\n'garbage'\n")
    monkeypatch.setenv("PIP_NO_DEPS", "1")
    monkeypatch.setattr(runtimes, "run_child", Installs(pip_exit=1, pip_stderr=reason))
    with pytest.raises(BadInputError) as refused:
        runtimes.runtime_python(RELEASE)
    text = str(refused.value)
    assert "Configuration file could not be loaded. File contains no section headers." in text
    assert "'garbage'" in text and "PIP_NO_DEPS" in text, text


@pytest.mark.slow  # waits out the interpreter probe's timeout (about 10 s) by design
def test_an_interpreter_that_never_answers_is_given_up_in_seconds_with_everything_it_started(tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    hung = _script(tmp_path / "hung-python", f"""\
        sleep 300 &
        echo $! >> {pids}
        echo $$ >> {pids}
        sleep 300
        """)
    monkeypatch.setenv("GRAPHFIX_PYTHON", str(hung))
    monkeypatch.setattr(interpreters, "PROBE_SECONDS", 2.0)  # what is given up is the point, not the 10 s it waits
    started = time.monotonic()
    with pytest.raises(BadInputError, match="does not run as a Python"):
        find_interpreter(RELEASE)
    assert time.monotonic() - started < 20
    # Killed, not yet gone: a SIGKILLed process may still be scheduled for a moment on a loaded machine (make test's
    # full run once saw the `sleep` alive right after the probe gave up).
    deadline = time.monotonic() + 5
    while (alive := [pid for pid in map(int, pids.read_text().split()) if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive


def _running(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a reaper that a container may not have does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_an_install_is_announced_only_when_it_starts(cli, cache, tmp_path):
    encoder = ROOT / "sample_models" / "exports" / "current-marian" / "encoder_model.onnx"
    result = cli("repair", "--target-ort", "1.15", encoder, tmp_path / "out.onnx")  # refused: not a merged decoder
    assert result.exit_code == 2
    assert "installing onnxruntime" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert not cache.exists()
