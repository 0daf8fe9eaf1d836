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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    config = transformers.MarianConfig(**OPUS_MT_EN_ZH)
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        src, exported = Path(tmp) / "pt", Path(tmp) / "onnx"
        model.save_pretrained(src)
        make_samples.main_export(str(src), output=str(exported), task=make_samples.SEQ2SEQ, do_validation=False)
        staging = args.out.with_name(args.out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(exported, staging)
    shutil.rmtree(args.out, ignore_errors=True)
    staging.rename(args.out)  # the cache is complete or absent, never half-written
    print(json.dumps(sorted(p.name for p in args.out.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
