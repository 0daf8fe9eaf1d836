package dev.graphfix.examples;

import ai.onnxruntime.OrtException;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;

/**
 * {@code GreedyDecode [--max-new-tokens N] MODEL_DIR [TOKEN_ID ...]}: prints the decoder's sequence (the start token,
 * then each generated id) as the last line of stdout. Exit codes: 0 decoded, 1 onnxruntime refused the model (its
 * own message on stderr), 2 bad usage or an export folder this client cannot read.
 */
public final class GreedyDecode {
    /** The source ids when none are given: the same short sequence in every example client. */
    static final long[] DEFAULT_SOURCE_IDS = {17, 42, 8, 61, 33, 5};
    static final int DEFAULT_MAX_NEW_TOKENS = 32;

    private GreedyDecode() {
    }

    public static void main(String[] args) {
        System.exit(run(args));
    }

    static int run(String[] args) {
        int maxNewTokens = DEFAULT_MAX_NEW_TOKENS;
        List<String> positional = new ArrayList<>();
        try {
            for (int i = 0; i < args.length; i++) {
                if (args[i].equals("--max-new-tokens") && i + 1 < args.length) {
                    maxNewTokens = Integer.parseInt(args[++i]);
                } else if (args[i].startsWith("--max-new-tokens=")) {
                    maxNewTokens = Integer.parseInt(args[i].substring("--max-new-tokens=".length()));
                } else if (args[i].startsWith("--")) {
                    return usage("unknown option " + args[i]);
                } else {
                    positional.add(args[i]);
                }
            }
            if (positional.isEmpty() || maxNewTokens < 0) {
                return usage(positional.isEmpty() ? "no MODEL_DIR" : "--max-new-tokens must be >= 0");
            }
            long[] sourceIds = positional.size() == 1 ? DEFAULT_SOURCE_IDS
                    : positional.subList(1, positional.size()).stream().mapToLong(Long::parseLong).toArray();
            try (GreedyDecoder decoder = new GreedyDecoder(Path.of(positional.get(0)))) {
                List<Long> sequence = decoder.decode(sourceIds, maxNewTokens);
                System.out.println(sequence.stream().map(String::valueOf).collect(Collectors.joining(" ")));
            }
            return 0;
        } catch (NumberFormatException e) {
            return usage("not an integer: " + e.getMessage());
        } catch (DecodeFailure | OrtException e) {
            System.err.println("error: " + e.getMessage());
            return 1;
        } catch (IOException | RuntimeException e) {
            System.err.println("error: " + e.getMessage());
            return 2;
        }
    }

    private static int usage(String problem) {
        System.err.println("error: " + problem);
        System.err.println("usage: run [--ort 1.16.3|current] [--max-new-tokens N] MODEL_DIR [TOKEN_ID ...]");
        return 2;
    }
}
