"""`python hidden_linux_apis.py ARGS...` is `graphfix ARGS...` in a Python without what Windows lacks (macOS lacks
some of it too):
- POSIX I/O: `import fcntl` fails; os has no copy_file_range, sendfile, pread, preadv, SEEK_DATA, SEEK_HOLE,
  O_NOFOLLOW or O_NONBLOCK; every path under /proc is "no such file" to os and open();
- POSIX owners and signals: os has no getuid, signal no SIGXFSZ.
Only graphfix's own process is changed: the proof's child is onnxruntime's Linux build, which needs /proc for
external data where its macOS and Windows builds use their own calls.

Applied at import, before graphfix loads, and again in each --jobs worker (which re-imports this main module).
"""

import builtins
import io
import os
import signal
import sys

HIDDEN_OS = ("copy_file_range", "sendfile", "pread", "preadv", "SEEK_DATA", "SEEK_HOLE", "O_NOFOLLOW", "O_NONBLOCK",
             "getuid")
HIDDEN_SIGNALS = ("SIGXFSZ",)

sys.modules["fcntl"] = None  # type: ignore[assignment]  # `import fcntl` now raises ImportError
for _name in HIDDEN_OS:
    if hasattr(os, _name):
        delattr(os, _name)
for _name in HIDDEN_SIGNALS:
    if hasattr(signal, _name):
        delattr(signal, _name)



def _without_proc(function):  # type: ignore[no-untyped-def]
    def refuse_proc(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith("/proc"):
            raise FileNotFoundError(2, "No such file or directory", path)
        return function(path, *args, **kwargs)

    return refuse_proc


for _name in ("readlink", "stat", "lstat", "open", "listdir", "scandir", "access"):
    setattr(os, _name, _without_proc(getattr(os, _name)))
builtins.open = _without_proc(builtins.open)
io.open = builtins.open

def probe() -> dict[str, bool]:
    """What graphfix sees here: each Linux-only API it would use, and whether its fallbacks are the ones chosen."""
    import importlib.util

    from graphfix.io import datacopy, portable

    return {"fcntl": importlib.util.find_spec("fcntl") is not None and _importable("fcntl"),
            **{name: hasattr(os, name) for name in HIDDEN_OS}, **{name: hasattr(signal, name) for name in HIDDEN_SIGNALS},
            "/proc/self/fd": _proc_readable(),
            "reflink": datacopy._ioctl() is not None, "nofollow": bool(portable.O_NOFOLLOW)}


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _proc_readable() -> bool:
    try:
        os.readlink("/proc/self/fd/0")
    except OSError:
        return False
    return True


if __name__ == "__main__" and sys.argv[1:] == ["--probe"]:
    import json

    print(json.dumps(probe()))
elif __name__ == "__main__":
    from graphfix.__main__ import main

    sys.argv[0] = "graphfix"
    main()
