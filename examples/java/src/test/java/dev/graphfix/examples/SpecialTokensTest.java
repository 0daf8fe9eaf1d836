package dev.graphfix.examples;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.OptionalInt;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SpecialTokensTest {
    @TempDir
    Path folder;

    @Test
    void generationConfigOverridesConfigButNotWithNull() throws IOException {
        Files.writeString(folder.resolve("config.json"),
                "{\"decoder_start_token_id\": 2, \"eos_token_id\": 2, \"forced_bos_token_id\": 7, \"max_length\": 200}");
        Files.writeString(folder.resolve("generation_config.json"),
                "{\"eos_token_id\": [1, 3], \"forced_bos_token_id\": null, \"max_length\": 20}");
        assertEquals(new SpecialTokens(2, Set.of(1L, 3L), 7L, OptionalInt.of(20)), SpecialTokens.read(folder));
    }

    @Test
    void configAloneNeedsNoGenerationConfig() throws IOException {
        Files.writeString(folder.resolve("config.json"), "{\"decoder_start_token_id\": 0, \"eos_token_id\": 1}");
        SpecialTokens tokens = SpecialTokens.read(folder);
        assertEquals(Set.of(1L), tokens.eos());
        assertNull(tokens.forcedBos());
        assertEquals(OptionalInt.empty(), tokens.maxLength());
    }

    @Test
    void aFolderWithoutDecoderStartIsRefused() throws IOException {
        Files.writeString(folder.resolve("config.json"), "{\"eos_token_id\": 1}");
        assertThrows(IOException.class, () -> SpecialTokens.read(folder));
    }
}
