// Greedy decoding with a graphfix-repaired Optimum export on onnxruntime-node: the plain present->past loop.
//
//   npm install                                   # onnxruntime-node, pinned in package.json
//   node greedy_decode.mjs FIXED_DIR 17 42 8 0     # source token ids; prints the generated ids as JSON
//
// FIXED_DIR is the output of `graphfix repair EXPORT_DIR FIXED_DIR` (encoder_model.onnx, decoder_model_merged.onnx
// at the top or in onnx/, config.json, optionally generation_config.json). The loop, as `graphfix describe` shows it:
//   step 1:  input_ids = [[decoder_start_token_id]], use_cache_branch = [false], every past_key_values.* empty:
//            shape (batch, heads, 0, head_dim); encoder_hidden_states / encoder_attention_mask from the encoder
//   step 2+: input_ids = [[the token chosen at the step before]], use_cache_branch = [true], every
//            past_key_values.* = the present.* of the same name from the step before (encoder KV included)
//   stop at eos_token_id (unless IGNORE_EOS=1 in the environment) or MAX_NEW_TOKENS (env, default 32).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';

const [folder, ...ids] = process.argv.slice(2);
if (!folder || ids.length === 0) {
  console.error('usage: node greedy_decode.mjs FIXED_DIR TOKEN_ID...');
  process.exit(2);
}
const maxNewTokens = Number(process.env.MAX_NEW_TOKENS ?? 32);
const stopAtEos = process.env.IGNORE_EOS !== '1';

// Optimum keeps the models at the top of the export, onnx-community in onnx/.
const modelDir = [folder, join(folder, 'onnx')].find((dir) => existsSync(join(dir, 'decoder_model_merged.onnx')));
if (!modelDir) throw new Error(`no decoder_model_merged.onnx in ${folder} or ${join(folder, 'onnx')}`);

// generation_config.json over config.json, as transformers reads them.
const config = {};
for (const name of ['config.json', 'generation_config.json']) {
  const path = join(folder, name);
  if (existsSync(path)) Object.assign(config, JSON.parse(readFileSync(path, 'utf8')));
}
const { decoder_start_token_id: startToken, eos_token_id: eosToken } = config;

const int64 = (values, dims) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);
const encoder = await ort.InferenceSession.create(join(modelDir, 'encoder_model.onnx'));
const decoder = await ort.InferenceSession.create(join(modelDir, 'decoder_model_merged.onnx'));

const sourceIds = int64(ids.map(Number), [1, ids.length]);
const sourceMask = int64(ids.map(() => 1), [1, ids.length]);
const encoderFeeds = { input_ids: sourceIds, attention_mask: sourceMask };
for (const name of Object.keys(encoderFeeds)) if (!encoder.inputNames.includes(name)) delete encoderFeeds[name];
const { last_hidden_state: encoderHiddenStates } = await encoder.run(encoderFeeds);

// Step 1's past: zero past tokens; heads and head_dim as the signature declares them (onnxruntime-node >= 1.21
// has inputMetadata; before it, they come from config.json as transformers.js derives them).
function headsAndHeadDim(name) {
  const declared = decoder.inputMetadata?.find((input) => input.name === name)?.shape;
  if (declared) return [declared[1], declared[3]];
  const heads = config.decoder_attention_heads ?? config.num_heads ?? config.num_attention_heads;
  return [heads, config.d_kv ?? config.head_dim ?? config.d_model / heads];
}
let past = {};
for (const name of decoder.inputNames) {
  if (!name.startsWith('past_key_values.')) continue;
  const [heads, headDim] = headsAndHeadDim(name);
  past[name] = new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, headDim]);
}

const tokens = [startToken];
for (let step = 1; step <= maxNewTokens; step++) {
  const feeds = {
    input_ids: int64([tokens[tokens.length - 1]], [1, 1]),
    encoder_hidden_states: encoderHiddenStates,
    encoder_attention_mask: sourceMask,
    use_cache_branch: new ort.Tensor('bool', [step > 1], [1]),
    ...past,
  };
  for (const name of Object.keys(feeds)) if (!decoder.inputNames.includes(name)) delete feeds[name];
  const outputs = await decoder.run(feeds);
  const { data, dims } = outputs.logits;
  const vocab = dims[dims.length - 1];
  const last = data.subarray(data.length - vocab);
  let best = 0;
  for (let id = 1; id < vocab; id++) if (last[id] > last[best]) best = id;
  tokens.push(best);
  // The whole cache for the next step: every present.* becomes the past_key_values.* of the same name.
  past = {};
  for (const name of decoder.outputNames) {
    if (name.startsWith('present.')) past[name.replace(/^present\./, 'past_key_values.')] = outputs[name];
  }
  if (stopAtEos && best === eosToken) break;
}
console.log(JSON.stringify({ tokens }));
