"""How a Ctrl-C reaches graphfix's one-line report, at the places Python itself cannot raise it.

The end-to-end promise (one `error:` line, exit 130, nothing half-written) is tested on the real process in
test_interruption_and_limits.py; these pin the two mechanisms whose windows are too narrow to hit on purpose there.
"""

from __future__ import annotations

import signal
import sys
import types
from importlib.machinery import ExtensionFileLoader

import pytest

from graphfix.process import interrupts


@pytest.fixture
def installed(monkeypatch):
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGALRM)}
    saved_hook = sys.unraisablehook
    monkeypatch.setattr(interrupts, "RETRY_SECONDS", 60.0)  # a retry must not fire inside the test on a slow host
    interrupts.install()
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    sys.unraisablehook = saved_hook
    interrupts.received = False


def frames(*codes):
    frame = None
    for code in codes:
        frame = types.SimpleNamespace(f_code=code, f_back=frame)
    return frame


def test_ctrl_c_in_ordinary_code_raises_at_once_and_later_errors_count_as_the_interrupt(installed):
    with pytest.raises(KeyboardInterrupt):
        interrupts._interrupted(signal.SIGINT, frames(frames.__code__))
    assert interrupts.is_interrupt(ImportError("initialization failed"))
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN, "a second Ctrl-C must not cut the cleanup short"


@pytest.mark.parametrize("stage", ["create_module", "exec_module"])
def test_ctrl_c_during_a_c_extensions_init_is_held_back_and_retried(installed, stage):
    # The frame Python hands the handler is whatever Python code the extension's init called into.
    inside = frames(getattr(ExtensionFileLoader, stage).__code__, frames.__code__)
    assert interrupts._interrupted(signal.SIGINT, inside) is None
    assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= interrupts.RETRY_SECONDS
    assert signal.getsignal(signal.SIGALRM) is interrupts._interrupted
    signal.setitimer(signal.ITIMER_REAL, 0)
    with pytest.raises(KeyboardInterrupt):  # the retry, once the init has returned
        interrupts._interrupted(signal.SIGALRM, frames(frames.__code__))


class RaisesOnDelete:
    def __init__(self, error: BaseException):
        self.error = error

    def __del__(self):
        raise self.error


def test_ctrl_c_lost_in_a_destructor_is_delivered_again(installed):
    RaisesOnDelete(KeyboardInterrupt())  # Python can only report this one as "Exception ignored"
    assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    signal.setitimer(signal.ITIMER_REAL, 0)


def test_other_errors_in_destructors_are_still_printed(installed, capsys):
    RaisesOnDelete(ValueError("boom in __del__"))
    assert "boom in __del__" in capsys.readouterr().err
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0


def test_a_library_caller_keeps_its_own_signal_handlers():
    handler = signal.getsignal(signal.SIGINT)
    import graphfix.cli  # noqa: F401  (installing is the entry point's job, not an import side effect)

    assert signal.getsignal(signal.SIGINT) is handler


def test_threads_started_while_held_never_take_ctrl_c():
    import threading

    seen = []
    with interrupts.held_for_main_thread():
        thread = threading.Thread(target=lambda: seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        thread.start()
        thread.join()
    assert signal.SIGINT in seen[0]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])


# --- the file steps that must be all-or-nothing under Ctrl-C --------------------------------------------------------


@pytest.fixture
def ctrl_c_raises():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def ctrl_c_during(monkeypatch, module, name: str, when=lambda *args: True):
    """Make the real `module.name` run, then (for the calls `when(*args)` picks) a Ctrl-C arrive, as if the user
    pressed it at that very moment."""
    real = getattr(module, name)

    def and_then_ctrl_c(*args, **kwargs):
        result = real(*args, **kwargs)
        if when(*args):
            signal.raise_signal(signal.SIGINT)
        return result

    monkeypatch.setattr(module, name, and_then_ctrl_c)


