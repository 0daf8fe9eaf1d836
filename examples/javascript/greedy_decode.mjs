// Greedy decoding with a graphfix-repaired Optimum export on onnxruntime-node: the plain present->past loop.
//
//   npm ci --ignore-scripts                       # onnxruntime-node, pinned in package.json and package-lock.json
//   node greedy_decode.mjs FIXED_DIR 17 42 8 0     # source token ids; prints the decoder's sequence, space-separated
//   examples/javascript/run [--ort 1.16.3|current] [--max-new-tokens N] FIXED_DIR [TOKEN_ID ...]   (the same, installed)
//
// FIXED_DIR is the output of `graphfix repair EXPORT_DIR FIXED_DIR` (encoder_model.onnx, decoder_model_merged.onnx
// at the top or in onnx/, config.json, optionally generation_config.json). The loop, as `graphfix describe` shows it:
//   step 1:  input_ids = [[decoder_start_token_id]], use_cache_branch = [false], every past_key_values.* empty:
//            shape (batch, heads, 0, head_dim); encoder_hidden_states / encoder_attention_mask from the encoder
//   step 2+: input_ids = [[the token chosen at the step before]], use_cache_branch = [true], every
//            past_key_values.* = the present.* of the same name from the step before (encoder KV included)
//   the token chosen at step 1 is forced_bos_token_id when the config names one (M2M100, NLLB, mBART-50);
//   stop at eos_token_id (unless IGNORE_EOS=1), at MAX_NEW_TOKENS (env, default 32) or at the config's max_length.
// ORT_PACKAGE (env) names the onnxruntime-node package to load: `run --ort 1.16.3` sets the alias
// onnxruntime-node-1.16.3 of package.json.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const ort = await import(process.env.ORT_PACKAGE ?? 'onnxruntime-node');
const [folder, ...ids] = process.argv.slice(2);
if (!folder || ids.length === 0) {
  console.error('usage: node greedy_decode.mjs FIXED_DIR TOKEN_ID...');
  process.exit(2);
}
const maxNewTokens = Number(process.env.MAX_NEW_TOKENS ?? 32);
const stopAtEos = process.env.IGNORE_EOS !== '1';

// Optimum keeps the models at the top of the export, onnx-community in onnx/.
const modelDir = [folder, join(folder, 'onnx')].find((dir) => existsSync(join(dir, 'decoder_model_merged.onnx')));
if (!modelDir) {
  console.error(`error: no decoder_model_merged.onnx in ${folder} or ${join(folder, 'onnx')}`);
  process.exit(2);
}

// generation_config.json over config.json, as transformers reads them.
const config = {};
for (const name of ['config.json', 'generation_config.json']) {
  const path = join(folder, name);
  if (existsSync(path)) Object.assign(config, JSON.parse(readFileSync(path, 'utf8')));
}
const startToken = config.decoder_start_token_id;
const eosTokens = [config.eos_token_id ?? []].flat();
const forcedBos = config.forced_bos_token_id ?? null;
const maxLength = config.max_length ?? Infinity;

// The shapes the model declares for its inputs. onnxruntime-node >= 1.21 has inputMetadata; before it, they are
// read from the file's graph inputs (ModelProto.graph = 7, GraphProto.input = 11, ValueInfoProto name = 1 / type = 2,
// TypeProto.tensor_type = 1, .shape = 2, .dim = 1, Dimension dim_value = 1 / dim_param = 2): a protobuf walk that
// skips the weights.
function varint(bytes, at) {
  let value = 0;
  for (let scale = 1; ; scale *= 128) {
    const byte = bytes[at++];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, at];
  }
}
function* fields(bytes) {
  for (let at = 0; at < bytes.length;) {
    const [tag, start] = varint(bytes, at);
    const wire = tag % 8;
    if (wire === 0) { const [value, end] = varint(bytes, start); yield [Math.floor(tag / 8), value]; at = end; }
    else if (wire === 2) {
      const [length, end] = varint(bytes, start);
      yield [Math.floor(tag / 8), bytes.subarray(end, end + length)];
      at = end + length;
    } else if (wire === 1 || wire === 5) at = start + (wire === 1 ? 8 : 4);
    else throw new Error(`unexpected protobuf wire type ${wire}`);
  }
}
const child = (bytes, number) => [...fields(bytes)].filter(([field]) => field === number).map(([, value]) => value);
function declaredShapes(session, path) {
  if (session.inputMetadata) return new Map(session.inputMetadata.map((input) => [input.name, input.shape]));
  const shapes = new Map();
  for (const input of child(readFileSync(path), 7).flatMap((graph) => child(graph, 11))) {
    const name = new TextDecoder().decode(child(input, 1)[0]);
    const dims = child(input, 2).flatMap((type) => child(type, 1)).flatMap((tensor) => child(tensor, 2))
      .flatMap((shape) => child(shape, 1));
    shapes.set(name, dims.map((dim) => child(dim, 1)[0] ?? new TextDecoder().decode(child(dim, 2)[0] ?? [])));
  }
  return shapes;
}

const quiet = { logSeverityLevel: 3 }; // onnxruntime's warnings off; its errors still reach stderr
const int64 = (values, dims) => new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims);

async function greedyDecode() {
  const encoder = await ort.InferenceSession.create(join(modelDir, 'encoder_model.onnx'), quiet);
  const decoderPath = join(modelDir, 'decoder_model_merged.onnx');
  const decoder = await ort.InferenceSession.create(decoderPath, quiet);

  // [docs:encoder]
  const sourceIds = int64(ids.map(Number), [1, ids.length]);
  const sourceMask = int64(ids.map(() => 1), [1, ids.length]);
  const encoderFeeds = { input_ids: sourceIds, attention_mask: sourceMask };
  for (const name of Object.keys(encoderFeeds)) if (!encoder.inputNames.includes(name)) delete encoderFeeds[name];
  const { last_hidden_state: encoderHiddenStates } = await encoder.run(encoderFeeds);
  // [/docs:encoder]

  // [docs:empty-past]
  // Step 1's past: zero past tokens, heads and head_dim as the decoder declares them.
  const shapes = declaredShapes(decoder, decoderPath);
  let past = {};
  for (const name of decoder.inputNames) {
    if (!name.startsWith('past_key_values.')) continue;
    const [, heads, , headDim] = shapes.get(name);
    past[name] = new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, headDim]);
  }
  // [/docs:empty-past]

  // [docs:loop]
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
    let chosen = 0;
    for (let id = 1; id < vocab; id++) if (last[id] > last[chosen]) chosen = id;
    if (step === 1 && forcedBos !== null) chosen = forcedBos; // the target language of M2M100 / NLLB / mBART-50
    tokens.push(chosen);
    // The whole cache for the next step: every present.* becomes the past_key_values.* of the same name.
    past = {};
    for (const name of decoder.outputNames) {
      if (name.startsWith('present.')) past[name.replace(/^present\./, 'past_key_values.')] = outputs[name];
    }
    if (stopAtEos && eosTokens.includes(chosen)) break;
    if (tokens.length >= maxLength) break;
  }
  // [/docs:loop]
  return tokens;
}

try {
  console.log((await greedyDecode()).join(' ')); // the last line: the decoder's sequence
} catch (error) {
  console.error(`error: onnxruntime-node: ${error.message}`);
  process.exit(1);
}
