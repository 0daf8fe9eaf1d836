"""What a repair is asked to do, as one value: the library API, file repair, directory repair (and its worker
processes) and split all take the same RepairOptions, and the CLI builds it once from its flags."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import BadInputError
from .targets import TargetRuntime, as_target

# How external data lands beside an output (io/write.py): a reflink where the filesystem can, a copy, a hardlink.
DataMode = Literal["clone", "copy", "link"]


@dataclass(frozen=True)
class RepairOptions:
    """One name per idea, the same in the API, on the command line and in JSON.

    `validate` (--no-validate): prove the staged output (checker, then the decode loop, or a load for a model with
    no loop of its own) before it lands. `target_ort` (--target-ort): retarget versions for that onnxruntime
    release and load the staged output in it before it lands, unless `load_on_target` is False
    (--skip-target-load); `validate_on_target` runs the decode proof there too, and `ort_version` (--ort-version)
    runs it in another release without retargeting. `any_model` accepts any ONNX model of an export (an encoder)
    and only retargets it; `in_place` allows the output to be the input; `force` allows an existing OUT file to be
    replaced. `encoder`: the export's encoder (encoder_model.onnx), whose output feeds the decode proof instead of
    synthesized encoder states, so the export is proven end to end."""

    validate: bool = True
    target_ort: TargetRuntime | None = None
    validate_on_target: bool = False
    load_on_target: bool = True
    ort_version: TargetRuntime | None = None
    data_mode: DataMode = "clone"
    any_model: bool = False
    in_place: bool = False
    force: bool = False  # replace an existing OUT file (never a device, FIFO or socket)
    encoder: Path | None = None
    # The split pair (decoder_model, decoder_with_past_model) a merged decoder was made from: its proof compares
    # the merged decoder's loop with the pair's decoding.
    split_pair: tuple[Path, Path] | None = None

    def __post_init__(self) -> None:
        if self.validate_on_target and self.target_ort is None:
            raise BadInputError("--validate-on-target needs --target-ort")
        if self.validate_on_target and self.ort_version is not None:
            raise BadInputError("--validate-on-target and --ort-version exclude each other")

    @property
    def proof_runtime(self) -> TargetRuntime | None:
        """The release the decode proof runs in; None: the installed onnxruntime."""
        return self.target_ort if self.validate_on_target else self.ort_version

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


__all__ = ["DataMode", "RepairOptions"]
