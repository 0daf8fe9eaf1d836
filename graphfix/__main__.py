"""`graphfix` and `python -m graphfix`: the command line, with Ctrl-C at any moment of a run reported as one line."""

import os
import signal
import sys

# graphfix's numpy arrays are tiny: one OpenBLAS thread is plenty, and its per-thread buffers are what a memory
# limit (ulimit -v) would first run into. Set before numpy loads, in the CLI's own process (and its children) only.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# After any of these, a repair or validate proves nothing in the installed onnxruntime (or nothing at all).
_NO_INSTALLED_PROOF = frozenset({"--no-validate", "--validate-on-target", "--ort-version", "--runtime-python",
                                 "--help", "-h", "--version"})


def _proof_follows(args: list[str]) -> bool:
    """Whether `graphfix ARGS` will prove a model file in the installed onnxruntime: `repair` or `validate` naming an
    existing file, the proof neither switched off nor sent to another release. Read before the command line is
    imported, so a wrong guess is possible, and cheap: a process ended unused. Not under an address-space limit,
    where importing the command line may exhaust it and leave too little to end that process cleanly."""
    from .process.limits import address_space_limited

    return (args[:1] in (["repair"], ["validate"]) and not address_space_limited()
            and not any(arg.partition("=")[0] in _NO_INSTALLED_PROOF for arg in args)
            and any(os.path.isfile(arg) for arg in args[1:]))


def main() -> None:
    from .process import interrupts

    interrupts.install()  # first: a Ctrl-C while the CLI imports is one line too
    started = False
    try:
        if _proof_follows(sys.argv[1:]):
            _start_proof_early()  # ended unused by child.py's atexit hook, as every idle proof process is
        from .cli import app

        started = True
        app()
    except KeyboardInterrupt:  # escaped every command's own handler (importing, typer parsing)
        sys.stderr.write(f"error: {interrupts.message()}{'' if started else '; nothing was written'}\n")
        raise SystemExit(interrupts.exit_status()) from None
    except MemoryError:  # a limit (ulimit -v) below what importing the command line itself needs
        sys.stderr.write("error: out of memory (starting graphfix); raise the memory limit (ulimit -v) "
                         "or free memory\n")
        raise SystemExit(2) from None
    finally:
        # The command has reported its outcome. Interpreter shutdown restores SIGINT's default action, so a signal
        # in it (tens of ms once onnxruntime is loaded) would only turn the real exit status into "killed".
        for sig in interrupts.STOPPING:
            signal.signal(sig, signal.SIG_IGN)


def _start_proof_early() -> None:
    """The proof's process, importing onnxruntime while the command line is imported and the model read."""
    from .proof import child

    try:
        child.start_idle()
    except (OSError, MemoryError):  # the proof starts its own, and says what fails
        pass


if __name__ == "__main__":
    main()
