"""docs/clients.md is built from the tested clients: every code block it quotes (`<!-- from FILE#NAME -->`) is the
region of that file between `[docs:NAME]` and `[/docs:NAME]`, every example of examples/ is quoted, and the C# step
table (C# cannot be built here) says what a real repaired export's decoder declares: its inputs in order, their
element types and ranks.

`python tests/docs/test_client_docs.py` rewrites the quoted blocks from the examples."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "clients.md"
QUOTE = re.compile(r"(<!-- from (\S+?)#(\S+) -->\n```\w*\n)(.*?)(^```)", re.S | re.M)
CSHARP = re.compile(r"<!-- csharp-steps:begin -->\n(.*?)<!-- csharp-steps:end -->", re.S)
CSHARP_TYPES = {"long": "int64", "float": "float32", "bool": "bool", "int": "int32", "Float16": "float16"}


def region(path: Path, name: str) -> str:
    """The lines between the `[docs:NAME]` and `[/docs:NAME]` marker lines of a source file, dedented, without
    leading or trailing blank lines."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if f"[docs:{name}]" in line]
    ends = [i for i, line in enumerate(lines) if f"[/docs:{name}]" in line]
    assert len(starts) == 1 and len(ends) == 1 and starts[0] < ends[0], f"{path}: no single region [docs:{name}]"
    return textwrap.dedent("".join(lines[starts[0] + 1:ends[0]])).strip("\n") + "\n"


def quoted(page: str) -> list[tuple[str, str, str]]:
    """(file, region name, the block's text) of every quote of the page."""
    return [(match[2], match[3], match[4]) for match in QUOTE.finditer(page)]


def rendered(page: str) -> str:
    """The page with every quoted block replaced by the region it names."""
    return QUOTE.sub(lambda m: m[1] + region(ROOT / m[2], m[3]) + m[5], page)


def test_every_block_quoted_from_an_example_is_that_examples_code():
    page = PAGE.read_text(encoding="utf-8")

    assert quoted(page), "docs/clients.md quotes no example"
    for file, name, text in quoted(page):
        assert text == region(ROOT / file, name), \
            f"docs/clients.md's quote of {file}#{name} is stale: run python tests/docs/test_client_docs.py"


def test_every_example_is_quoted_in_the_clients_page():
    files = {file for file, _, _ in quoted(PAGE.read_text(encoding="utf-8"))}

    for run in sorted((ROOT / "examples").glob("*/run")):
        folder = run.parent.relative_to(ROOT).as_posix()
        assert any(file.startswith(folder + "/") for file in files), f"docs/clients.md quotes nothing of {folder}"


def test_the_readme_says_in_one_line_which_bindings_are_tested_in_which_releases():
    line = next(line for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("Tested clients (`make test-clients`"))
    names = {"python": "Python", "javascript": "JavaScript", "rust": "Rust", "java": "Java", "go": "Go", "c": "C"}

    for run in sorted((ROOT / "examples").glob("*/run")):
        language = names.get(run.parent.name, run.parent.name)
        named = re.search(rf"(?<!\w){re.escape(language)}(?![\w#+])", line)  # C, not C# or C++
        assert named, f"the README's tested-clients line omits {language}"


def _csharp_rows() -> list[list[str]]:
    table = CSHARP.search(PAGE.read_text(encoding="utf-8"))
    assert table, "docs/clients.md has no C# step table"
    rows = [line.strip("|").split("|") for line in table[1].strip().splitlines()[2:]]
    return [[cell.strip() for cell in row] for row in rows]


def csharp_inputs(layers: int) -> list[tuple[str, str, tuple[str, ...]]]:
    """(input name, dtype, step-1 shape) of the C# table, in its order, its `for N = 0 .. L-1` rows unfolded."""
    inputs = []
    for _, names, value, _, _ in _csharp_rows():
        typed = re.fullmatch(r"`DenseTensor<(\w+)>` \(([^)]*)\)", value)
        assert typed, value
        dtype, shape = CSHARP_TYPES[typed[1]], tuple(d.strip() for d in typed[2].split(","))
        listed = re.findall(r"`([^`]+)`", names)
        per_layer = range(layers) if names.startswith("for N = 0 .. L-1") else [None]
        inputs += [(name.replace(".N.", f".{n}.") if n is not None else name, dtype, shape)
                   for n in per_layer for name in listed]
    return inputs


@pytest.fixture(scope="module")
def repaired_decoders(tmp_path_factory):
    """The merged decoder of the legacy Marian and the current M2M100 export, repaired by graphfix."""
    from graphfix import repair_directory

    out = tmp_path_factory.mktemp("csharp")
    decoders = []
    for export in ("legacy-marian", "current-m2m100"):
        repair_directory(ROOT / "sample_models" / "exports" / export, out / export, validate=False)
        decoders.append(out / export / "decoder_model_merged.onnx")
    return decoders


def test_the_csharp_step_table_says_what_a_repaired_decoder_declares(repaired_decoders):
    from graphfix import describe

    for decoder in repaired_decoders:
        contract = next(m for m in describe(decoder).models if m.kind == "merged decoder")
        layers = len([t for t in contract.inputs if t.name.startswith("past_key_values.")]) // 4
        table = csharp_inputs(layers)

        assert [name for name, _, _ in table] == [t.name for t in contract.inputs]
        for (name, dtype, shape), declared in zip(table, contract.inputs):
            assert dtype == declared.dtype, name
            assert len(shape) == len(declared.shape), name
            fixed = {role: str(size) for role, size in zip(declared.dims, declared.shape) if isinstance(size, int)}
            if name == "use_cache_branch":
                assert shape == ("1",) == tuple(fixed.values())  # rank 1, not a scalar
            if name.startswith("past_key_values."):
                assert shape[2] == "0" and {"heads", "head_dim"} <= set(fixed)  # empty, H and D as declared


if __name__ == "__main__":
    PAGE.write_text(rendered(PAGE.read_text(encoding="utf-8")), encoding="utf-8")
    sys.exit(0)
