"""Export a random-weight Marian with opus-mt-en-zh's real dimensions through the real Optimum exporter.

Run inside an exporter venv (see the Makefile's `bench` target), never by the tests. The whole export directory is
kept (encoder, split decoders, merged decoder), as `make_samples.py --keep-all` does, because the benchmark compares
the repaired merged decoder with Optimum's own split-decoder client.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sample_models"))
import make_samples
import torch
import transformers

# Helsinki-NLP/opus-mt-en-zh's config.json, minus the weights (the model hub is unreachable here).
OPUS_MT_EN_ZH = dict(
    vocab_size=65001, d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
    decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
    activation_function="swish", scale_embedding=True, static_position_embeddings=True,
    pad_token_id=65000, decoder_start_token_id=65000, eos_token_id=0, forced_eos_token_id=0, bos_token_id=0,
    share_encoder_decoder_embeddings=True,
)

# The proof benchmark's sizes (issue 31): opus-mt-en-zh's config with the dimensions scaled so that the merged decoder
# is about 50 MB and 1 GB. Exporting the 1 GB one peaks at 8.2 GB of RSS; mBART-large's dimensions ("3gb", a 2.9 GB
# merged decoder that Optimum would write with external data) would need about three times that.
SIZES = {
    "50mb": dict(d_model=256, encoder_ffn_dim=1024, decoder_ffn_dim=1024, encoder_layers=2, decoder_layers=2,
                 encoder_attention_heads=4, decoder_attention_heads=4, vocab_size=20001, pad_token_id=20000,
                 decoder_start_token_id=20000),
    "1gb": dict(d_model=1024, encoder_ffn_dim=4096, decoder_ffn_dim=4096, encoder_attention_heads=16,
                decoder_attention_heads=16),
    "3gb": dict(d_model=1024, encoder_ffn_dim=4096, decoder_ffn_dim=4096, encoder_layers=12, decoder_layers=12,
                encoder_attention_heads=16, decoder_attention_heads=16, vocab_size=250001, pad_token_id=250000,
                decoder_start_token_id=250000),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=sorted(SIZES), help="scaled dimensions (default: opus-mt-en-zh's own)")
    parser.add_argument("--client-files", action="store_true",
                        help="keep only what a client loads (encoder, merged decoder, configs): no split decoders")
    args = parser.parse_args()
    config = transformers.MarianConfig(**OPUS_MT_EN_ZH | SIZES.get(args.size, {}))
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        src, exported = Path(tmp) / "pt", Path(tmp) / "onnx"
        model.save_pretrained(src)
        make_samples.main_export(str(src), output=str(exported), task=make_samples.SEQ2SEQ, do_validation=False)
        staging = args.out.with_name(args.out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(exported, staging, ignore=shutil.ignore_patterns("decoder_model.onnx*",
                                                                          "decoder_with_past_model.onnx*")
                        if args.client_files else None)
    shutil.rmtree(args.out, ignore_errors=True)
    staging.rename(args.out)  # the cache is complete or absent, never half-written
    print(json.dumps(sorted(p.name for p in args.out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
