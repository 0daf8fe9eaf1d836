"""`graphfix` and `python -m graphfix`: the command line, with Ctrl-C at any moment of a run reported as one line."""

import os
import signal
import sys

# graphfix's numpy arrays are tiny: one OpenBLAS thread is plenty, and its per-thread buffers are what a memory
# limit (ulimit -v) would first run into. Set before numpy loads, in the CLI's own process (and its children) only.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main() -> None:
    from .process import interrupts

    interrupts.install()  # first: a Ctrl-C while the CLI imports is one line too
    started = False
    try:
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


if __name__ == "__main__":
    main()
