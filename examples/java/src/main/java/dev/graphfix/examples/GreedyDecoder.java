package dev.graphfix.examples;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OnnxValue;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtLoggingLevel;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.TensorInfo;
import java.io.IOException;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Greedy decoding of an Optimum encoder-decoder export (encoder_model.onnx + decoder_model_merged.onnx) with the
 * plain loop every runtime can run:
 *
 * <pre>
 *   step 1:  input_ids = [[decoder_start_token_id]], use_cache_branch = [false] (a bool tensor of shape [1]),
 *            every past_key_values.* an empty tensor of shape (1, heads, 0, head_dim)
 *   step 2+: input_ids = [[the token chosen at the step before]], use_cache_branch = [true],
 *            every past_key_values.X = the present.X of the step before (encoder KV included)
 * </pre>
 *
 * All input and output names come from the sessions, never from a table per architecture.
 */
public final class GreedyDecoder implements AutoCloseable {
    private static final String PAST = "past_key_values.";
    private static final String PRESENT = "present.";

    private final OrtEnvironment env = OrtEnvironment.getEnvironment();
    private final OrtSession encoder;
    private final OrtSession decoder;
    private final SpecialTokens tokens;

    /** Loads both sessions of an export folder; a model this onnxruntime refuses is a {@link DecodeFailure}. */
    public GreedyDecoder(Path folder) throws IOException, DecodeFailure {
        if (!Files.isDirectory(folder)) {
            throw new IOException(folder + " is not a folder");
        }
        tokens = SpecialTokens.read(folder);
        // Optimum writes the models at the top of the export, onnx-community layouts in onnx/.
        Path models = Files.isRegularFile(folder.resolve("decoder_model_merged.onnx")) ? folder : folder.resolve("onnx");
        encoder = load(models.resolve("encoder_model.onnx"));
        try {
            decoder = load(models.resolve("decoder_model_merged.onnx"));
        } catch (DecodeFailure | IOException e) {
            close(encoder);
            throw e;
        }
    }

    private OrtSession load(Path model) throws IOException, DecodeFailure {
        if (!Files.isRegularFile(model)) {
            throw new IOException("no " + model.getFileName() + " in " + model.getParent());
        }
        try (OrtSession.SessionOptions options = new OrtSession.SessionOptions()) {
            // Errors only: onnxruntime's warnings about unused initializers would bury the decoded ids.
            options.setSessionLogLevel(OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR);
            return env.createSession(model.toString(), options);
        } catch (OrtException e) {
            throw new DecodeFailure(0, "onnxruntime cannot load " + model, e);
        }
    }

    /** The decoder's sequence: decoder_start_token_id, then each token generated with the KV cache. */
    public List<Long> decode(long[] sourceIds, int maxNewTokens) throws DecodeFailure {
        return run(sourceIds, maxNewTokens, true, true);
    }

    /** As {@link #decode}, optionally going on past eos_token_id (to compare long sequences on random weights). */
    public List<Long> decode(long[] sourceIds, int maxNewTokens, boolean stopAtEos) throws DecodeFailure {
        return run(sourceIds, maxNewTokens, true, stopAtEos);
    }

    /**
     * The same sequence recomputed without the cache: every step feeds the whole sequence so far with
     * use_cache_branch = false and an empty past. The reference the cached loop must match.
     */
    public List<Long> decodeWithoutCache(long[] sourceIds, int maxNewTokens, boolean stopAtEos) throws DecodeFailure {
        return run(sourceIds, maxNewTokens, false, stopAtEos);
    }

    private List<Long> run(long[] sourceIds, int maxNewTokens, boolean useCache, boolean stopAtEos)
            throws DecodeFailure {
        List<Long> sequence = new ArrayList<>(List.of(tokens.decoderStart()));
        int step = 0;
        try (OnnxTensor ids = longTensor(sourceIds);
                OnnxTensor mask = longTensor(ones(sourceIds.length));
                OrtSession.Result encoded = encode(ids, mask)) {
            OnnxValue hidden = output(encoded, "last_hidden_state", encoder);
            Map<String, OnnxTensor> emptyPast = emptyPast();
            Map<String, OnnxTensor> past = emptyPast;
            OrtSession.Result previous = null;
            try {
                while (sequence.size() - 1 < maxNewTokens
                        && sequence.size() < tokens.maxLength().orElse(Integer.MAX_VALUE)) {
                    step++;
                    boolean cached = useCache && step > 1;
                    long[] decoderIds = useCache ? new long[] {sequence.get(sequence.size() - 1)} : toArray(sequence);
                    // [docs:step]
                    OrtSession.Result result;
                    try (OnnxTensor inputIds = longTensor(decoderIds);
                            OnnxTensor useCacheBranch = OnnxTensor.createTensor(env, new boolean[] {cached})) {
                        Map<String, OnnxTensor> feeds = decoderFeeds(inputIds, (OnnxTensor) hidden, mask,
                                useCacheBranch, cached ? past : emptyPast);
                        result = decoder.run(feeds);
                    }
                    // [/docs:step]
                    long next = step == 1 && tokens.forcedBos() != null
                            ? tokens.forcedBos() : lastArgmax((OnnxTensor) output(result, "logits", decoder));
                    sequence.add(next);
                    if (previous != null) {
                        previous.close();
                    }
                    previous = result;
                    past = presentsAsPast(result);
                    if (stopAtEos && tokens.eos().contains(next)) {
                        break;
                    }
                }
            } finally {
                if (previous != null) {
                    previous.close();
                }
                emptyPast.values().forEach(OnnxTensor::close);
            }
        } catch (OrtException e) {
            throw new DecodeFailure(step, step == 0 ? "encoder failed" : "decoder step " + step + " failed", e);
        }
        return sequence;
    }

