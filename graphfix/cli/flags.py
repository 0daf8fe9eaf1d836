"""The typer options of the RepairOptions fields, built from the Flag each field carries (options.py): a command
that offers a field declares `name: type = repair_flag("name")` and builds its options with
RepairOptions.from_parameters(ctx.params), so flag, help, default and parsing are written once."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from ..errors import BadInputError
from ..options import Flag, RepairOptions, flags_of
from ..targets import TargetRuntime, parse_release

_FIELDS = {field.name: field for field in dataclasses.fields(RepairOptions)}


def _release(text: str) -> TargetRuntime:
    """Every option naming an onnxruntime release is parsed here, once, into the value the library takes."""
    try:
        return parse_release(text)
    except BadInputError as err:
        raise typer.BadParameter(str(err)) from None


def _option(flag: Flag, default: Any) -> Any:
    names = (flag.name, *((flag.short,) if flag.short else ()))
    if flag.metavar is not None:
        return typer.Option(default, *names, metavar=flag.metavar, parser=_release, help=flag.help)
    if flag.value is False:  # a switch that turns off a field on by default (--no-validate: validate=False)
        return typer.Option(False, *names, callback=_negated, help=flag.help, show_default=False)
    return typer.Option(default, *names, help=flag.help, show_default=False)


def _negated(given: bool) -> bool:
    return not given


def repair_flag(name: str) -> Any:
    """The typer option of the RepairOptions field `name` (one flag) or of one of its switches (`--copy-data`)."""
    field = _FIELDS.get(name)
    if field is not None:
        (flag,) = flags_of(field)
        return _option(flag, field.default)
    flag = next(flag for field in _FIELDS.values() for flag in flags_of(field) if flag.parameter == name)
    return typer.Option(False, flag.name, help=flag.help, show_default=False)

