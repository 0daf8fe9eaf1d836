"""onnxruntime's load verdicts, remembered per file content and runtime: `check` of an unchanged model that only a
session can judge (proof/loadable.py `undecided`) costs a hash of its bytes on the next run, not a session.

Key: sha256 of the model's skeleton (io/read.py: the graph with each large payload replaced by its byte range, so
every shape, type, size and external-data reference is in it) with the onnxruntime release that judged it; hashing
it costs what parsing did, whatever the weights weigh. Mtimes take no part: a file rewritten with the same bytes
keeps its verdict; a changed graph, tensor type, shape or size is judged again. The values of large weights are not
in the key: onnxruntime's loader does not judge them. Each verdict is one JSON file in
`<graphfix cache>/load-verdicts/` (directory 0700, file 0600), written to a temporary name and renamed into place;
an entry that is not ours, not a regular file, not readable or not a verdict for this very key is ignored (the
session decides, as if nothing were remembered). The cache is an optimisation only: any OSError using it is
passed over.

`check`'s whole outcome for a file (its findings, the file passed over, the oldest release that loads it: a
CheckResult as data) is remembered the same way, in `<graphfix cache>/check-outcomes/`, under a key of the
skeleton's bytes as read (io/read.py `read_skeleton`, before it is parsed), the options that change the answer, the
installed onnxruntime release and graphfix's own code (its version and every file of the package, by name, size and
mtime): an unchanged model costs a split and a hash on the next run, not a parse, the passes and the proof of
loadability. A check that raised (an unloadable file, not a merged decoder) is not remembered. The external-data
files such an outcome needs are opened and measured again on every run (io/external_data.py `open_needed`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ..io import protowire
from ..io.portable import owned_by_another, read_at
from ..io.read import LoadedModel, Skeleton

FORMAT = 1


@functools.cache
def installed_release() -> str:
    """The installed onnxruntime's version, read from its metadata (importing onnxruntime costs a session's worth
    of milliseconds on small models)."""
    from importlib import metadata

    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import onnxruntime

    return str(onnxruntime.__version__)


def content_key(loaded: LoadedModel, release: str) -> str:
    """The verdict's key: the skeleton's bytes (the whole graph, every small tensor's value, every large payload's
    type, shape and byte range, every external-data location, offset and length) and `release`. What the key leaves
    out, the values of the large payloads, onnxruntime's loader never judges; that every external-data file exists
    and is long enough, read_model checks on every run."""
    digest = hashlib.sha256(f"graphfix load verdict {FORMAT}\0onnxruntime {release}\0".encode())
    digest.update(loaded.model.SerializeToString(deterministic=True))
    return digest.hexdigest()


def _verdicts_dir(name: str = "load-verdicts") -> Path | None:
    from .runtimes import cache_dir

    try:
        return cache_dir() / name
    except BadInputError:  # no home directory: nothing is remembered
        return None


def _read_entry(path: Path, limit: int = 1 << 16) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or owned_by_another(info) or info.st_size > limit:
            return None
        entry = json.loads(os.read(fd, limit).decode("utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return entry if isinstance(entry, dict) else None


def remembered(key: str) -> tuple[bool, str] | None:
    """(loads, onnxruntime's message when it does not) for `key`, or None when no sound entry holds it."""
    directory = _verdicts_dir()
    if directory is None:
        return None
    entry = _read_entry(directory / f"{key}.json")
    if entry is None or entry.get("format") != FORMAT or entry.get("key") != key:
        return None
    loads, message = entry.get("loads"), entry.get("message", "")
    if not isinstance(loads, bool) or not isinstance(message, str) or (not loads and not message):
        return None
    return loads, message


def remember(key: str, loads: bool, message: str = "") -> None:
    """Store the verdict for `key` atomically with private modes; a cache it cannot write is passed over."""
    _store("load-verdicts", key, {"format": FORMAT, "key": key, "loads": loads, "message": message})


def _store(name: str, key: str, entry: dict[str, Any]) -> None:
    """Write `entry` as `<cache>/<name>/<key>.json`, atomically with private modes; passed over on any OSError."""
    directory = _verdicts_dir(name)
    if directory is None:
        return
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or owned_by_another(info):
            return  # not ours: never written into
        fd, staged = tempfile.mkstemp(dir=directory, prefix=".verdict-", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(entry, out)
            os.replace(staged, directory / f"{key}.json")
        except BaseException:
            os.unlink(staged)
            raise
    except (OSError, ValueError):  # ValueError: an outcome json cannot write (never expected)
        return


OUTCOME_FORMAT = 1
_OUTCOME_LIMIT = 1 << 22  # a model with thousands of findings still fits; anything larger is not ours


@functools.cache
def code_fingerprint() -> str:
    """graphfix's version and every file of its package (name, size, mtime), with onnx's release: a remembered
    outcome is never trusted by other code (an upgrade, an edited checkout), other tables or another onnx."""
    from importlib import metadata

    from .. import __version__

    try:  # onnx's strict inference is one of the questions asked (loadable.py `doubt`)
        onnx_release = metadata.version("onnx")
    except metadata.PackageNotFoundError:
        onnx_release = "-"
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(f"graphfix {__version__}\0onnx {onnx_release}\0".encode())
    for folder, dirs, files in sorted(os.walk(root)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            try:
                info = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            digest.update(f"{os.path.relpath(os.path.join(folder, name), root)}\0{info.st_size}\0"
                          f"{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()


_HEADER = 11  # a payload field's tag and length varint: what proof/loadable.py `_stored_size` reads of it


def check_key(skeleton: Skeleton, options: str) -> str:
    """The key of `check`'s outcome: the skeleton's bytes as read, the header of every payload it left in the file
    (the field's tag and length, which the skeleton's byte ranges do not say and `_stored_size` reads), `options`
    (whatever changes the answer), the installed onnxruntime release and graphfix's code."""
    digest = hashlib.sha256(f"graphfix check outcome {OUTCOME_FORMAT}\0{code_fingerprint()}\0onnxruntime "
                            f"{installed_release()}\0{options}\0".encode())
    digest.update(skeleton.data)
    digest.update(b"\0payload headers\0")
    for span in protowire.marker_ranges(skeleton.data):
        if span is not None:
            start, end = span
            try:
                digest.update(read_at(skeleton.fd, max(0, min(_HEADER, end - start)), start))
            except (OSError, OverflowError, ValueError):
                digest.update(b"\0unreadable\0")
        digest.update(b"\0")
    return digest.hexdigest()


def remembered_outcome(key: str) -> dict[str, Any] | None:
    """The outcome stored for `key` (as given to remember_outcome), or None when no sound entry holds it."""
    directory = _verdicts_dir("check-outcomes")
    if directory is None:
        return None
    entry = _read_entry(directory / f"{key}.json", _OUTCOME_LIMIT)
    if entry is None or entry.get("format") != OUTCOME_FORMAT or entry.get("key") != key:
        return None
    outcome = entry.get("outcome")
    return outcome if isinstance(outcome, dict) else None


def remember_outcome(key: str, loaded: LoadedModel, outcome: dict[str, Any]) -> None:
    """Store `outcome` for `key`, unless the files changed while they were judged or it names the file (an
    outcome is for any file of these bytes, whatever it is called)."""
    said = json.dumps([outcome.get("findings"), outcome.get("skipped")], ensure_ascii=False)
    if _unchanged(loaded) and loaded.path.name not in said:
        _store("check-outcomes", key, {"format": OUTCOME_FORMAT, "key": key, "outcome": outcome})


def _unchanged(loaded: LoadedModel) -> bool:
    """Whether the files still have the size, mtime and inode they had when hashed (else the verdict may be for
    other bytes than the key's, and is not remembered)."""
    files = ([loaded.file] if loaded.file else []) + list(loaded.data.values())
    try:
        return all((s := os.stat(f.fd)).st_size == f.stat.st_size and s.st_mtime_ns == f.stat.st_mtime_ns
                   for f in files)
    except OSError:
        return False


def load_remembered(loaded: LoadedModel, load: Callable[[], None], *, ask_anyway: bool = False) -> None:
    """Run `load` (which raises BadInputError with onnxruntime's reason) unless a verdict for these bytes and the
    installed onnxruntime is remembered; remember the verdict it gives. `ask_anyway` loads even when one is
    remembered (and replaces it). A remembered refusal raises BadInputError with the message it was given, named
    after the file as it is called now."""
    release = installed_release()
    key = content_key(loaded, release)
    name = loaded.path.name
    if not ask_anyway and (known := remembered(key)) is not None:
        loads, message = known
        if loads:
            return
        raise BadInputError(message.replace("\0NAME\0", name))
    try:
        load()
    except BadInputError as err:
        if _unchanged(loaded):
            remember(key, False, str(err).replace(f"cannot load {name}:", "cannot load \0NAME\0:", 1))
        raise
    if _unchanged(loaded):
        remember(key, True)


__all__ = ["check_key", "code_fingerprint", "content_key", "installed_release", "load_remembered", "remember",
           "remember_outcome", "remembered", "remembered_outcome"]
