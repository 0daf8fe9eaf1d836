"""Every `--json` document, on every exit code, has exactly the keys docs/json-schema.md lists for it: the test reads
the table of that page (each row's top-level keys, in backticks outside parentheses) and holds every document the
commands print, successes and failures alike, to it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "json-schema.md").read_text()
EXPORT = ROOT / "sample_models" / "exports" / "current-marian-opset21"
COMMON = {"schema", "command", "ok"}


def _top_level_keys(text: str) -> set[str]:
    keys, depth = set(), 0
    for token in re.findall(r"`[^`]*`|[()]", text):
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        elif depth == 0:
            keys.add(token.strip("`"))
    return keys


def documented() -> dict[str, set[str]]:
    """document (the table's first column) -> its keys, from the page itself."""
    rows = re.findall(r"^\| (`[^`]*`|any failure[^|]*) \| (.*) \|$", DOC, re.M)
    table = {name.strip("`"): _top_level_keys(keys) for name, keys in rows}
    validation = re.search(r"A validation: (.*?)\. ", DOC, re.S)
    assert validation is not None
    # `encoder` has its own sentence on the page; `ok` is every document's
    table["validate FILE"] = (_top_level_keys(validation[1]) | {"encoder"}) - COMMON
    return table


DOCUMENTED = documented()
FAILURE = DOCUMENTED[next(name for name in DOCUMENTED if name.startswith("any failure"))]


def assert_documented(stdout: str, exit_code: int, document: str) -> dict:
    """The one document of a run: the keys of its row, or on a failure (exit 2, 128+n, a repair that did not
    land) the failure row's keys, with the command's own where it still has them (check's `results`)."""
    payload = json.loads(stdout)
    assert payload["schema"] == "graphfix/1"
    keys = set(payload) - COMMON
    failed = exit_code == 2 or exit_code >= 128 or (document.startswith("repair") and exit_code != 0)
    if failed:
        assert FAILURE <= keys <= FAILURE | DOCUMENTED[document], (document, exit_code, keys)
        assert payload["exit_code"] == exit_code and payload["error"], payload
    else:
        assert keys == DOCUMENTED[document], (document, exit_code, keys ^ DOCUMENTED[document])
    assert payload["ok"] is (exit_code == 0)
    return payload


def test_the_page_lists_every_command():
    assert {"explain [CODE]", "repair IN OUT", "repair DIR OUT", "check PATH...", "describe MODEL\\|DIR",
            "validate FILE", "validate DIR", "split MERGED OUT_DIR"} <= set(DOCUMENTED)


@pytest.fixture(scope="module")
def repaired_decoder(tmp_path_factory) -> Path:
    from graphfix import repair

    out = tmp_path_factory.mktemp("json") / "decoder_model_merged.onnx"
    repair(EXPORT / "decoder_model_merged.onnx", out, validate=False)
    return out


def cases(tmp: Path, repaired: Path, marian: Path) -> list[tuple[str, list[object]]]:
    encoder = EXPORT / "encoder_model.onnx"
    unreadable = tmp / "unreadable.onnx"
    unreadable.write_bytes(b"not a model")
    return [
        ("explain [CODE]", ["explain"]),
        ("explain [CODE]", ["explain", "GF999"]),
        ("repair IN OUT", ["repair", "--no-validate", marian, tmp / "a.onnx"]),
        ("repair IN OUT", ["repair", unreadable, tmp / "b.onnx"]),
        ("repair IN OUT", ["repair", encoder, tmp / "c.onnx"]),
        ("repair DIR OUT", ["repair", "--no-validate", EXPORT, tmp / "d"]),
        ("check PATH...", ["check", repaired]),
        ("check PATH...", ["check", marian]),
        ("check PATH...", ["check", marian, unreadable]),
        ("check PATH...", ["check", tmp / "missing.onnx"]),
        ("check PATH...", ["check", encoder]),
        ("check PATH...", ["check", "--target-ort", "1.16", "--ignore-other-models", repaired, encoder]),
        ("describe MODEL\\|DIR", ["describe", EXPORT]),
        ("describe MODEL\\|DIR", ["describe", tmp / "missing"]),
        ("validate FILE", ["validate", repaired]),
        ("validate FILE", ["validate", marian]),
        ("validate FILE", ["validate", unreadable]),
        ("validate DIR", ["validate", EXPORT]),
        ("split MERGED OUT_DIR", ["split", "--no-validate", marian, tmp / "split"]),
        ("split MERGED OUT_DIR", ["split", unreadable, tmp / "split2"]),
        ("check PATH...", ["check", "--jobs", "2", marian]),  # a usage error
    ]


def test_every_json_document_on_every_exit_code_has_the_documented_keys(cli, tmp_path, repaired_decoder,
                                                                         marian_current):
    seen_codes: set[int] = set()
    for document, args in cases(tmp_path, repaired_decoder, marian_current):
        result = cli(*args, "--json")
        seen_codes.add(result.exit_code)
        assert_documented(result.stdout, result.exit_code, document)
    assert seen_codes == {0, 1, 2}
