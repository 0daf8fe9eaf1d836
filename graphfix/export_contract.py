"""`graphfix describe`: an export's client contract, read off its own files.

What a client author needs before writing the loop in Rust `ort`, C#, C++ or Java: each input and output with its
dtype and shape (every dim named for what it is), what to feed at step 1 and at every step after, the start/end/pad
tokens from config.json and generation_config.json, whether the export needs `graphfix repair` first (its
findings) and the oldest onnxruntime release that loads it (targets/release_floor.py, from the measured tables).
Nothing is written and no weight is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInputError, NotAMergedDecoderError
from .findings import DUMMY_ENCODER_KV, Finding
from .io import onnx_proto as onnx
from .io.config_files import read_config, token_id
from .io.read import read_model
from .signature import CACHE_FLAG, PAST, PRESENT
from .targets.release_floor import ReleaseFloor, newest_of, oldest_release

DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32", onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.BFLOAT16: "bfloat16"}
KV_DIMS = ("batch", "heads", "{length}", "head_dim")
# What each dim of the usual tensors is; {length} of a KV tensor depends on its kind and direction.
ROLES: dict[str, tuple[str, ...]] = {
    "input_ids": ("batch", "new tokens"),
    "attention_mask": ("batch", "past + new tokens"),
    "decoder_attention_mask": ("batch", "past + new tokens"),
    "position_ids": ("batch", "new tokens"),
    "cache_position": ("new tokens",),
    "encoder_hidden_states": ("batch", "source length", "hidden size"),
    "encoder_attention_mask": ("batch", "source length"),
    CACHE_FLAG: ("one",),
    "logits": ("batch", "new tokens", "vocabulary"),
}
ENCODER_ROLES: dict[str, tuple[str, ...]] = {
    "input_ids": ("batch", "source length"),
    "attention_mask": ("batch", "source length"),
    "pixel_values": ("batch", "channels", "height", "width"),
    "input_features": ("batch", "mel bins or frames", "frames or features"),
    "flattened_patches": ("batch", "patches", "patch features"),
    "last_hidden_state": ("batch", "source length", "hidden size"),
}
TOKEN_KEYS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id", "forced_bos_token_id")


@dataclass(frozen=True)
class TensorContract:
    name: str
    dtype: str
    shape: tuple[int | str, ...]  # as declared; a dim the export left unnamed is shown as its role
    dims: tuple[str, ...]  # what each dim is: batch, heads, source length, past + new tokens, ...

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "dims": list(self.dims)}


def _kv_dims(name: str) -> tuple[str, ...]:
    match = PAST.match(name) or PRESENT.match(name)
    assert match is not None
    if match[2] == "encoder":
        length = "source length"
    else:
        length = "past tokens" if name.startswith("past") else "past + new tokens"
    return tuple(d.format(length=length) for d in KV_DIMS)


def _roles(name: str, rank: int, encoder: bool) -> tuple[str, ...]:
    known = (ENCODER_ROLES if encoder else ROLES).get(name)
    if known is None and (PAST.match(name) or PRESENT.match(name)):
        known = _kv_dims(name)
    if known is None or len(known) != rank:
        return tuple(f"dim {i}" for i in range(rank))
    return known


def tensor_contract(value: onnx.ValueInfoProto, *, encoder: bool = False) -> TensorContract:
    tensor = value.type.tensor_type
    dims = tensor.shape.dim
    roles = _roles(value.name, len(dims), encoder)
    shape = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or roles[i] for i, d in enumerate(dims))
    elem_type = int(tensor.elem_type)
    dtype = DTYPES.get(elem_type) or str(onnx.TensorProto.DataType.Name(tensor.elem_type)).lower()
    return TensorContract(value.name, dtype, shape, roles)


@dataclass
class ModelContract:
    """One ONNX file of the export: its signature and the oldest release that loads it."""

    path: str  # as given, or relative to the described directory
    kind: str  # "merged decoder", "encoder", "other"
    inputs: list[TensorContract]
    outputs: list[TensorContract]
    versions: str
    loads_on: ReleaseFloor

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "versions": self.versions, "loads_on": self.loads_on.to_dict(),
                "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}


@dataclass(frozen=True)
class Feed:
    """One line of a step: which input(s), their dtype and shape, and the value."""

    input: str
    dtype: str
    shape: str
    value: str

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "dtype": self.dtype, "shape": self.shape, "value": self.value}


@dataclass(frozen=True)
class Step:
    steps: str  # "1" or "2, 3, ..."
    feeds: tuple[Feed, ...]
    then: str  # what to do with the outputs

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "feeds": [f.to_dict() for f in self.feeds], "then": self.then}


@dataclass
class Description:
    path: Path
    models: list[ModelContract]
    steps: list[Step]
    tokens: dict[str, Any] = field(default_factory=dict)  # decoder_start/eos/pad... and where each came from
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what a client would get wrong following the table as it is

    @property
    def needs_repair(self) -> bool:
        return bool(self.findings)

    @property
    def loads_on(self) -> ReleaseFloor:
        return newest_of([m.loads_on for m in self.models])

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "needs_repair": self.needs_repair, "loads_on": self.loads_on.to_dict(),
                "findings": [f.to_dict() for f in self.findings], "tokens": self.tokens, "warnings": self.warnings,
                "models": [m.to_dict() for m in self.models], "steps": [s.to_dict() for s in self.steps]}


def _versions(model: onnx.ModelProto) -> str:
    from .pipeline import versions_of

    return versions_of(model)


def _model_contract(shown: str, kind: str, model: onnx.ModelProto) -> ModelContract:
    encoder = kind == "encoder"
    return ModelContract(path=shown, kind=kind, versions=_versions(model), loads_on=oldest_release(model),
                         inputs=[tensor_contract(v, encoder=encoder) for v in model.graph.input],
                         outputs=[tensor_contract(v, encoder=encoder) for v in model.graph.output])


def _config_dirs(model_file: Path) -> list[Path]:
    """Where an export keeps config.json: beside the model, or one up from onnx/ (onnx-community layout)."""
    here = model_file.parent
    return [here, here.parent] if here.name == "onnx" else [here]


def read_tokens(model_file: Path) -> dict[str, Any]:
    """The special tokens a client needs, generation_config.json over config.json (as transformers reads them),
    each with the file it came from. Absent files or keys are simply absent; a config that is not one, or a token
    that is not an id, is refused naming the file and key (io/config_files.py)."""
    tokens: dict[str, Any] = {}
    for folder in _config_dirs(model_file):
        for name in ("config.json", "generation_config.json"):  # the later file wins
            config = read_config(folder / name)
            for key in TOKEN_KEYS:
                if config.get(key) is not None:
                    tokens[key] = {"value": token_id(config[key], f"{name} key {key!r}"), "from": name}
        if tokens:
            break
    return tokens


def _shape_text(contract: TensorContract, **fixed: str) -> str:
    """(batch, heads=4, 0, head_dim=8): roles, with static sizes and the step's own values filled in."""
    parts = []
    for role, dim in zip(contract.dims, contract.shape):
        parts.append(fixed.get(role, f"{role}={dim}" if isinstance(dim, int) else role))
    return f"({', '.join(parts)})"


