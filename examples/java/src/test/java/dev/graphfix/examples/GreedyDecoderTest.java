package dev.graphfix.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.DynamicTest.dynamicTest;

import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;

/**
 * The seed's own test, in the onnxruntime release of the active Maven profile: a repaired export decodes with the
 * KV cache to the ids examples/python generates and to the no-cache recompute, and the unrepaired export fails.
 *
 * <p>The export folders come from the environment (or system properties of the same name, lower case with dots):
 * GRAPHFIX_EXAMPLE_REPAIRED and GRAPHFIX_EXAMPLE_ORIGINAL, each one folder or several separated by ':', and
 * GRAPHFIX_EXAMPLE_PYTHON, a python with numpy and onnxruntime to run examples/python/greedy_decode.py. A missing
 * one fails the test: nothing is skipped.
 */
class GreedyDecoderTest {
    private static final String RELEASE = System.getProperty("ort.version", "?");

    @TestFactory
    Stream<DynamicTest> repairedExportDecodesLikeExamplesPython() {
        Path python = Path.of(System.getProperty("invocation.dir", ""))
                .resolve(setting("GRAPHFIX_EXAMPLE_PYTHON", "a python with numpy and onnxruntime"));
        return folders("GRAPHFIX_EXAMPLE_REPAIRED").map(folder -> dynamicTest(folder.toString(), () -> {
            try (GreedyDecoder decoder = new GreedyDecoder(folder)) {
                List<Long> ids = decoder.decode(GreedyDecode.DEFAULT_SOURCE_IDS, GreedyDecode.DEFAULT_MAX_NEW_TOKENS);
                assertEquals(pythonReference(python, folder), ids, "onnxruntime " + RELEASE + " on " + folder);
            }
        }));
    }

    @TestFactory
    Stream<DynamicTest> repairedExportDecodesLikeTheNoCacheRecompute() {
        return folders("GRAPHFIX_EXAMPLE_REPAIRED").map(folder -> dynamicTest(folder.toString(), () -> {
            try (GreedyDecoder decoder = new GreedyDecoder(folder)) {
                // Past eos, so that the cached loop runs well beyond step 3, where the unrepaired export fails.
                List<Long> cached = decoder.decode(GreedyDecode.DEFAULT_SOURCE_IDS, 12, false);
                assertEquals(13, cached.size());
                assertEquals(decoder.decodeWithoutCache(GreedyDecode.DEFAULT_SOURCE_IDS, 12, false), cached);
            }
        }));
    }

    /** generation_config.json's forced_bos_token_id and max_length steer the loop (mBART-50, M2M100, NLLB). */
    @TestFactory
    Stream<DynamicTest> forcedBosAndMaxLengthFromGenerationConfigSteerTheLoop() {
        return folders("GRAPHFIX_EXAMPLE_REPAIRED").map(folder -> dynamicTest(folder.toString(), () -> {
            List<Long> free;
            try (GreedyDecoder decoder = new GreedyDecoder(folder)) {
                free = decoder.decode(GreedyDecode.DEFAULT_SOURCE_IDS, 4, false);
            }
            long forced = free.get(1) == 0 ? 1 : free.get(1) - 1;
            Path steered = Files.createTempDirectory("graphfix-java-steered");
            try {
                for (String model : new String[] {"encoder_model.onnx", "decoder_model_merged.onnx", "config.json"}) {
                    Files.createSymbolicLink(steered.resolve(model), folder.toAbsolutePath().resolve(model));
                }
                Files.writeString(steered.resolve("generation_config.json"), "{\"forced_bos_token_id\": " + forced
                        + ", \"max_length\": 4, \"eos_token_id\": []}");
                try (GreedyDecoder decoder = new GreedyDecoder(steered)) {
                    List<Long> sequence = decoder.decode(GreedyDecode.DEFAULT_SOURCE_IDS, 32);
                    assertEquals(4, sequence.size(), "max_length counts the start token: " + sequence);
                    assertEquals(List.of(free.get(0), forced), sequence.subList(0, 2));
                }
            } finally {
                try (Stream<Path> files = Files.list(steered)) {
                    for (Path file : files.toList()) {
                        Files.delete(file);
                    }
                }
                Files.delete(steered);
            }
        }));
    }

    /** The original fails at step 3 (fed the dummy encoder KV), or at load where the release cannot read it. */
    @TestFactory
    Stream<DynamicTest> originalExportFailsAtLoadOrAtStep3() {
        return folders("GRAPHFIX_EXAMPLE_ORIGINAL").map(folder -> dynamicTest(folder.toString(), () -> {
            DecodeFailure failure = assertThrows(DecodeFailure.class, () -> {
                try (GreedyDecoder decoder = new GreedyDecoder(folder)) {
                    decoder.decode(GreedyDecode.DEFAULT_SOURCE_IDS, GreedyDecode.DEFAULT_MAX_NEW_TOKENS);
                }
            }, "the unrepaired export decoded in onnxruntime " + RELEASE);
            assertTrue(failure.step == 0 || failure.step == 3, "failed at step " + failure.step + ": "
                    + failure.getMessage());
            System.out.println("onnxruntime " + RELEASE + " on " + folder + ": " + failure.getMessage());
        }));
    }

    private static List<Long> pythonReference(Path python, Path folder) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of(python.toString(), System.getProperty("python.example"),
                folder.toString(), "--max-new-tokens", String.valueOf(GreedyDecode.DEFAULT_MAX_NEW_TOKENS), "--json",
                "--ids"));
        Arrays.stream(GreedyDecode.DEFAULT_SOURCE_IDS).forEach(id -> command.add(String.valueOf(id)));
        Process process = new ProcessBuilder(command).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        String stdout = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
        if (process.waitFor() != 0) {
            fail("examples/python failed on " + folder + ": " + command);
        }
        String last = stdout.substring(stdout.lastIndexOf('\n') + 1);
        List<Long> ids = new ArrayList<>();
        JsonParser.parseString(last).getAsJsonObject().getAsJsonArray("tokens").forEach(id -> ids.add(id.getAsLong()));
        return ids;
    }

    private static Stream<Path> folders(String name) {
        return Arrays.stream(setting(name, "the export folder(s) to test").split(":")).filter(s -> !s.isEmpty())
                .map(s -> Path.of(System.getProperty("invocation.dir", "")).resolve(s)).peek(folder -> {
            if (!Files.isDirectory(folder)) {
                fail(name + " names " + folder + ", which is not a folder");
            }
        });
    }

    private static String setting(String name, String what) {
        String value = System.getProperty(name.toLowerCase().replace('_', '.'), System.getenv(name));
        if (value == null || value.isBlank()) {
            fail(name + " is not set: " + what + " (examples/java/README.md, Tests)");
        }
        return value;
    }
}