def test_ctrl_c_right_after_the_backup_is_linked_still_lets_the_repair_remove_it(tmp_path, marian_legacy,
                                                                                 monkeypatch, ctrl_c_raises):
    import os

    from graphfix.io.write import InPlaceBackup

    model = tmp_path / "decoder_model_merged.onnx"
    model.write_bytes(marian_legacy.read_bytes())
    backup = InPlaceBackup(model)
    ctrl_c_during(monkeypatch, os, "link")
    with pytest.raises(KeyboardInterrupt):
        backup.make()
    assert backup.made and backup.path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.name, backup.path.name], "no hidden temp file left"
    backup.discard_if_unchanged()
    assert sorted(p.name for p in tmp_path.iterdir()) == [model.name]


def test_ctrl_c_between_renames_never_leaves_new_data_beside_the_old_model(tmp_path, marian_legacy, monkeypatch,
                                                                           ctrl_c_raises):
    import os

    import onnx

    from graphfix.io.read import read_model
    from graphfix.io.write import write_models

    source = tmp_path / "in" / "decoder_model_merged.onnx"
    source.parent.mkdir()
    onnx.save(onnx.load(marian_legacy), source, save_as_external_data=True, location="decoder_model_merged.onnx_data",
              size_threshold=0)
    out = tmp_path / "out" / "decoder_model_merged.onnx"
    out.parent.mkdir()
    ctrl_c_during(monkeypatch, os, "replace")  # lands after the data file's rename, before the model's
    with pytest.raises(KeyboardInterrupt):
        write_models({out: None}, read_model(source))
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, "decoder_model_merged.onnx_data"]
    onnx.checker.check_model(str(out), full_check=True)


# --- a Ctrl-C the kernel gives to another thread -----------------------------------------------------------------


@pytest.fixture
def another_thread():
    """A live thread that does not block SIGINT, as onnxruntime leaves behind after validation: while the main thread
    holds the signal, the kernel delivers a process-wide Ctrl-C to this one, and Python then runs the handler in the
    main thread at its next bytecode."""
    import threading

    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    yield
    done.set()
    thread.join()


def ctrl_c_from_the_terminal():
    import os
    import time

    os.kill(os.getpid(), signal.SIGINT)  # process-directed, like a terminal's; raise_signal would pick this thread
    for _ in range(50):  # bytecode boundaries at which the handler would run
        time.sleep(0.001)


@pytest.mark.parametrize("handler", ["graphfix", "library-default"])
def test_a_ctrl_c_taken_by_another_thread_waits_for_the_end_of_the_hold(another_thread, handler, request):
    request.getfixturevalue("installed" if handler == "graphfix" else "ctrl_c_raises")
    reached_the_end = False
    with pytest.raises(KeyboardInterrupt):
        with interrupts.held_for_main_thread():
            ctrl_c_from_the_terminal()
            reached_the_end = True
    assert reached_the_end
    assert interrupts._holds == 0 and not interrupts._held
    if handler == "library-default":
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the caller's handler is restored"
        assert not interrupts.received


def test_a_ctrl_c_while_the_staging_directory_is_made_leaves_no_directory(tmp_path, monkeypatch, another_thread,
                                                                          ctrl_c_raises):
    import tempfile

    from graphfix.io.write import staging_directory

    real = tempfile.mkdtemp

    def mkdtemp_then_ctrl_c(*args, **kwargs):
        made = real(*args, **kwargs)
        ctrl_c_from_the_terminal()
        return made

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        with staging_directory(tmp_path):
            pytest.fail("the block must not start after a Ctrl-C")
    assert list(tmp_path.iterdir()) == []


# --- the one line says what landed ------------------------------------------------------------------------------