def _token(tokens: dict[str, Any], key: str, fallback: str) -> str:
    entry = tokens.get(key)
    return f"{key} = {entry['value']} ({entry['from']})" if entry else fallback


def plan_steps(decoder: ModelContract, tokens: dict[str, Any], passes_encoder_kv: bool) -> list[Step]:
    """The plain present->past loop for this signature: step 1 without cache, every later step fed the presents
    of the step before."""
    by_name = {t.name: t for t in decoder.inputs}
    past = [t for t in decoder.inputs if PAST.match(t.name)]
    seq2seq = "encoder_hidden_states" in by_name
    first_ids = (_token(tokens, "decoder_start_token_id", "the decoder start token (config.json)") if seq2seq
                 else "the prompt's token ids")
    common = [Feed(n, by_name[n].dtype, _shape_text(by_name[n]), value) for n, value in (
        ("encoder_hidden_states", "the encoder's last_hidden_state (computed once, fed at every step)"),
        ("encoder_attention_mask", "the encoder's attention_mask (1 = real token, 0 = padding)")) if n in by_name]
    extras = [(n, value) for n, value in (
        ("attention_mask", "ones over past + new tokens"), ("decoder_attention_mask", "ones over past + new tokens"),
        ("position_ids", "past tokens .. past + new tokens - 1, per row"),
        ("cache_position", "past tokens .. past + new tokens - 1")) if n in by_name]
    first = [Feed("input_ids", by_name["input_ids"].dtype, _shape_text(by_name["input_ids"],
                                                                       **{"new tokens": "1" if seq2seq else "prompt"}),
                  first_ids), *common]
    first += [Feed(n, by_name[n].dtype, _shape_text(by_name[n]), v) for n, v in extras]
    if CACHE_FLAG in by_name:
        first.append(Feed(CACHE_FLAG, "bool", "(1,)", "false"))
    if past:
        first.append(Feed("past_key_values.*", past[0].dtype,
                          _shape_text(past[0], **{"past tokens": "0", "source length": "0"}),
                          f"empty (zero-length) tensors, all {len(past)} of them"))
    later = [Feed("input_ids", by_name["input_ids"].dtype, _shape_text(by_name["input_ids"], **{"new tokens": "1"}),
                  "the token chosen at the step before"), *common]
    later += [Feed(n, by_name[n].dtype, _shape_text(by_name[n]), v) for n, v in extras]
    if CACHE_FLAG in by_name:
        later.append(Feed(CACHE_FLAG, "bool", "(1,)", "true"))
    encoder_kv = any(PAST.match(t.name)[2] == "encoder" for t in past)  # type: ignore[index]
    feedback = ("every present.* of the step before, renamed past_key_values.*"
                + (" (encoder KV included)" if encoder_kv else "") if passes_encoder_kv else
                "NOT YET: this export's cache branch returns dummies for present.N.encoder.*; run `graphfix repair` "
                "first (or keep the encoder KV of step 1, as Optimum's own client does)")
    if past:
        shapes = dict.fromkeys(_shape_text(t) for t in past)  # self-attention KV, then cross-attention KV
        later.append(Feed("past_key_values.*", past[0].dtype, " or ".join(shapes), feedback))
    stop = _token(tokens, "eos_token_id", "the end-of-sequence token (config.json)")
    then = f"pick the next token from logits[:, -1, :]; stop at {stop} or your length limit"
    forced = tokens.get("forced_bos_token_id")
    # M2M100, NLLB and mBART-50 name the target language this way: generate() forces it whatever the logits say.
    first_then = (f"the next token is {_token(tokens, 'forced_bos_token_id', '')}, whatever logits say (the "
                  f"first generated token is forced); stop at {stop} or your length limit") if forced else then
    return [Step("1", tuple(first), first_then), Step("2, 3, ...", tuple(later), then)]


