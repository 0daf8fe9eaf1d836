"""A plain client on tract (sonos/tract, its Python bindings): the encoder, then the split pair that `graphfix split`
writes, decoder_model.onnx at step 1 (and for full recompute) and decoder_with_past_model.onnx fed its own presents
at every later step. tract has no `If` over branches whose shapes differ, so it cannot take a merged decoder.

Run as a subprocess (tract is Rust: a panic inside it must not take the test session down):

    python tests/clients/tract_client.py '{"encoder": PATH, "decoder": PATH, "decoderWithPast": PATH,
        "source": {"inputIds": [...]} | {"numMelBins": 80}, "startToken": N, "eosToken": N, "maxNewTokens": N}'
    python tests/clients/tract_client.py --load PATH   # only load, analyse and optimise one model

Prints one JSON line (plain_loop.greedy_loop's answer, plus "tract": its version); a refusal by tract is the JSON
{"error": message, "stage": "load" | "run"} with exit status 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import tract

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plain_loop import decoder_feeds, greedy_loop, speech_source, text_source


class TractModel:
    """One ONNX file loaded, analysed and optimised by tract, run by input and output name."""

    def __init__(self, path: str):
        model = tract.onnx().load(path).into_model()
        self.inputs = [model.input_name(i) for i in range(model.input_count())]
        # tract names its outputs after the nodes that make them; the order is the graph's.
        self.outputs = [output.name for output in onnx.load(path, load_external_data=False).graph.output]
        assert len(self.outputs) == model.output_count()
        self.runnable = model.into_runnable()

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.runnable.run([np.ascontiguousarray(feeds[name]) for name in self.inputs])
        return {name: value.to_numpy() for name, value in zip(self.outputs, values)}


def main(argv: list[str]) -> int:
    if argv[0] == "--load":
        try:
            TractModel(argv[1])
        except tract.TractError as err:
            print(json.dumps({"error": str(err), "stage": "load", "tract": tract.version()}))
            return 1
        print(json.dumps({"loaded": argv[1], "tract": tract.version()}))
        return 0

    spec = json.loads(argv[0])
    stage = "load"
    try:
        encoder = TractModel(spec["encoder"])
        decoder = TractModel(spec["decoder"])
        with_past = TractModel(spec["decoderWithPast"])
        stage = "run"
        source = spec["source"]
        encoder_feeds = (text_source(source["inputIds"]) if "inputIds" in source
                         else speech_source(source["numMelBins"]))
        hidden = encoder(encoder_feeds)["last_hidden_state"]

        def decode(input_ids, past):
            model = decoder if past is None else with_past
            feeds = decoder_feeds(input_ids, hidden, encoder_feeds, set(model.inputs)) | (past or {})
            out = model(feeds)
            return out["logits"], {name: value for name, value in out.items() if name.startswith("present.")}

        answer = greedy_loop(decode, start_token=spec["startToken"], eos_token=spec["eosToken"],
                             max_new_tokens=spec["maxNewTokens"])
    except tract.TractError as err:
        print(json.dumps({"error": str(err), "stage": stage, "tract": tract.version()}))
        return 1
    print(json.dumps(answer | {"tract": tract.version()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