@pytest.mark.parametrize("in_place", [False, True], ids=["to-out", "in-place"])
def test_a_ctrl_c_during_the_final_rename_says_the_output_was_written(tmp_path, marian_legacy, monkeypatch,
                                                                      ctrl_c_raises, cli, in_place):
    """Held through the rename and raised right after it: the new model is complete, and the message must not claim
    that nothing was written."""
    import os

    model = tmp_path / "decoder_model_merged.onnx"
    model.write_bytes(marian_legacy.read_bytes())
    out = model if in_place else tmp_path / "fixed.onnx"
    ctrl_c_during(monkeypatch, os, "replace")
    result = cli("repair", model, out, "--no-validate", *(["--in-place"] if in_place else []))
    assert result.exit_code == 130
    assert result.stderr == f"error: interrupted; already written in full: {out}\n"
    assert cli("check", out).exit_code == 0


def test_a_ctrl_c_before_anything_landed_says_nothing_was_written(tmp_path, marian_legacy, monkeypatch, ctrl_c_raises,
                                                                  cli):
    import os

    out = tmp_path / "fixed.onnx"
    out.write_bytes(b"last run's output")
    ctrl_c_during(monkeypatch, os, "chmod")  # the staged model is complete, not yet renamed
    result = cli("repair", marian_legacy, out, "--no-validate", "--force")
    assert result.exit_code == 130
    assert result.stderr == "error: interrupted; nothing was written\n"
    assert out.read_bytes() == b"last run's output"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_a_ctrl_c_after_the_command_finished_keeps_its_exit_status():
    """Interpreter shutdown restores SIGINT's default action; a Ctrl-C then would report a finished run as killed."""
    import subprocess

    code = ("import os, signal, sys; sys.argv = ['graphfix', '--version']; from graphfix.__main__ import main\n"
            "try:\n    main()\nfinally:\n    os.kill(os.getpid(), signal.SIGINT)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("graphfix ")


def test_a_ctrl_c_as_a_repaired_directory_lands_says_it_was_written(tmp_path, marian_legacy, monkeypatch,
                                                                   ctrl_c_raises, cli):
    import os
    import shutil

    from tests.conftest import ROOT

    export = tmp_path / "opus-mt"
    shutil.copytree(ROOT / "sample_models" / "exports" / "current-marian", export)
    shutil.copy(marian_legacy, export / "decoder_model_merged.onnx")
    out = tmp_path / "fixed"
    # the staging directory's one rename into OUT (io.write.land), not the decoders' own renames inside it
    ctrl_c_during(monkeypatch, os, "replace", when=lambda src, dst: str(dst) == str(out))
    result = cli("repair", export, out, "--no-validate")
    assert result.exit_code == 130
    assert result.stderr == f"error: interrupted; already written in full: {out}\n"
    assert cli("check", out / "decoder_model_merged.onnx").exit_code == 0


def test_without_interval_timers_or_signal_masks_a_held_back_ctrl_c_is_still_delivered(installed, monkeypatch):
    """Windows has neither setitimer nor pthread_sigmask: the retry comes from a timer thread through
    _thread.interrupt_main, and a hold defers in the handler alone."""
    import time

    with monkeypatch.context() as hidden:  # undone before `installed` cleans up with setitimer
        hidden.delattr(signal, "setitimer")
        hidden.delattr(signal, "pthread_sigmask")
        hidden.setattr(interrupts, "RETRY_SECONDS", 0.01)
        with pytest.raises(KeyboardInterrupt):
            with interrupts.held_for_main_thread():
                signal.raise_signal(signal.SIGINT)  # held: raised where the block ends
        interrupts.received = False
        signal.signal(signal.SIGINT, interrupts._interrupted)
        inside = frames(ExtensionFileLoader.exec_module.__code__, frames.__code__)
        assert interrupts._interrupted(signal.SIGINT, inside) is None
        with pytest.raises(KeyboardInterrupt):  # the retry, delivered in the main thread by the timer thread
            for _ in range(500):  # interrupt_main sets a flag that a sleep in C does not wake for: short sleeps
                time.sleep(0.01)