def _vocabulary(decoder: ModelContract | None, model_file: Path) -> tuple[int, str] | None:
    """(size, where it comes from): the logits' declared last dim, else config.json's vocab_size."""
    logits = next((t for t in decoder.outputs if t.name == "logits"), None) if decoder else None
    if logits and logits.shape and isinstance(logits.shape[-1], int):
        return logits.shape[-1], "the logits' declared vocabulary dim"
    for folder in _config_dirs(model_file):
        size = read_config(folder / "config.json").get("vocab_size")  # read as every config is (io/config_files.py)
        if isinstance(size, int) and not isinstance(size, bool):
            return size, "config.json's vocab_size"
    return None


def token_warnings(tokens: dict[str, Any], vocabulary: tuple[int, str] | None) -> list[str]:
    """The token ids a client starts from, forces or stops at that are no token of the model's vocabulary: a
    table that says `start from 1000000000` would be followed to an index error or a loop that never stops."""
    if vocabulary is None:
        return []
    size, source = vocabulary
    warnings = []
    for key in ("decoder_start_token_id", "forced_bos_token_id", "eos_token_id"):
        entry = tokens.get(key)
        if entry is None:
            continue
        values = entry["value"] if isinstance(entry["value"], list) else [entry["value"]]
        outside = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < size]
        if outside:
            warnings.append(f"{key} {', '.join(map(str, outside))} ({entry['from']}) is outside the vocabulary "
                            f"0..{size - 1} ({source}): check {entry['from']} before writing the loop from it")
    return warnings


