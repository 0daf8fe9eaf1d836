"""RepairOptions and the command line are one definition: each field's Flag (options.py) is the typer option of
every command that offers it, and the parsed parameters build the RepairOptions the library takes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from graphfix import BadInputError, RepairOptions, parse_release
from graphfix.cli import app
from graphfix.options import flags_of


def _command(name: str) -> Any:
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]  # a group of commands


def _options(command: str, *args: str) -> RepairOptions:
    with _command(command).make_context(command, list(args)) as ctx:
        return RepairOptions.from_parameters(ctx.params)


def test_every_flag_of_repair_options_is_a_command_option_with_the_fields_help():
    offered = {opt: param for command in ("repair", "split") for param in _command(command).params
               for opt in param.opts}
    for field in dataclasses.fields(RepairOptions):
        for flag in flags_of(field):
            assert flag.name in offered, flag.name
            assert offered[flag.name].help == flag.help


def test_no_flags_give_the_default_options_on_every_command_that_builds_them():
    assert _options("repair", "in.onnx", "out.onnx") == RepairOptions()
    assert _options("split", "in.onnx", "out") == RepairOptions()


def test_flags_set_the_fields_they_name():
    assert _options("repair", "in.onnx", "out.onnx", "--no-validate", "--target-ort", "1.16", "--skip-target-load",
                    "--link-data", "--in-place", "-f") == RepairOptions(
        validate=False, target_ort=parse_release("1.16"), load_on_target=False, data_mode="link", in_place=True,
        force=True)
    assert _options("repair", "in.onnx", "out.onnx", "--copy-data").data_mode == "copy"
    assert _options("split", "in.onnx", "out", "--ort-version", "1.16.3").ort_version == parse_release("1.16.3")


def test_two_values_of_one_field_exclude_each_other():
    with pytest.raises(BadInputError, match="--copy-data and --link-data exclude each other"):
        _options("repair", "in.onnx", "out.onnx", "--copy-data", "--link-data")
    result = CliRunner().invoke(app, ["repair", "--copy-data", "--link-data", "in.onnx", "out.onnx"])
    assert result.exit_code == 2
    assert "error: --copy-data and --link-data exclude each other" in result.stderr


def test_a_release_that_does_not_parse_is_a_usage_error():
    result = CliRunner().invoke(app, ["repair", "--target-ort", "one", "in.onnx", "out.onnx"])
    assert result.exit_code == 2
    assert "--target-ort" in result.stderr


def test_the_releases_a_run_installs_follow_from_the_options():
    r16, r17 = parse_release("1.16"), parse_release("1.17")
    assert RepairOptions().releases == []
    assert RepairOptions(target_ort=r16).releases == [r16]  # loaded there before it lands
    assert RepairOptions(target_ort=r16, load_on_target=False).releases == []
    assert RepairOptions(target_ort=r16, validate_on_target=True, load_on_target=False).releases == [r16]
    assert RepairOptions(target_ort=r16, ort_version=r17).releases == [r16, r17]
    assert RepairOptions(ort_version=r17, validate=False).releases == []
