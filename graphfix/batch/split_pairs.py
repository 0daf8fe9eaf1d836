"""Split exports in model directories: what `check` says about a split pair, and the merged decoder `repair` makes of
it before repairing it like any other.

`ORTModelForSeq2SeqLM.from_pretrained(..., export=True)` and `optimum-cli export onnx --no-post-process` write
decoder_model.onnx + decoder_with_past_model.onnx, and above 2 GB Optimum cannot merge them at all. A plain
present->past client fails on such a pair at step 2 (the decoder with past returns no present.N.encoder.*). The
merge (model/decoder_pair.py, written by io/merged_pair.py) lands in a hidden directory of the repair's staging
directory; the repair pipeline then reads it as the merged decoder it is, repairs, retargets and proves it (the
proof also decodes the pair as Optimum drives it and requires the same logits), and the hidden directory goes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..errors import BadInputError, GraphfixError, raise_if_exhausted
from ..findings import SPLIT_EXPORT, Finding
from ..io.merged_pair import INLINE_LIMIT, write_merged_pair
from ..io.read import read_model
from ..model.decoder_pair import MergedPair, merge_pair
from ..model.merged_decoder import find_merged_decoder
from ..options import RepairOptions
from ..passes import pipeline, run_passes
from ..targets import TargetRuntime
from .layouts import SplitPair


def merge_finding(pair: SplitPair, shared: int | None = None) -> Finding:
    """GF401: what the folder holds, what breaks, what repair does about it."""
    stored = f" (shared weights stored once: {shared})" if shared is not None else ""
    return Finding(SPLIT_EXPORT, f"a split export: {pair.decoder} + {pair.with_past} and no {pair.merged}; a plain "
                                 "present->past client fails at step 2 (the decoder with past returns no "
                                 "present.N.encoder.*)", tensor=pair.merged,
                   fix=f"merge them into {pair.merged}: one If on use_cache_branch, the encoder KV passed through"
                       f"{stored}; the pair is carried over unchanged")


def check_split_pair(directory: Path, pair: SplitPair, target: TargetRuntime | None) -> list[Finding]:
    """GF401, then what the repair of the merged decoder would change (the passes run on the merged skeleton in
    memory: nothing is written, no weight is read)."""
    decoder, with_past = read_model(directory / pair.decoder), read_model(directory / pair.with_past)
    try:
        merged = merge_pair(decoder.model, with_past.model, lambda index, tensor: f"{index}:{tensor.name}".encode())
    except GraphfixError as err:
        raise err.with_context(f"{pair.decoder} + {pair.with_past}: ") from None
    return [merge_finding(pair), *run_passes(find_merged_decoder(merged.model), pipeline(target))]


class MergedDraft:
    """The merged decoder of `pair`, written unrepaired into a hidden directory under `staging` (removed by
    `discard`, or with staging): the source of the repair that lands `pair.merged` in `out`."""

    def __init__(self, source: Path, pair: SplitPair, staging: Path, out: Path, inline_limit: int = INLINE_LIMIT):
        self.source, self.pair = source, pair
        self.directory = Path(tempfile.mkdtemp(prefix=".graphfix-merge-", dir=staging))
        self.path = self.directory / Path(pair.merged).name
        try:
            self.merged: MergedPair = write_merged_pair(read_model(source / pair.decoder),
                                                        read_model(source / pair.with_past), self.path, inline_limit)
        except GraphfixError as err:  # say which pair of the folder, as for any decoder of a directory
            raise err.with_context(f"{pair.decoder} + {pair.with_past}: ") from None
        except OSError as err:  # a full disk, a quota: the output's story, in one line
            raise_if_exhausted(err)
            raise BadInputError(f"cannot write {out / pair.merged} (merging {pair.decoder} + {pair.with_past}): "
                                f"{err.strerror or err}") from None

    def repair_options(self, options: RepairOptions) -> RepairOptions:
        """The options the draft's repair runs with: its proof compares with the pair; its external data (one
        file of every weight) is hardlinked into the output, not copied a second time: the draft's name goes with
        `discard`, before anything lands, so the landed data file has one link, as onnx >= 1.23 requires."""
        return options.but(split_pair=(self.source / self.pair.decoder, self.source / self.pair.with_past),
                           data_mode="link" if self.external else options.data_mode)

    @property
    def external(self) -> bool:
        return self.path.with_name(f"{self.path.name}_data").exists()

    @property
    def finding(self) -> Finding:
        return merge_finding(self.pair, self.merged.shared)

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


__all__ = ["MergedDraft", "check_split_pair", "merge_finding"]