def _contract_of(path: Path, shown: str, kind: str) -> tuple[ModelContract, onnx.ModelProto]:
    loaded = read_model(path)
    return _model_contract(shown, kind, loaded.model), loaded.model


def _decoder_findings(path: Path) -> list[Finding]:
    from .pipeline import check

    return check(path).findings


def _export_files(path: Path) -> list[tuple[Path, str, str]]:
    """(file, shown name, kind) for a model file, or for every merged decoder of a directory and its encoder."""
    from .batch.layouts import encoder_for, find_merged_decoders, find_split_pairs

    if not path.is_dir():
        if not path.is_file():
            raise BadInputError(f"no such file or directory: {path}")
        return [(path, str(path), "merged decoder")]
    files: list[tuple[Path, str, str]] = []
    pairs = find_split_pairs(path)
    for name in find_merged_decoders(path, split_pairs_too=True) + [pair.merged for pair in pairs]:
        pair = next((p for p in pairs if p.merged == name), None)
        if pair is None:
            files.append((path / name, name, "merged decoder"))
        else:  # what the folder holds; the merged decoder is what repair will make of it
            files += [(path / pair.decoder, pair.decoder, SPLIT_DECODER),
                      (path / pair.with_past, pair.with_past, SPLIT_DECODER_WITH_PAST)]
        encoder = encoder_for(path, name)
        if encoder and all(shown != encoder for _, shown, _ in files):
            files.append((path / encoder, encoder, "encoder"))
    return files


SPLIT_DECODER = "split decoder without past"
SPLIT_DECODER_WITH_PAST = "split decoder with past"


def _split_pair_findings(directory: Path, decoder: str) -> list[Finding]:
    """GF401 and what repairing the merged decoder would change, for the pair whose decoder_model is `decoder`."""
    from .batch.layouts import find_split_pairs
    from .batch.split_pairs import check_split_pair

    pair = next(p for p in find_split_pairs(directory) if p.decoder == decoder)
    return check_split_pair(directory, pair, None)


def describe(path: str | os.PathLike[str]) -> Description:
    """The client contract of a merged decoder file or of an export directory (its merged decoders and
    encoders). A file that is not a merged decoder (an encoder) is described without a decode loop; so is a split
    export's pair (both files listed, GF401 saying repair merges them), whose loop is the merged decoder's."""
    path = Path(path)
    models: list[ModelContract] = []
    findings: list[Finding] = []
    decoder: ModelContract | None = None
    for file, shown, kind in _export_files(path):
        contract, model = _contract_of(file, shown, kind)
        if kind == SPLIT_DECODER:
            findings += _split_pair_findings(path, shown)
        if kind == "merged decoder":
            try:
                findings += _decoder_findings(file)
            except NotAMergedDecoderError:
                if path.is_dir():
                    raise
                contract.kind = "encoder" if any(t.name == "last_hidden_state" for t in contract.outputs) else "other"
                contract = _model_contract(shown, contract.kind, model)
        if contract.kind == "merged decoder" and decoder is None:
            decoder = contract
        models.append(contract)
    model_file = path if path.is_file() else path / models[0].path
    tokens = read_tokens(model_file)
    passes_kv = not any(f.code == DUMMY_ENCODER_KV for f in findings)
    steps = plan_steps(decoder, tokens, passes_kv) if decoder is not None else []
    warnings = token_warnings(tokens, _vocabulary(decoder, model_file))
    return Description(path=path, models=models, steps=steps, tokens=tokens, findings=findings, warnings=warnings)


__all__ = ["Description", "Feed", "ModelContract", "Step", "TensorContract", "describe", "read_tokens"]
