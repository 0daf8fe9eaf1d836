"""`graphfix` and `python -m graphfix`: the command line, with Ctrl-C at any moment of a run reported as one line.

Importing the CLI is most of a short run and typer builds the click command before any handler of ours runs, so
both sit inside this module's guards rather than in the CLI itself.
"""

import os
import signal
import sys
from typing import NoReturn

# graphfix's numpy arrays are tiny: one OpenBLAS thread is plenty, and its per-thread buffers (tens of MB each) are
# what a memory limit (ulimit -v) first runs into, ending the process from inside OpenBLAS. Set before numpy loads;
# inherited by the proof's subprocess and --jobs workers.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .io.native_libraries import address_space_limit
from .process import interrupts


def _out_of_memory_starting(err: Exception) -> NoReturn:
    """An address-space limit (ulimit -v) below what the command line itself needs, met before any command runs
    (importing the CLI, typer building its commands): MemoryError, or on 3.13 the import machinery's SystemError.
    One line, exit 2. Without a limit it is a bug, and its traceback is wanted."""
    if not isinstance(err, MemoryError) and address_space_limit() is None:
        raise err
    sys.stderr.write("error: out of memory (starting graphfix); raise the memory limit (ulimit -v) or free memory\n")
    raise SystemExit(2) from None


interrupts.install()
try:
    from .cli import app
except KeyboardInterrupt:
    sys.stderr.write(f"error: {interrupts.message()}; nothing was written\n")
    raise SystemExit(interrupts.exit_status()) from None
except Exception as err:
    _out_of_memory_starting(err)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # escaped every command's own handler (typer parsing, or a command just returned)
        sys.stderr.write(f"error: {interrupts.message()}\n")
        raise SystemExit(interrupts.exit_status()) from None
    except Exception as err:  # escaped every command's own handler: typer building its commands
        _out_of_memory_starting(err)
    finally:
        # The command has reported its outcome. Interpreter shutdown restores SIGINT's default action, so a signal
        # in it (tens of ms once onnxruntime is loaded) would only turn the real exit status into "killed".
        for sig in interrupts.STOPPING:
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    main()
