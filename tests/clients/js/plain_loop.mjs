// A plain present->past client on onnxruntime-node, the way the seeds' Rust/C#/Java clients drive a merged decoder:
// step 1 runs the no-cache branch with empty past, every later step feeds each present.* back as past_key_values.*.
// Greedy, batch 1, EOS held off for min_new_tokens (as transformers' min_new_tokens does).
// Usage: node plain_loop.mjs '{"encoder": PATH, "decoder": PATH, "config": PATH, "inputIds": [...],
//                               "maxNewTokens": N, "minNewTokens": N}'
// Prints one JSON line: {"tokens": [...], "logits": [[...] per step]} (the raw last-position logits), or, if
// onnxruntime throws, the same so far plus "failedStep": k and "error": msg.
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-node';

const { encoder, decoder, config, inputIds, maxNewTokens, minNewTokens } = JSON.parse(process.argv[2]);
const { decoder_start_token_id: startToken, eos_token_id: eosToken } = JSON.parse(readFileSync(config, 'utf8'));

const int64 = (values, dims) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);
const encoderSession = await ort.InferenceSession.create(encoder);
const decoderSession = await ort.InferenceSession.create(decoder);

const sourceIds = int64(inputIds, [1, inputIds.length]);
const sourceMask = int64(inputIds.map(() => 1), [1, inputIds.length]);
const { last_hidden_state: encoderHiddenStates } = await encoderSession.run({ input_ids: sourceIds, attention_mask: sourceMask });

// Empty past of the declared (batch, heads, 0, head_dim) for the first step.
let past = {};
for (const input of decoderSession.inputMetadata) {
  if (!input.name.startsWith('past_key_values.')) continue;
  const [, heads, , headDim] = input.shape;
  if (typeof heads !== 'number' || typeof headDim !== 'number') throw new Error(`${input.name}: heads/head_dim not static`);
  past[input.name] = new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, headDim]);
}

const tokens = [startToken];
const logits = [];
for (let step = 1; step <= maxNewTokens; step++) {
  const feeds = {
    input_ids: int64([tokens[tokens.length - 1]], [1, 1]),
    encoder_hidden_states: encoderHiddenStates,
    encoder_attention_mask: sourceMask,
    use_cache_branch: new ort.Tensor('bool', [step > 1], [1]),
    ...past,
  };
  for (const name of Object.keys(feeds)) if (!decoderSession.inputNames.includes(name)) delete feeds[name];
  let outputs;
  try {
    outputs = await decoderSession.run(feeds);
  } catch (err) {
    console.log(JSON.stringify({ tokens, logits, failedStep: step, error: String(err.message ?? err) }));
    process.exit(0);
  }
  const { data, dims } = outputs.logits;
  const vocab = dims[dims.length - 1];
  const last = data.subarray(data.length - vocab);
  logits.push(Array.from(last));
  let best = -1;
  for (let id = 0; id < vocab; id++) {
    if (id === eosToken && step <= minNewTokens) continue;
    if (best < 0 || last[id] > last[best]) best = id;
  }
  tokens.push(best);
  past = {};
  for (const name of decoderSession.outputNames) {
    if (name.startsWith('present.')) past[name.replace(/^present\./, 'past_key_values.')] = outputs[name];
  }
}
console.log(JSON.stringify({ tokens, logits }));
