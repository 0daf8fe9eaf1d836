// transformers.js as its users run it, on a local model in onnx-community layout (config.json on top, onnx/*.onnx),
// fed token ids directly (the tiny test models have no tokenizer). Greedy, batch 1.
// Usage: node transformers_js_generate.mjs '{"modelDir": PATH, "inputIds": [...], "generation": {...}}'
// Prints one JSON line: {"tokens": [...], "scores": [[...] per step], "sessions": [names]}; scores are what the
// sampler chose from (after transformers.js' own logits processors), -Infinity written as null.
import { basename, dirname } from 'node:path';
import { AutoModelForSeq2SeqLM, LogitsProcessor, Tensor, env } from '@huggingface/transformers';

// Appended after the built-in processors, so it sees exactly the scores greedy search picks from.
class ScoreRecorder extends LogitsProcessor {
  steps = [];

  _call(inputIds, logits) {
    this.steps.push(Array.from(logits.data, (v) => (Number.isFinite(v) ? v : null)));
    return logits;
  }
}

const { modelDir, inputIds, generation } = JSON.parse(process.argv[2]);
env.allowRemoteModels = false;
env.localModelPath = dirname(modelDir);

const model = await AutoModelForSeq2SeqLM.from_pretrained(basename(modelDir), { dtype: 'fp32', device: 'cpu' });
const inputs = new Tensor('int64', BigInt64Array.from(inputIds.map(BigInt)), [1, inputIds.length]);
const attention_mask = new Tensor('int64', BigInt64Array.from(inputIds.map(() => 1n)), [1, inputIds.length]);
const recorder = new ScoreRecorder();
const output = await model.generate({ inputs, attention_mask, logits_processor: [recorder], ...generation });
console.log(JSON.stringify({ tokens: output.tolist()[0].map(Number), scores: recorder.steps,
                             sessions: Object.keys(model.sessions) }));
