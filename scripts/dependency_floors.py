"""The declared floors of graphfix's dependencies, for `make test-floors`.

`python scripts/dependency_floors.py pyproject.toml` prints a pip constraints file pinning every `name>=X` of
[project] dependencies to `name==X`; with `--check` it instead verifies that this interpreter has exactly those
versions installed (so that a constraint pip did not honour cannot pass as a tested floor).
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path


def floors(pyproject: Path) -> dict[str, str]:
    text = pyproject.read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    if block is None:
        raise SystemExit(f"{pyproject}: no [project] dependencies")
    found: dict[str, str] = {}
    for requirement in re.findall(r'^\s*"([^"]+)"', block[1], re.M):
        match = re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)", requirement)
        if match is None:
            raise SystemExit(f"{pyproject}: {requirement!r} declares no floor (name>=X)")
        found[match[1]] = match[2]
    return found


def _same(installed: str, floor: str) -> bool:
    """1.16 is 1.16.0: the floor's release, padded."""
    def parts(version: str) -> list[int]:
        numbers = [int(p) for p in re.findall(r"\d+", version.split("+")[0])[:3]]
        return numbers + [0] * (3 - len(numbers))

    return parts(installed) == parts(floor)


def main(argv: list[str]) -> int:
    check = "--check" in argv
    pyproject = Path(next(a for a in argv if not a.startswith("--")))
    if not check:
        print("\n".join(f"{name}=={version}" for name, version in floors(pyproject).items()))
        return 0
    wrong = [f"{name} {metadata.version(name)} (floor {version})" for name, version in floors(pyproject).items()
             if not _same(metadata.version(name), version)]
    if wrong:
        print("not at the declared floor: " + ", ".join(wrong), file=sys.stderr)
        return 1
    print("at the declared floors: " + ", ".join(f"{n} {metadata.version(n)}" for n in floors(pyproject)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
