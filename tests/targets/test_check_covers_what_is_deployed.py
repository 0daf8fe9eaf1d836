"""With --target-ort, check answers for every file it is handed, as pre-commit hands them: a repaired decoder next to
the export's original encoder is not "ok" when the deployed onnxruntime refuses the encoder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPSET21 = ROOT / "sample_models" / "exports" / "current-marian-opset21"  # its encoder is IR 10: onnxruntime < 1.17 refuses it


@pytest.fixture(scope="module")
def decoder_for_1_16(tmp_path_factory) -> Path:
    from graphfix import repair

    out = tmp_path_factory.mktemp("hook") / "decoder_model_merged.onnx"
    repair(OPSET21 / "decoder_model_merged.onnx", out, validate=False, target_ort="1.16", load_on_target=False)
    return out


@pytest.mark.parametrize("flags", [["--ignore-other-models"], []], ids=["as-the-hook-runs-it", "plain"])
def test_a_hook_run_over_a_repaired_decoder_and_the_original_encoder_names_the_encoder(cli, decoder_for_1_16, flags):
    encoder = OPSET21 / "encoder_model.onnx"
    result = cli("check", "--target-ort", "1.16", *flags, decoder_for_1_16, encoder)
    assert result.exit_code == 1, result.stdout + result.stderr
    assert any(line.startswith(f"{encoder}: ") for line in result.stdout.splitlines()), result.stdout
    assert "skipped" not in result.stdout
    assert "loads in onnxruntime >= 1.16" not in result.stdout


def test_the_loads_in_line_counts_every_file_even_the_ones_passed_over(cli, decoder_for_1_16):
    encoder = OPSET21 / "encoder_model.onnx"
    result = cli("check", "--ignore-other-models", decoder_for_1_16, encoder)  # no target: the encoder is passed over
    assert "skipped" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("as they are, they load in onnxruntime >= 1.18"), result.stdout
