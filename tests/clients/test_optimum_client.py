"""Optimum's own client, ORTModelForSeq2SeqLM with the merged decoder and use_cache=True, on a repaired export
generates exactly what the PyTorch model it was exported from generates: greedy and with 3 beams, one source or a
padded batch of two, with and without IO binding."""

from __future__ import annotations

import pytest
import torch
from optimum.onnxruntime import ORTModelForSeq2SeqLM

from .conftest import ARCHS, GENERATION, MERGED, assert_scores_match, source_batch


@pytest.fixture(scope="module")
def optimum_model(repaired_export):
    """`optimum_model(arch, use_io_binding)`: ORTModelForSeq2SeqLM on the repaired export, loaded once per module."""
    loaded = {}

    def get(arch: str, use_io_binding: bool):
        if (arch, use_io_binding) not in loaded:
            loaded[(arch, use_io_binding)] = ORTModelForSeq2SeqLM.from_pretrained(
                repaired_export(arch), use_cache=True, use_merged=True, use_io_binding=use_io_binding)
        return loaded[(arch, use_io_binding)]

    return get


@pytest.mark.parametrize("use_io_binding", [False, True], ids=["plain", "io-binding"])
@pytest.mark.parametrize("batch", [1, 2], ids=["batch1", "batch2-padded"])
@pytest.mark.parametrize("num_beams", [1, 3], ids=["greedy", "beam3"])
@pytest.mark.parametrize("arch", ARCHS)
def test_optimum_on_the_repaired_export_generates_the_pytorch_tokens(arch, num_beams, batch, use_io_binding,
                                                                   optimum_model, repaired_export, pytorch_reference):
    model = optimum_model(arch, use_io_binding)
    assert model.decoder.path == repaired_export(arch) / MERGED
    assert model.decoder_with_past is None  # the merged decoder drives every step, cached ones included

    input_ids, attention_mask = source_batch(arch, batch)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                         return_dict_in_generate=True, output_scores=True, **GENERATION)

    expected = pytorch_reference(arch, num_beams, batch)
    assert out.sequences.tolist() == expected.tokens
    if num_beams == 1:
        assert_scores_match(torch.stack(out.scores, dim=1), expected.scores)
    else:
        assert_scores_match(out.sequences_scores, expected.sequence_scores)
