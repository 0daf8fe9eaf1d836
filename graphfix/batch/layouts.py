"""Where merged decoders live in the model directories users keep, and what else a directory holds.

Optimum writes `decoder_model_merged.onnx` at the top of an export; onnx-community / transformers.js repositories
keep the ONNX files in `onnx/`, one merged decoder per precision (`decoder_model_merged_quantized.onnx`, `_fp16`,
...). Everything else (config, tokenizer, encoder, the split decoders) is carried over unchanged.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInputError, raise_if_exhausted
from ..io.path_safety import trusted_roots
from ..io.read import read_model
from ..model.decoder_pair import DECODER_STEM, WITH_PAST_STEM

MERGED_STEM = "decoder_model_merged"
# The precisions transformers.js knows (its `dtype` option); the order is the order results are reported in.
VARIANTS = ("", "_quantized", "_fp16", "_int8", "_uint8", "_q4", "_q4f16", "_bnb4")
LAYOUT_DIRS = ("", "onnx")


def merged_decoder_names() -> list[str]:
    """Every relative path a merged decoder may have in an Optimum or onnx-community directory."""
    return [f"{folder}/{MERGED_STEM}{variant}.onnx".lstrip("/") for folder in LAYOUT_DIRS for variant in VARIANTS]


@dataclass(frozen=True)
class SplitPair:
    """A split export's two decoders (relative POSIX paths) with no merged decoder beside them: `repair` merges
    them into `merged` (model/decoder_pair.py) and carries both over unchanged."""

    decoder: str
    with_past: str
    merged: str


def find_split_pairs(directory: str | os.PathLike[str]) -> list[SplitPair]:
    """decoder_model{variant}.onnx + decoder_with_past_model{variant}.onnx in `directory` (or its onnx/) with no
    decoder_model_merged{variant}.onnx beside them, in layout order."""
    directory = Path(directory)
    pairs = []
    for folder in LAYOUT_DIRS:
        for variant in VARIANTS:
            decoder, with_past, merged = (f"{folder}/{stem}{variant}.onnx".lstrip("/")
                                          for stem in (DECODER_STEM, WITH_PAST_STEM, MERGED_STEM))
            if (directory / decoder).is_file() and (directory / with_past).is_file() and \
                    not (directory / merged).is_file():
                pairs.append(SplitPair(decoder, with_past, merged))
    return pairs


def find_merged_decoders(directory: str | os.PathLike[str], *, split_pairs_too: bool = False) -> list[str]:
    """Relative paths (POSIX) of the merged decoders in `directory`, in layout order; refuses a directory without
    one. With `split_pairs_too`, a directory holding only split pairs (find_split_pairs) is accepted and the list
    may be empty."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BadInputError(f"no such directory: {directory}")
    found = [name for name in merged_decoder_names() if (directory / name).is_file()]
    if not found and not (split_pairs_too and find_split_pairs(directory)):
        pairs = find_split_pairs(directory)
        holds = (f"; it holds the split decoders {pairs[0].decoder} + {pairs[0].with_past}: `graphfix repair "
                 f"{directory} OUT` merges them into {pairs[0].merged}" if pairs else
                 "; give the folder of an export Optimum merged (optimum-cli export onnx writes it), or a folder of "
                 "such folders")
        raise BadInputError(f"no merged decoder in directory {directory} (looked for {MERGED_STEM}.onnx and "
                            f"onnx/{MERGED_STEM}{{,{','.join(v for v in VARIANTS if v)}}}.onnx){holds}")
    return found


def encoder_for(directory: str | os.PathLike[str], decoder: str) -> str | None:
    """The encoder a merged decoder of `directory` belongs with: encoder_model{variant}.onnx beside it (the same
    precision variant), else encoder_model.onnx beside it; None for a decoder-only export."""
    folder, name = Path(decoder).parent, Path(decoder).name
    variant = name[len(MERGED_STEM):-len(".onnx")] if name.startswith(MERGED_STEM) else ""
    for candidate in (f"encoder_model{variant}.onnx", "encoder_model.onnx"):
        if (Path(directory) / folder / candidate).is_file():
            return (folder / candidate).as_posix()
    return None


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}


def directory_files(directory: Path) -> list[str]:
    """Every file under `directory`, relative (POSIX), in os.walk's top-down sorted order, skipping graphfix's own
    staging debris. The one walk of a model directory: it follows symlinks only inside the tree (a link to a file
    or directory outside it is refused), walks each directory once (a symlink loop, or a second path to a
    directory, is refused instead of walked forever), never opens anything that is not a regular file or a
    directory (a FIFO is refused by its type, never waited on), and refuses a subdirectory it cannot read instead
    of leaving it out of a "complete" copy. Every refusal is a BadInputError naming the path."""
    root = directory.resolve()
    names: list[str] = []
    seen: dict[tuple[int, int], str] = {}
    todo = [Path("")]
    while todo:
        relative = todo.pop()
        shown = directory / relative
        try:
            info = os.stat(root / relative)
            with os.scandir(root / relative) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            raise_if_exhausted(err)
            raise BadInputError(f"cannot read directory {shown}: {err.strerror}") from None
        if (key := (info.st_dev, info.st_ino)) in seen:
            raise BadInputError(f"{shown} leads back to {directory / seen[key]} (a symlink loop, or a second path to "
                                "one directory); graphfix walks each directory once")
        seen[key] = relative.as_posix()
        subdirectories = []
        for entry in entries:
            name, path = relative / entry.name, directory / relative / entry.name
            if entry.name.startswith(".graphfix-"):
                continue  # another run's staging debris
            if entry.is_symlink():
                target = Path(os.path.realpath(entry.path))
                if not any(target == r or target.is_relative_to(r) for r in trusted_roots(root)):
                    raise BadInputError(f"{path} is a symlink to {target}, outside the model directory; copy it in "
                                        "or remove the link")
            try:
                kind = os.stat(entry.path).st_mode
            except OSError as err:
                raise_if_exhausted(err)
                raise BadInputError(f"cannot read {path}: {err.strerror}") from None
            if stat.S_ISDIR(kind):
                subdirectories.append(name)
            elif stat.S_ISREG(kind):
                names.append(name.as_posix())
            else:
                raise BadInputError(f"{path} is {_KINDS.get(stat.S_IFMT(kind), 'not a regular file')}; a model "
                                    "directory may hold only regular files and directories")
        todo.extend(reversed(subdirectories))
    return names


