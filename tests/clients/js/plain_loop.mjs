// A plain present->past client on onnxruntime-node, the way the seeds' Rust/C#/Java clients drive a merged decoder:
// step 1 runs the no-cache branch with empty past, every later step feeds each present.* back as past_key_values.*.
// Greedy, batch 1, EOS held off for min_new_tokens (as transformers' min_new_tokens does).
// Usage: node plain_loop.mjs '{"encoder": PATH, "decoder": PATH, "config": PATH, "inputIds": [...],
//                               "maxNewTokens": N, "minNewTokens": N}'
// Prints one JSON line: {"tokens": [...], "logits": [[...] per step]} (the raw last-position logits), or, if
// onnxruntime throws, the same so far plus "failedStep": k and "error": msg; and always "ortVersion" (what
// onnxruntime-node says it is) and "library" (the libonnxruntime shared object this process mapped).
// The onnxruntime-node is the one installed in the current directory's package: run it from tests/clients/js
// (the newest release) or tests/clients/js-ort116 (1.16.3, the C library Rust ort 1.16.3 links).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const ort = createRequire(join(process.cwd(), 'package.json'))('onnxruntime-node');
const { encoder, decoder, config, inputIds, maxNewTokens, minNewTokens } = JSON.parse(process.argv[2]);
const modelConfig = JSON.parse(readFileSync(config, 'utf8'));
const { decoder_start_token_id: startToken, eos_token_id: eosToken } = modelConfig;

const int64 = (values, dims) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);
const encoderSession = await ort.InferenceSession.create(encoder);
const decoderSession = await ort.InferenceSession.create(decoder);

const sourceIds = int64(inputIds, [1, inputIds.length]);
const sourceMask = int64(inputIds.map(() => 1), [1, inputIds.length]);
const { last_hidden_state: encoderHiddenStates } = await encoderSession.run({ input_ids: sourceIds, attention_mask: sourceMask });

// Empty past of the declared (batch, heads, 0, head_dim) for the first step. onnxruntime-node before 1.21 has no
// inputMetadata; there heads and head_dim come from config.json, as transformers.js derives them.
function pastShape(name) {
  const declared = decoderSession.inputMetadata?.find((input) => input.name === name)?.shape;
  if (declared) return declared;
  const heads = modelConfig.decoder_attention_heads ?? modelConfig.num_heads ?? modelConfig.num_attention_heads;
  return [1, heads, 0, modelConfig.d_kv ?? modelConfig.head_dim ?? modelConfig.d_model / heads];
}
let past = {};
for (const name of decoderSession.inputNames) {
  if (!name.startsWith('past_key_values.')) continue;
  const [, heads, , headDim] = pastShape(name);
  if (typeof heads !== 'number' || typeof headDim !== 'number') throw new Error(`${name}: heads/head_dim not static`);
  past[name] = new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, headDim]);
}
const runtime = {
  ortVersion: ort.env.versions?.node ?? null,
  library: readFileSync('/proc/self/maps', 'utf8').split('\n').map((line) => line.split(/\s+/)[5])
    .find((path) => /\/libonnxruntime\.so[^/]*$/.test(path ?? '')) ?? null,
};

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
    console.log(JSON.stringify({ tokens, logits, failedStep: step, error: String(err.message ?? err), ...runtime }));
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
console.log(JSON.stringify({ tokens, logits, ...runtime }));
