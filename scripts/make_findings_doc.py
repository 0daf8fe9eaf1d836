"""Write docs/findings.md from graphfix's own explanations (findings.CODES and EXPLANATIONS, what `graphfix explain`
prints), so the page cannot drift from the tool: tests/docs/test_docs.py fails when the committed page differs.

    .venv/bin/python scripts/make_findings_doc.py
"""

from __future__ import annotations

from pathlib import Path

from graphfix.findings import CODES, EXPLANATIONS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "findings.md"


def findings_page() -> str:
    lines = ["# Findings", "",
             "Every code `graphfix check` reports and `graphfix repair` fixes; `graphfix explain CODE` prints the same "
             "offline.", "Generated from `graphfix/findings.py` by `scripts/make_findings_doc.py`.", "",
             "| code | what it is |", "|---|---|"]
    lines += [f"| [{code}](#{code.lower()}) | {title} |" for code, title in CODES.items()]
    lines += ["", "The mapping from present to past is by layer index and kind (`present.3.encoder.value` -> "
              "`past_key_values.3.encoder.value`), never by position; a present without its past input is refused, "
              "naming the output. The cache branch is the `If` branch that reads `past_key_values.*`, whatever the "
              "node or attribute is called.", "",
              "A finding is data first: `code`, `tensor` and `node` (what it concerns), `before` (the value found) and "
              "`after` (the value the fix gives), `pass` (the repair pass that found it), `message` and `fix` (one line "
              "each). `--json` emits these fields as they are; the grouped text line of each code below is rendered "
              "from `before` and `after` (every value the findings take, as a set)."]
    for code, title in CODES.items():
        explanation = EXPLANATIONS[code]
        lines += ["", f"## {code}", "", f"**{title}.**", "",
                  f"- **What breaks:** {explanation.breaks}",
                  f"- **Who writes it:** {explanation.exporters}",
                  f"- **The fix:** {explanation.fix}",
                  f"- **Why it is safe:** {explanation.safe}",
                  f"- **Grouped line:** `{code} xN  TENSORS: {explanation.summary}`",
                  "", "```text", explanation.example, "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    PAGE.write_text(findings_page(), encoding="utf-8")