@dataclass
class DirectoryPlan:
    """How each file of a model directory reaches the output directory."""

    decoders: list[str]  # repaired (their external data is written beside them by the repair)
    others: list[str] = field(default_factory=list)  # other ONNX models, retargeted (only with a target runtime)
    links: list[str] = field(default_factory=list)  # copied (reflink where possible); hardlinked with --link-data
    copies: list[str] = field(default_factory=list)  # external data of other models: always copied
    rewritten: list[str] = field(default_factory=list)  # external data of the decoders: the repair writes it
    pairs: list[SplitPair] = field(default_factory=list)  # merged into a new merged decoder; the pair is carried over


def plan_directory(directory: str | os.PathLike[str], *, retarget: bool = False) -> DirectoryPlan:
    """Sort every file of `directory` by how it is carried over; with `retarget`, the other ONNX models are
    repaired (retargeted) like the decoders instead of linked.

    External data is copied, never hardlinked: onnx >= 1.23 refuses to load a data file with several links
    ("potential hardlink attack"), so a linked copy would not be a drop-in replacement."""
    directory = Path(directory)
    plan = DirectoryPlan(decoders=find_merged_decoders(directory, split_pairs_too=True),
                         pairs=find_split_pairs(directory))
    carried = {name for pair in plan.pairs for name in (pair.decoder, pair.with_past)}  # unchanged, whatever target
    decoder_data: set[str] = set()
    other_data: set[str] = set()
    files = directory_files(directory)
    for name in files:
        if not name.endswith(".onnx"):
            continue
        try:
            loaded = read_model(directory / name)
        except BadInputError:
            if name in plan.decoders:
                raise
            continue  # not a model we can read: carried over as an opaque file
        base = Path(name).parent
        data = {(base / location).as_posix() for location in loaded.external_files}
        rewritten = name in plan.decoders or (retarget and name not in carried)
        (decoder_data if rewritten else other_data).update(data)
        if retarget and name not in plan.decoders and name not in carried:
            plan.others.append(name)
    for name in files:
        if name in plan.decoders or name in plan.others:
            continue
        if name in other_data:
            plan.copies.append(name)
        elif name in decoder_data:
            plan.rewritten.append(name)
        else:
            plan.links.append(name)
    return plan


def holds_merged_decoder(directory: Path) -> bool:
    """A model directory: a merged decoder, or a split pair graphfix merges into one."""
    return any((directory / name).is_file() for name in merged_decoder_names()) or bool(find_split_pairs(directory))


def folders_under(root: Path, is_model: Callable[[Path], bool]) -> list[Path]:
    """The folders under `root` (not `root` itself) that `is_model` takes, sorted; such a folder is not searched
    further (its onnx/ is part of it). Hidden folders (graphfix's staging among them) are skipped and symlinked
    folders are not followed."""
    found: list[Path] = []
    for folder, subfolders, _ in os.walk(root):
        here = Path(folder)
        if here != root and is_model(here):
            found.append(here)
            subfolders.clear()
            continue
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
    return sorted(found)


def model_directories(root: Path) -> list[Path]:
    """The model directories of a tree (`models/<name>/...`, any depth, as folders_under walks it); `root` itself
    when it is one."""
    if holds_merged_decoder(root):
        return [root]
    found = folders_under(root, holds_merged_decoder)
    if not found:
        find_merged_decoders(root)  # the usual refusal, naming what was looked for
    return found


@dataclass(frozen=True)
class CheckTarget:
    """One file a check covers: a merged decoder, or (with a target runtime) another ONNX model of its export."""

    path: Path
    merged_decoder: bool = True
    split_pair: SplitPair | None = None  # path is then where the pair's merged decoder will be (model_directory/merged)
    model_directory: Path | None = None  # the folder the split pair's names are relative to


def check_targets(path: Path, *, every_model: bool = False) -> list[CheckTarget]:
    """What `check PATH` covers: a file as given; a directory (or a tree of model directories) its merged
    decoders, and with `every_model` every other ONNX model of each export too (encoders, split decoders), since a
    deployment on an older runtime loads all of them."""
    if not path.is_dir():
        return [CheckTarget(path)]
    targets: list[CheckTarget] = []
    for directory in model_directories(path):
        if every_model:
            plan = plan_directory(directory, retarget=True)
            targets += [CheckTarget(directory / name) for name in plan.decoders]
            targets += [CheckTarget(directory / name, merged_decoder=False) for name in plan.others]
        else:
            targets += [CheckTarget(directory / name)
                        for name in find_merged_decoders(directory, split_pairs_too=True)]
        targets += [CheckTarget(directory / pair.merged, split_pair=pair, model_directory=directory)
                    for pair in find_split_pairs(directory)]
    return targets
