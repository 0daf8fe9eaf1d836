// A plain present->past client on onnxruntime-web (WASM backend, run in node), the way a browser app drives a merged
// decoder: step 1 runs the no-cache branch with empty past, every later step feeds each present.* back as
// past_key_values.* with use_cache_branch=true. At every step the same session also runs full recompute (the no-cache
// branch over the whole prefix). Greedy, batch 1, EOS held off at every step.
// Usage: node web_plain_loop.mjs '{"encoder": PATH, "decoder": PATH, "config": PATH, "maxNewTokens": N,
//                                   "source": {"inputIds": [...]} | {"inputFeatures": PATH, "dims": [1, 80, 3000]}}'
// (inputFeatures: raw little-endian float32). Prints one JSON line: {"tokens", "logits", "fullRecompute",
// "pastLengths", "version"}, or, if onnxruntime-web throws, what it has so far plus "failedStep" and "error".
import { readFileSync } from 'node:fs';
import * as ort from 'onnxruntime-web';

const { encoder, decoder, config, maxNewTokens, source } = JSON.parse(process.argv[2]);
const { decoder_start_token_id: startToken, eos_token_id: eosToken } = JSON.parse(readFileSync(config, 'utf8'));

ort.env.wasm.numThreads = 1;
const options = { executionProviders: ['wasm'] };
const version = ort.env.versions.web;
const int64 = (values, dims) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);
const encoderSession = await ort.InferenceSession.create(readFileSync(encoder), options);
const decoderSession = await ort.InferenceSession.create(readFileSync(decoder), options);

let encoderFeeds;
if (source.inputIds) {
  const { inputIds } = source;
  encoderFeeds = { input_ids: int64(inputIds, [1, inputIds.length]),
                   attention_mask: int64(inputIds.map(() => 1), [1, inputIds.length]) };
} else {
  const bytes = readFileSync(source.inputFeatures);
  const features = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  encoderFeeds = { input_features: new ort.Tensor('float32', features, source.dims) };
}
const { last_hidden_state: encoderHiddenStates } = await encoderSession.run(encoderFeeds);

// Empty past of the declared (batch, heads, 0, head_dim) for the no-cache branch.
const emptyPast = {};
for (const input of decoderSession.inputMetadata) {
  if (!input.name.startsWith('past_key_values.')) continue;
  const [, heads, , headDim] = input.shape;
  if (typeof heads !== 'number' || typeof headDim !== 'number') throw new Error(`${input.name}: heads/head_dim not static`);
  emptyPast[input.name] = new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, headDim]);
}

async function decode(ids, past) {
  const feeds = {
    input_ids: int64(ids, [1, ids.length]),
    encoder_hidden_states: encoderHiddenStates,
    encoder_attention_mask: encoderFeeds.attention_mask,
    use_cache_branch: new ort.Tensor('bool', [past !== null], [1]),
    ...(past ?? emptyPast),
  };
  for (const name of Object.keys(feeds)) if (!decoderSession.inputNames.includes(name) || !feeds[name]) delete feeds[name];
  const outputs = await decoderSession.run(feeds);
  const { data, dims } = outputs.logits;
  const vocab = dims[dims.length - 1];
  const presents = {};
  for (const name of decoderSession.outputNames) {
    if (name.startsWith('present.')) presents[name.replace(/^present\./, 'past_key_values.')] = outputs[name];
  }
  return { last: data.subarray(data.length - vocab), presents };
}

const tokens = [startToken];
const logits = [];
const fullRecompute = [];
const pastLengths = [];
let past = null;
for (let step = 1; step <= maxNewTokens; step++) {
  let cached, full;
  try {
    cached = await decode([tokens[tokens.length - 1]], past);
    full = await decode(tokens, null);
  } catch (err) {
    console.log(JSON.stringify({ tokens, logits, fullRecompute, pastLengths, version, failedStep: step,
                                 error: String(err.message ?? err) }));
    process.exit(0);
  }
  pastLengths.push(past === null ? 0 : past['past_key_values.0.decoder.key'].dims[2]);
  logits.push(Array.from(cached.last));
  fullRecompute.push(Array.from(full.last));
  let best = -1;
  for (let id = 0; id < cached.last.length; id++) {
    if (id === eosToken) continue;
    if (best < 0 || cached.last[id] > cached.last[best]) best = id;
  }
  tokens.push(best);
  past = cached.presents;
}
console.log(JSON.stringify({ tokens, logits, fullRecompute, pastLengths, version }));
