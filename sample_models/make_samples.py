"""Regenerate the committed sample decoders with the real Optimum exporter.

Run inside an exporter venv (see `make samples`), never by the tests:

    python sample_models/make_samples.py --exporter legacy  --out sample_models/legacy
    python sample_models/make_samples.py --exporter current --out sample_models/current

Every model is a tiny random-weight config (the model hub is unreachable), seeded so that a rerun with the
same pinned versions gives the same graph. Only `decoder_model_merged.onnx` is kept, renamed to `<arch>.onnx`;
pass --keep-all to keep the whole export directory (encoder, split decoders) for client tests and benchmarks.
--client-files (with --keep-all) keeps only what a client of the merged decoder reads, in OUT/<exporter>-<arch>/:

    python sample_models/make_samples.py --exporter current --out sample_models/exports --keep-all --client-files \
        --only t5 m2m100
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

# torch >= 2.9 defaults torch.onnx.export to the dynamo exporter, which neither Optimum generation was written
# for; both exported their merged decoders through the TorchScript path.
_torch_onnx_export = torch.onnx.export


_STATIC_AXES: set[str] = set()  # --static-axis: names dropped from the dynamic axes Optimum asks for


def _export_with_torchscript(*args, **kwargs):
    kwargs.setdefault("dynamo", False)
    if _STATIC_AXES and kwargs.get("dynamic_axes"):
        # What a user config without a batch axis produces: the exporter traces the dummy batch as a constant.
        kwargs["dynamic_axes"] = {name: {i: a for i, a in axes.items() if a not in _STATIC_AXES}
                                  for name, axes in kwargs["dynamic_axes"].items()}
    return _torch_onnx_export(*args, **kwargs)


torch.onnx.export = _export_with_torchscript
import torch.onnx.utils  # noqa: E402

torch.onnx.utils.export = _export_with_torchscript

import transformers  # noqa: E402
from optimum.exporters.onnx import main_export  # noqa: E402

SEQ2SEQ = "text2text-generation-with-past"
SPEECH = "automatic-speech-recognition-with-past"

# Tiny shapes that still exercise multi-head attention: 4 heads of 8, 2 decoder layers.
BART_LIKE = dict(
    vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
    decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
    pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
)
T5_LIKE = dict(
    vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
    relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)


def _configs() -> dict[str, tuple[str, str, dict]]:
    marian = dict(BART_LIKE, pad_token_id=95, decoder_start_token_id=95, eos_token_id=0, forced_eos_token_id=0,
                  share_encoder_decoder_embeddings=True)
    return {
        "marian": ("MarianConfig", SEQ2SEQ, marian),
        "t5": ("T5Config", SEQ2SEQ, T5_LIKE),
        "mt5": ("MT5Config", SEQ2SEQ, dict(T5_LIKE, feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
        "bart": ("BartConfig", SEQ2SEQ, BART_LIKE),
        "mbart": ("MBartConfig", SEQ2SEQ, BART_LIKE),
        "m2m100": ("M2M100Config", SEQ2SEQ, BART_LIKE),
        "pegasus": ("PegasusConfig", SEQ2SEQ, dict(BART_LIKE, pad_token_id=0, eos_token_id=1,
                                                   decoder_start_token_id=0, forced_eos_token_id=1)),
        "blenderbot": ("BlenderbotConfig", SEQ2SEQ, BART_LIKE),
        "whisper": ("WhisperConfig", SPEECH, dict(
            vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
            max_source_positions=1500, max_target_positions=64, pad_token_id=95, bos_token_id=94,
            eos_token_id=95, decoder_start_token_id=94, suppress_tokens=[], begin_suppress_tokens=[])),
    }


# What examples/*/run reads from an export folder (docs/clients.md): no split decoders, no PyTorch weights.
CLIENT_FILES = ("encoder_model.onnx", "decoder_model_merged.onnx", "config.json", "generation_config.json")
# The client exports' M2M100 names a target-language token, as M2M100/NLLB/mBART-50 configs do: a client must force
# it as the first generated token (forced_bos_token_id), so the examples are tested on honouring it. At the default
# init scale these tiny models generate the same ids from any source (a client feeding the wrong encoder output
# would still print the right ids): the T5 weights drawn 5 times wider generate source-dependent ids, Marian's
# at std 0.05 partly so; wider still, every model repeats one token, which would exercise the cache less.
CLIENT_CONFIG_OVERRIDES = {"m2m100": dict(forced_bos_token_id=5), "marian": dict(init_std=0.05),
                           "t5": dict(initializer_factor=5.0)}


def export_client_files(arch: str, exporter: str, out_dir: Path) -> dict:
    """The four files of an export folder a client needs, in OUT/<exporter>-<arch>/ (sample_models/exports/)."""
    config_class, task, kwargs = _configs()[arch]
    config = getattr(transformers, config_class)(**kwargs, **CLIENT_CONFIG_OVERRIDES.get(arch, {}))
    torch.manual_seed(0)
    model = transformers.AutoModelForSeq2SeqLM.from_config(config).eval()
    folder = out_dir / f"{exporter}-{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        src, exported = Path(tmp) / "pt", Path(tmp) / "onnx"
        model.save_pretrained(src)
        main_export(str(src), output=str(exported), task=task, do_validation=False)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for name in CLIENT_FILES:
            shutil.copyfile(exported / name, folder / name)
    return {"arch": f"{exporter}-{arch}", "config": config_class, "task": task,
            "bytes": sum((folder / name).stat().st_size for name in CLIENT_FILES)}


def export_one(arch: str, out_dir: Path, keep_all: bool, decoder_layers: int | None = None) -> dict:
    config_class, task, kwargs = _configs()[arch]
    if decoder_layers:  # a deep decoder (the depth users' opus-mt / NLLB exports have), same tiny widths
        kwargs = dict(kwargs, **{"num_decoder_layers" if "num_layers" in kwargs else "decoder_layers": decoder_layers})
    config = getattr(transformers, config_class)(**kwargs)
    torch.manual_seed(0)
    model_class = transformers.AutoModelForSpeechSeq2Seq if task == SPEECH else transformers.AutoModelForSeq2SeqLM
    model = model_class.from_config(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        src, exported = Path(tmp) / "pt", Path(tmp) / "onnx"
        model.save_pretrained(src)
        main_export(str(src), output=str(exported), task=task, do_validation=False)
        merged = exported / "decoder_model_merged.onnx"
        if keep_all:
            shutil.copytree(exported, out_dir / arch, dirs_exist_ok=True)
            model.save_pretrained(out_dir / arch / "pytorch")
        shutil.copyfile(merged, out_dir / f"{arch}.onnx")
    return {"arch": arch, "config": config_class, "task": task, "bytes": (out_dir / f"{arch}.onnx").stat().st_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exporter", choices=["legacy", "current"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="architectures to export (default: all)")
    parser.add_argument("--keep-all", action="store_true")
    parser.add_argument("--client-files", action="store_true",
                        help="with --keep-all: only encoder, merged decoder and configs, in OUT/<exporter>-<arch>/")
    parser.add_argument("--decoder-layers", type=int, help="decoder depth instead of 2 (sample_models/deep/)")
    parser.add_argument("--static-axis", action="append", default=[],
                        help="export with this axis fixed at the dummy size (e.g. batch_size), as a misconfigured "
                             "export does")
    args = parser.parse_args()
    _STATIC_AXES.update(args.static_axis)
    args.out.mkdir(parents=True, exist_ok=True)
    import importlib.metadata as md

    optimum_dist = "optimum" if args.exporter == "legacy" else "optimum-onnx"
    versions = {name: md.version(name) for name in (optimum_dist, "transformers", "torch", "onnx")}
    if args.client_files:  # folders of both exporters side by side: the versions go with each folder
        made = [dict(export_client_files(arch, args.exporter, args.out), versions=versions)
                for arch in (args.only or _configs())]
        manifest = args.out / "client-exports.json"
        previous = json.loads(manifest.read_text()) if manifest.exists() else {}
        manifest.write_text(json.dumps(previous | {m["arch"]: m for m in made}, indent=2, sort_keys=True) + "\n")
        print(json.dumps(made, indent=2))
        return 0
    made = [export_one(arch, args.out, args.keep_all, args.decoder_layers) for arch in (args.only or _configs())]
    manifest = args.out / "manifest.json"
    previous = json.loads(manifest.read_text())["models"] if manifest.exists() else []
    merged = {m["arch"]: m for m in previous} | {m["arch"]: m for m in made}
    manifest.write_text(json.dumps({"exporter": args.exporter, "versions": versions, "static_axes": args.static_axis,
                                    "models": sorted(merged.values(), key=lambda m: m["arch"])}, indent=2) + "\n")
    print(json.dumps(made, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
