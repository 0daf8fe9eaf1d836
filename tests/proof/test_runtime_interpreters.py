"""The interpreter an older onnxruntime release is installed for: onnxruntime 1.16.3 has wheels for CPython
3.8-3.11 only, so from 3.12 or 3.13 graphfix must find (or be told) another Python, and say so in one line when
there is none, before anything is written."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from graphfix.errors import BadInputError
from graphfix.proof import interpreters
from graphfix.proof.interpreters import describe, find_interpreter, has_wheel


def fake_python(directory: Path, name: str, version: str) -> Path:
    """An executable that answers the version probe as CPython `version` would ("3 10")."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho {version.replace('.', ' ')}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def bare_machine(tmp_path, monkeypatch) -> Path:
    """No other Python anywhere: an empty PATH and pyenv root, no GRAPHFIX_PYTHON."""
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("GRAPHFIX_PYTHON", "")  # restored afterwards, also after --runtime-python set it
    return tmp_path


def test_the_measured_table_says_which_cpython_each_release_has_wheels_for():
    assert [v for v in [(3, 8), (3, 11), (3, 12), (3, 13)] if has_wheel("1.16.3", v)] == [(3, 8), (3, 11)]
    assert describe("1.16.3") == "CPython 3.8-3.11"
    assert has_wheel("1.20.1", (3, 13)) and not has_wheel("1.20.1", (3, 9))
    assert has_wheel("1.32.0", (3, 15)) and describe("1.32.0") == "CPython 3.11-3.14 and later"


def test_a_release_without_a_wheel_for_this_python_takes_the_newest_fitting_one_from_pyenv(bare_machine):
    """1.14 has wheels for 3.8-3.10, this interpreter is newer (the tests run on 3.11 or later)."""
    versions = bare_machine / "pyenv" / "versions"
    fake_python(versions / "3.9.18" / "bin", "python3.9", "3.9")
    newest = fake_python(versions / "3.10.13" / "bin", "python3.10", "3.10")
    fake_python(versions / "3.12.1" / "bin", "python3.12", "3.12")
    found = find_interpreter("1.14.1")
    assert (found.path, found.version, found.tag) == (newest, (3, 10), "py3.10")


def test_python3_y_on_path_is_found_and_one_that_does_not_run_is_passed_over(bare_machine):
    broken = bare_machine / "bin" / "python3.10"  # a pyenv shim of a version not active here exits non-zero
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\nexit 127\n")
    broken.chmod(0o755)
    on_path = fake_python(bare_machine / "bin", "python3.9", "3.9")
    assert find_interpreter("1.14.1").path == on_path


def test_with_no_fitting_python_one_line_names_the_supported_versions_and_how_to_name_one(bare_machine):
    with pytest.raises(BadInputError) as refused:
        find_interpreter("1.14.1")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("onnxruntime 1.14.1 has wheels for CPython 3.8-3.10 only")
    assert "--runtime-python" in message and "GRAPHFIX_PYTHON" in message


def test_a_named_interpreter_is_taken_and_one_without_a_wheel_is_refused(bare_machine, monkeypatch):
    named = fake_python(bare_machine / "elsewhere", "python", "3.9")
    monkeypatch.setenv("GRAPHFIX_PYTHON", str(named))
    assert find_interpreter("1.16.3").path == named  # named wins over this interpreter, which fits too
    too_new = fake_python(bare_machine / "new", "python", "3.13")
    with pytest.raises(BadInputError, match=r"has wheels for CPython 3\.8-3\.11 only, and the runtime interpreter "
                                            r".* is 3\.13: name one of those"):
        find_interpreter("1.16.3", str(too_new))


def test_repair_refuses_before_writing_when_no_python_fits_the_target_release(bare_machine, marian_current, cli,
                                                                             monkeypatch):
    monkeypatch.setenv("GRAPHFIX_CACHE", str(bare_machine / "cache"))
    out = bare_machine / "out.onnx"
    refused = cli("repair", marian_current, out, "--target-ort", "1.14")
    assert refused.exit_code == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "onnxruntime 1.14.1 has wheels for CPython 3.8-3.10 only" in refused.stderr
    assert "--skip-target-load" in refused.stderr
    assert not out.exists() and not (bare_machine / "cache").exists()


def test_runtime_python_option_names_the_interpreter_for_validate(bare_machine, marian_current, cli, monkeypatch):
    monkeypatch.setenv("GRAPHFIX_CACHE", str(bare_machine / "cache"))
    too_new = fake_python(bare_machine / "new", "python", "3.13")
    refused = cli("validate", marian_current, "--ort-version", "1.16.3", "--runtime-python", too_new)
    assert refused.exit_code == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert f"the runtime interpreter {too_new} is 3.13" in refused.stderr


def test_the_runtime_cache_keeps_one_venv_per_release_and_interpreter_version(tmp_path, monkeypatch):
    from graphfix.proof import runtimes
    from graphfix.proof.runtime_isolation import mark_text

    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path))
    for tag in ("py3.10", "py3.11"):
        fake_python(tmp_path / f"onnxruntime-1.16.3-{tag}" / "bin", "python", tag[2:])
        # complete, verified venvs, as made
        (tmp_path / f"onnxruntime-1.16.3-{tag}" / runtimes.COMPLETE).write_text(mark_text("1.16.3", "1.26.4"))
    for version, tag in [((3, 10), "py3.10"), ((3, 11), "py3.11")]:
        monkeypatch.setattr(runtimes, "find_interpreter",
                            lambda release, v=version: interpreters.Interpreter(Path("/unused"), v))
        assert runtimes.runtime_python("1.16.3") == tmp_path / f"onnxruntime-1.16.3-{tag}" / "bin" / "python"