    private OrtSession.Result encode(OnnxTensor ids, OnnxTensor mask) throws OrtException {
        Map<String, OnnxTensor> feeds = new LinkedHashMap<>();
        for (String name : encoder.getInputNames()) {
            switch (name) {
                case "input_ids" -> feeds.put(name, ids);
                case "attention_mask" -> feeds.put(name, mask);
                default -> throw new IllegalArgumentException("the encoder declares an input this client cannot "
                        + "feed: " + name);
            }
        }
        return encoder.run(feeds);
    }

    /** The decoder's inputs in the order the session lists them (Java's run takes them by name anyway). */
    private Map<String, OnnxTensor> decoderFeeds(OnnxTensor inputIds, OnnxTensor hidden, OnnxTensor mask,
            OnnxTensor useCacheBranch, Map<String, OnnxTensor> past) {
        Map<String, OnnxTensor> feeds = new LinkedHashMap<>();
        for (String name : decoder.getInputNames()) {
            OnnxTensor value = switch (name) {
                case "input_ids" -> inputIds;
                case "encoder_hidden_states" -> hidden;
                case "encoder_attention_mask" -> mask;
                case "use_cache_branch" -> useCacheBranch;
                default -> past.get(name);
            };
            if (value == null) {
                throw new IllegalArgumentException("the decoder declares an input this client cannot feed: " + name);
            }
            feeds.put(name, value);
        }
        return feeds;
    }

    // [docs:empty-past]
    /**
     * Step 1's past: zero past tokens, heads and head_dim as the decoder declares them (fixed numbers in Optimum
     * exports). A FloatBuffer of capacity 0 makes a zero-size tensor in onnxruntime 1.16.3 and in current releases.
     */
    private Map<String, OnnxTensor> emptyPast() throws OrtException {
        Map<String, OnnxTensor> past = new HashMap<>();
        for (Map.Entry<String, NodeInfo> input : decoder.getInputInfo().entrySet()) {
            if (!input.getKey().startsWith(PAST)) {
                continue;
            }
            TensorInfo info = (TensorInfo) input.getValue().getInfo();
            long[] shape = info.getShape();
            if (shape.length != 4 || shape[1] < 0 || shape[3] < 0 || info.type != OnnxJavaType.FLOAT) {
                throw new IllegalArgumentException(input.getKey() + " is not a float tensor (batch, heads, past, "
                        + "head_dim) with fixed heads and head_dim: " + info);
            }
            past.put(input.getKey(), OnnxTensor.createTensor(env, FloatBuffer.allocate(0),
                    new long[] {1, shape[1], 0, shape[3]}));
        }
        return past;
    }
    // [/docs:empty-past]

    /** The whole cache for the next step: every present.X becomes past_key_values.X (owned by {@code result}). */
    private static Map<String, OnnxTensor> presentsAsPast(OrtSession.Result result) {
        Map<String, OnnxTensor> past = new HashMap<>();
        for (Map.Entry<String, OnnxValue> output : result) {
            if (output.getKey().startsWith(PRESENT)) {
                past.put(PAST + output.getKey().substring(PRESENT.length()), (OnnxTensor) output.getValue());
            }
        }
        return past;
    }

    private static OnnxValue output(OrtSession.Result result, String name, OrtSession session) {
        return result.get(name).orElseThrow(() -> new IllegalArgumentException(
                "the model has no output " + name + "; it has " + session.getOutputNames()));
    }

    /** argmax over logits[0, -1, :]; ties go to the lowest id, like numpy. */
    private static long lastArgmax(OnnxTensor logits) {
        long[] shape = logits.getInfo().getShape();
        int vocab = (int) shape[shape.length - 1];
        FloatBuffer values = logits.getFloatBuffer();
        int last = values.limit() - vocab;
        int best = 0;
        for (int id = 1; id < vocab; id++) {
            if (values.get(last + id) > values.get(last + best)) {
                best = id;
            }
        }
        return best;
    }

    private OnnxTensor longTensor(long[] values) throws OrtException {
        return OnnxTensor.createTensor(env, LongBuffer.wrap(values), new long[] {1, values.length});
    }

    private static long[] ones(int length) {
        long[] ones = new long[length];
        Arrays.fill(ones, 1L);
        return ones;
    }

    private static long[] toArray(List<Long> values) {
        return values.stream().mapToLong(Long::longValue).toArray();
    }

    private static void close(OrtSession session) {
        try {
            session.close();
        } catch (OrtException e) {
            // Closing after a failed load: the load's error is the one to report.
        }
    }

    @Override
    public void close() throws OrtException {
        try {
            decoder.close();
        } finally {
            encoder.close();
        }
    }
}
