"""What a repair is asked to do, as one value: the library API, file repair, directory repair (and its worker
processes) and split all take the same RepairOptions. Each field that the command line sets carries its Flag, from
which cli/flags.py builds the typer option: the field's name, default and help are written once, here."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import BadInputError
from .targets import TargetRuntime, as_target

# How external data lands beside an output (io/write.py): a reflink where the filesystem can, a copy, a hardlink.
DataMode = Literal["clone", "copy", "link"]


@dataclass(frozen=True)
class Flag:
    """How the command line sets a RepairOptions field: `name` sets it to `value` (a switch), or, when `metavar`
    is given, to the option's argument. A field with one flag is the command's parameter of the field's name; a
    field with several (data_mode) is one switch per flag, of which one at most may be given."""

    name: str
    help: str
    value: object = True
    metavar: str | None = None
    short: str | None = None

    @property
    def parameter(self) -> str:
        """The command's parameter for a flag that picks one value of several (`--copy-data`: copy_data)."""
        return self.name.lstrip("-").replace("-", "_")


def flags_of(option: dataclasses.Field[Any]) -> tuple[Flag, ...]:
    flags: tuple[Flag, ...] = option.metadata.get("flags", ())
    return flags


def _set_by(*flags: Flag) -> dict[str, tuple[Flag, ...]]:
    return {"flags": flags}


@dataclass(frozen=True)
class RepairOptions:
    """One name per idea, the same in the API, on the command line and in JSON (the help of each flag below).
    `any_model` accepts any ONNX model of an export (an encoder) and only retargets it; `encoder` is the export's
    encoder, whose output feeds the decode proof instead of synthesized encoder states; `split_pair` is the split
    pair (decoder_model, decoder_with_past_model) a merged decoder was made from, whose decoding its proof
    matches."""

    validate: bool = field(default=True, metadata=_set_by(Flag(
        "--no-validate", "Skip the decode-loop proof before writing.", value=False)))
    target_ort: TargetRuntime | None = field(default=None, metadata=_set_by(Flag(
        "--target-ort", "The onnxruntime release you deploy on (e.g. 1.16 for Rust ort 1.16.3): convert the opset "
        "down and lower the IR version to what it runs, refusing ops it cannot convert. Default: leave versions alone.",
        metavar="X.Y")))
    validate_on_target: bool = field(default=False, metadata=_set_by(Flag(
        "--validate-on-target", "Run the proof inside the --target-ort onnxruntime itself (installed with pip into "
        "a cached venv on first use) instead of the installed one.")))
    load_on_target: bool = field(default=True, metadata=_set_by(Flag(
        "--skip-target-load", "With --target-ort, write the output without first loading it in that onnxruntime "
        "release (for machines that cannot install it).", value=False)))
    ort_version: TargetRuntime | None = field(default=None, metadata=_set_by(Flag(
        "--ort-version", "Run the proof inside this onnxruntime release (X.Y: its newest patch; installed with pip "
        "into a cached venv on first use), e.g. 1.16.3 as linked by Rust ort.", metavar="X.Y[.Z]")))
    data_mode: DataMode = field(default="clone", metadata=_set_by(
        Flag("--copy-data", "Always copy external data (default: a reflink where the filesystem can, else a copy).",
             value="copy"),
        Flag("--link-data", "Hardlink external data (and a directory's other files) instead of copying them: the "
             "output then shares storage with the input. onnx >= 1.23 refuses to load or check a data file with "
             "several links; onnxruntime loads it.", value="link")))
    any_model: bool = False
    in_place: bool = field(default=False, metadata=_set_by(Flag(
        "--in-place", "Allow OUT == IN; keeps IN.bak first (of each decoder of a directory).")))
    force: bool = field(default=False, metadata=_set_by(Flag(
        "--force", "Replace OUT if it exists (a regular file; for directories, an output model folder, replaced "
        "once its new version is complete). Without it an existing OUT is refused: `repair *.onnx` or swapped "
        "arguments must not overwrite a model.", short="-f")))
    encoder: Path | None = None
    split_pair: tuple[Path, Path] | None = None

    def __post_init__(self) -> None:
        if self.validate_on_target and self.target_ort is None:
            raise BadInputError("--validate-on-target needs --target-ort")
        if self.validate_on_target and self.ort_version is not None:
            raise BadInputError("--validate-on-target and --ort-version exclude each other")

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> RepairOptions:
        """The options a command's parsed parameters (click's `ctx.params`) set, by field name or, for a field of
        several flags, by the switch given; fields a command does not offer keep their defaults."""
        values: dict[str, Any] = {}
        for option in dataclasses.fields(cls):
            if option.name in parameters:
                values[option.name] = parameters[option.name]
            flags = flags_of(option)
            picked = [flag for flag in flags if len(flags) > 1 and parameters.get(flag.parameter)]
            if len(picked) > 1:
                raise BadInputError(f"{picked[0].name} and {picked[1].name} exclude each other")
            if picked:
                values[option.name] = picked[0].value
        return cls(**values)

    @property
    def proof_runtime(self) -> TargetRuntime | None:
        """The release the decode proof runs in; None: the installed onnxruntime."""
        return self.target_ort if self.validate_on_target else self.ort_version

    @property
    def releases(self) -> list[TargetRuntime]:
        """The onnxruntime releases a run with these options loads or proves in, besides the installed one."""
        wanted = [self.target_ort if self.load_on_target or self.validate_on_target else None,
                  self.proof_runtime if self.validate else None]
        return list({release.release: release for release in wanted if release is not None}.values())

    def but(self, **changes: object) -> RepairOptions:
        """These options with some fields changed, by field name (a release may be given as text, the encoder as
        any path)."""
        fields = dict(changes)
        for name in ("target_ort", "ort_version"):
            value = fields.get(name)
            if isinstance(value, str):
                fields[name] = as_target(value)
        encoder = fields.get("encoder")
        if isinstance(encoder, (str, os.PathLike)):
            fields["encoder"] = Path(encoder)
        return dataclasses.replace(self, **fields)  # type: ignore[arg-type]  # a wrong name or type: TypeError


__all__ = ["DataMode", "Flag", "RepairOptions", "flags_of"]
