"""Model paths as onnxruntime takes them: a UTF-8 string, which a POSIX path need not be."""

from __future__ import annotations

import os
import tempfile


def is_utf8(path: str) -> bool:
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def utf8_alias(path: str) -> str:
    """A directory of symlinks with UTF-8 names, in TMPDIR, standing for the model's own directory: the model as
    `model.onnx` and each sibling a UTF-8 name can reach (its external data), so that onnxruntime, which takes its
    path as a UTF-8 string, resolves the external data where the model's directory holds it."""
    real_dir = os.path.dirname(os.path.abspath(path))
    alias = tempfile.mkdtemp(prefix="graphfix-alias-")
    name = "model.onnx"
    siblings = [entry for entry in os.listdir(real_dir) if is_utf8(entry)]
    while name in siblings:
        name = "_" + name
    os.symlink(os.path.abspath(path), os.path.join(alias, name))
    for entry in siblings:
        os.symlink(os.path.join(real_dir, entry), os.path.join(alias, entry))
    return os.path.join(alias, name)
