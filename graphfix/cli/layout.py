"""Lines that fit the output: names folded into brace patterns, shortened to a budget, wrapped between words
(a tensor name is one word, never cut), within the columns of the terminal or $COLUMNS."""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
from collections.abc import Iterable, Sequence
from typing import TextIO

WIDTH = 100
_SEPARATORS = re.compile(r"([./])")


# --- patterns -------------------------------------------------------------------------------------------------------

def value_set(values: Sequence[str]) -> str:
    """`0`, `{key,value}`, `{0..5}`, `{0,1,3..7}`: the values one position of a pattern takes."""
    if len(values) == 1:
        return values[0]
    if all(v.isdigit() for v in values):
        numbers = sorted({int(v) for v in values})
        runs: list[list[int]] = []
        for n in numbers:
            if runs and n == runs[-1][-1] + 1:
                runs[-1].append(n)
            else:
                runs.append([n])
        parts = [f"{r[0]}..{r[-1]}" if len(r) > 2 else ",".join(map(str, r)) for r in runs]
        return "{" + ",".join(parts) + "}"
    return "{" + ",".join(values) + "}"


def name_patterns(names: Iterable[str]) -> list[str]:
    """Names folded into brace patterns that stand for exactly those names: two patterns that differ in one
    position only are merged until none do, so `present.{0..5}.encoder.{key,value}` means all twelve."""
    unique = list(dict.fromkeys(names))
    patterns: list[tuple[tuple[str, ...], ...]] = [tuple((t,) for t in _SEPARATORS.split(n)) for n in unique]
    merged = True
    while merged:
        merged = False
        for position in range(max((len(p) for p in patterns), default=0)):
            groups: dict[tuple[object, ...], list[tuple[tuple[str, ...], ...]]] = {}
            for pattern in patterns:
                key = (len(pattern), pattern[:position], pattern[position + 1:]) if position < len(pattern) \
                    else (len(pattern), pattern, id(pattern))
                groups.setdefault(key, []).append(pattern)
            if all(len(g) == 1 for g in groups.values()):
                continue
            merged, patterns = True, []
            for group in groups.values():
                head = group[0]
                if len(group) == 1:
                    patterns.append(head)
                    continue
                values = tuple(dict.fromkeys(v for p in group for v in p[position]))
                patterns.append(head[:position] + (values,) + head[position + 1:])
    return ["".join(value_set(list(values)) for values in pattern) for pattern in patterns]


def shortened(parts: list[str], budget: int) -> str:
    """`a, b (+3 more)`: as many patterns as fit in `budget` columns."""
    text = ", ".join(parts)
    if len(text) <= budget:
        return text
    for keep in range(len(parts) - 1, 0, -1):
        text = ", ".join(parts[:keep]) + f" (+{len(parts) - keep} more)"
        if len(text) <= budget:
            return text
    # Not even one fits: what they share up to a separator, `/model/decoder/layers.{0..5}/*`.
    common = parts[0]
    for part in parts[1:]:
        while not part.startswith(common):
            common = common[:-1]
    depth, cut = 0, -1
    for i, char in enumerate(common):  # a separator outside braces (`{0..5}` holds dots)
        depth += (char == "{") - (char == "}")
        if depth == 0 and char in "./":
            cut = i
    shared = common[:cut + 1] + "*" if cut > 0 else "*"
    return shared if len(shared) <= budget else shared[:max(budget - 4, 1)] + "...*"


def fit(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[:width - 3] + "..."


NARROWEST = 40  # below this, wrapping would put a word per line: lines are let run over instead


def columns_asked() -> int | None:
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else None


def output_width(stream: TextIO | None = None) -> int:
    """The columns a text line may take: $COLUMNS, else the terminal's, up to WIDTH; WIDTH in a pipe without
    $COLUMNS (a log has no edge to wrap at)."""
    stream = stream or sys.stdout
    columns = columns_asked()
    if columns is None and hasattr(stream, "isatty") and stream.isatty():
        columns = shutil.get_terminal_size().columns
    return max(min(columns or WIDTH, WIDTH), NARROWEST)


def wrapped(line: str, width: int, hanging: int) -> list[str]:
    """`line` in `width` columns, broken only between words (a tensor name is one word, never cut), each
    continuation indented by `hanging` spaces so it reads as part of the line above."""
    return textwrap.wrap(line, width, subsequent_indent=" " * hanging, break_long_words=False,
                         break_on_hyphens=False) or [line]
