"""The output options every command shares (--verbose/--quiet, --json, --debug) are declared once and reach each
command as one typed value; the commands' text comes from cli/report.py (and table.py) alone."""

from __future__ import annotations

import ast
import inspect
import json

import pytest
from typer.main import get_command

from graphfix.cli import app
from graphfix.cli.app import Output, Verbosity
from graphfix.errors import BadInputError

from ..conftest import ROOT

COMMANDS = ROOT / "graphfix" / "cli" / "commands.py"
WITH_FINDINGS = ["repair", "check", "split"]  # the commands that print findings, so have a verbosity


def _options(name: str) -> list[str]:
    command = get_command(app).commands[name]  # type: ignore[attr-defined]
    return [opt for param in command.params for opt in param.opts]


@pytest.mark.parametrize("name", ["repair", "check", "validate", "split", "explain", "describe"])
def test_every_command_offers_the_shared_options_last_and_only_those_it_can_honour(name):
    shared = ["--verbose", "-v", "--quiet", "-q", "--json", "--debug"] if name in WITH_FINDINGS else ["--json", "--debug"]
    options = _options(name)
    assert options[-len(shared):] == shared


def test_the_shared_options_are_declared_once_not_per_command():
    source = COMMANDS.read_text()
    for flag in ('"--json"', '"--debug"', '"--verbose"', '"--quiet"'):
        assert flag not in source, flag
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name.endswith("_command"):  # each turns them into one Output
            calls = [n for n in ast.walk(node) if isinstance(n, ast.Call) and ast.unparse(n.func) == "Output.from_flags"]
            assert len(calls) == 1, node.name


def test_the_commands_print_no_summary_of_their_own():
    """Every line of text a command prints is built in report.py or table.py: commands.py echoes, it does not
    compose."""
    def prints(call: ast.Call) -> bool:  # typer.echo(...) or any other printer named like it
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        return name in ("echo", "say", "print", "write")

    tree = ast.parse(COMMANDS.read_text())
    composed = [ast.unparse(node.args[0]) for node in ast.walk(tree) if isinstance(node, ast.Call) and prints(node)
                and node.args and isinstance(node.args[0], ast.JoinedStr)]
    assert composed[0] == "f'graphfix {__version__}'", composed
    assert all(text[2:].startswith("error: {escaped(") for text in composed[1:]), composed


@pytest.mark.parametrize("flags, verbosity", [({}, Verbosity.NORMAL), ({"verbose": True}, Verbosity.VERBOSE),
                                              ({"quiet": True}, Verbosity.QUIET)])
def test_verbosity_is_one_value_from_two_flags(flags, verbosity):
    assert Output.from_flags(**flags).verbosity is verbosity
    assert Output.from_flags(as_json=True, debug=True) == Output(json=True, debug=True)


def test_verbose_and_quiet_together_are_refused():
    with pytest.raises(BadInputError, match="exclude each other"):
        Output.from_flags(verbose=True, quiet=True)


def test_the_group_reaches_the_error_layer(cli, tmp_path):
    """--json and --debug shape a failure's report, including one raised while the flags are read."""
    result = cli("check", "--json", "--quiet", "--verbose", tmp_path / "x.onnx")
    assert result.exit_code == 2 and json.loads(result.stdout)["error"] == "--verbose and --quiet exclude each other"
    debug = cli("validate", "--debug", tmp_path / "missing.onnx")
    assert debug.exit_code == 2 and "Traceback" in debug.stderr and debug.stderr.splitlines()[-1].startswith("error:")


def test_every_command_takes_the_shared_group_declared_once():
    from graphfix.cli import commands
    from graphfix.cli.app import DebugFlag, JsonFlag, QuietFlag, VerboseFlag

    flags = {"verbose": VerboseFlag, "quiet": QuietFlag, "as_json": JsonFlag, "debug": DebugFlag}
    for name, group in [("repair_command", flags), ("check_command", flags), ("validate_command", flags),
                        ("split_command", flags), ("explain_command", {"as_json": flags["as_json"], "debug": flags["debug"]}),
                        ("describe_command", {"as_json": flags["as_json"], "debug": flags["debug"]})]:
        parameters = inspect.signature(getattr(commands, name), eval_str=True).parameters
        assert {p: parameters[p].annotation for p in group} == group, name
