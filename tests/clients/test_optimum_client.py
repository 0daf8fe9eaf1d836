"""Optimum's own client, ORTModelForSeq2SeqLM with the merged decoder and use_cache=True, on a repaired export
generates exactly what the PyTorch model it was exported from generates, greedy and with 3 beams."""

from __future__ import annotations

import pytest
import torch
from optimum.onnxruntime import ORTModelForSeq2SeqLM

from .conftest import ARCHS, GENERATION, MERGED, SOURCE_IDS, assert_scores_match


@pytest.mark.parametrize("use_io_binding", [False, True], ids=["plain", "io-binding"])
@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "beam3"])
@pytest.mark.parametrize("arch", ARCHS)
def test_optimum_on_the_repaired_export_generates_the_pytorch_tokens(arch, num_beams, use_io_binding, repaired_export,
                                                                   pytorch_reference):
    model_dir = repaired_export(arch)
    model = ORTModelForSeq2SeqLM.from_pretrained(model_dir, use_cache=True, use_merged=True,
                                                 use_io_binding=use_io_binding)
    assert model.decoder.path == model_dir / MERGED
    assert model.decoder_with_past is None  # the merged decoder drives every step, cached ones included

    input_ids = torch.tensor([SOURCE_IDS[arch]])
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), num_beams=num_beams,
                         return_dict_in_generate=True, output_scores=True, **GENERATION)

    expected = pytorch_reference(arch, num_beams)
    assert out.sequences[0].tolist() == expected.tokens
    if num_beams == 1:
        assert_scores_match(torch.stack([s[0] for s in out.scores]), expected.scores)
    else:
        assert_scores_match([float(out.sequences_scores[0])], [expected.sequence_score])
