"""A finding is data first: its fields (code, tensor, before, after, pass) are what the text renders and what JSON
emits; the message is one more field, never parsed back."""

from __future__ import annotations

from dataclasses import replace

from graphfix import repair
from graphfix.cli.report import grouped_lines
from graphfix.findings import DUMMY_ENCODER_KV, EXPLANATIONS, Finding


def test_the_grouped_line_renders_from_fields_whatever_the_message_says():
    finding = Finding(code=DUMMY_ENCODER_KV, message="reworded: nothing here to parse", tensor="present.0.encoder.key",
                      fix="reworded too", before="(0, 4, 1, 8)", after="Identity(past_key_values.0.encoder.key)")
    lines = grouped_lines([finding, replace(finding, tensor="present.1.encoder.key", before="(0, 4, 1, 16)")],
                          width=200)
    assert lines == ["GF101 x2   present.{0,1}.encoder.key: dummy {(0, 4, 1, 8),(0, 4, 1, 16)} -> Identity(past)"]


def test_a_field_no_finding_has_is_left_out_of_the_line():
    lines = grouped_lines([Finding(code=DUMMY_ENCODER_KV, message="m", tensor="present.0.encoder.key")], width=200)
    assert lines == ["GF101      present.0.encoder.key: dummy -> Identity(past)"]


def test_every_change_of_a_real_repair_names_its_pass_and_the_fields_its_line_shows(marian_legacy, tmp_path):
    changes = repair(marian_legacy, tmp_path / "fixed.onnx", validate=False).changes
    assert {change.code for change in changes} == {"GF101", "GF103", "GF104"}
    for change in changes:
        assert change.pass_name and change.to_dict()["pass"] == change.pass_name
        for field in ("before", "after"):
            if "{" + field + "}" in EXPLANATIONS[change.code].summary:
                assert getattr(change, field) is not None, (change.code, field)
