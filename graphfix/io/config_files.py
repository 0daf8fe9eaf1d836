"""How an export's JSON configs (config.json, generation_config.json, preprocessor_config.json) are read, by every
reader (describe's tokens, the proof's encoder inputs): a config names the sizes graphfix allocates and the tokens it
tells a client to feed, so a hostile one must be refused, naming the file and the key, before it steers anything.

A config is read only as a regular file (a FIFO would block for ever, /dev/zero would never end), of at most
MAX_CONFIG_BYTES, as UTF-8 JSON holding an object; JSON nested deeper than Python's reader takes is a clean error.
Its values are checked where they are used, through `positive_int` and `token_id`, against limits no real model
comes near.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ..errors import BadInputError, one_line, raise_if_exhausted

# Real configs are a few kilobytes (a large vocabulary's id2label map, ~1 MB, is the most seen).
MAX_CONFIG_BYTES = 4 << 20


class ConfigValues(dict[str, Any]):
    """Keys of one or more configs, merged; each remembers where it came from, for a refusal to name."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: dict[str, str] = {}

    def add(self, key: str, value: Any, source: str) -> None:
        """`key` from `source` (a file name, or `config.json encoder`), unless an earlier file gave it."""
        if key not in self:
            self[key], self.sources[key] = value, source

    def where(self, key: str) -> str:
        return f"{self.sources.get(key, 'the config')} key {key!r}"


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in the config at `path`; {} when there is no such file. Raises BadInputError naming the
    file when it is not a regular file, is too large, or is not a JSON object."""
    nonblock = getattr(os, "O_NONBLOCK", 0)
    if not nonblock and path.exists() and not path.is_file():  # opening a FIFO would wait for a writer: look first
        raise BadInputError(f"{path} is not a regular file; a config must be one")
    try:
        fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise_if_exhausted(err)
        raise BadInputError(f"cannot read {path}: {err.strerror or err}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())  # what was opened, not what the name said a moment before
        if not stat.S_ISREG(info.st_mode):
            raise BadInputError(f"{path} is not a regular file; a config must be one")
        if info.st_size > MAX_CONFIG_BYTES:
            raise BadInputError(f"{path} is larger than any config ({info.st_size} bytes; at most "
                                f"{MAX_CONFIG_BYTES})")
        data = file.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:  # grew while it was read
        raise BadInputError(f"{path} is larger than any config (more than {MAX_CONFIG_BYTES} bytes)")
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise BadInputError(f"{path} is JSON nested deeper than any config") from None
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError alike
        raise BadInputError(f"{path} is not a UTF-8 JSON config: {one_line(str(err), limit=120)}") from None
    if not isinstance(value, dict):
        raise BadInputError(f"{path} holds JSON {type(value).__name__}, not the object a config is")
    return value


def positive_int(value: Any, where: str, limit: int) -> int:
    """`value` (read from `where`, `config.json key 'num_channels'`) as an integer in 1..limit, else a refusal
    naming where it came from."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadInputError(f"{where} is {_shown(value)}, not a positive integer")
    if value > limit:
        raise BadInputError(f"{where} is {value}, larger than any model's (at most {limit})")
    return value


def token_id(value: Any, where: str) -> int | list[int]:
    """A special token's id as configs write it: an integer >= 0, or a list of them (several end tokens)."""
    ids = value if isinstance(value, list) else [value]
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 1 << 31 for i in ids):
        raise BadInputError(f"{where} is {_shown(value)}, not a token id (an integer >= 0, or a list of them)")
    return value if isinstance(value, list) else int(value)


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["MAX_CONFIG_BYTES", "ConfigValues", "positive_int", "read_config", "token_id"]
