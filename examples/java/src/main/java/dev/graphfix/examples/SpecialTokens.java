package dev.graphfix.examples;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.OptionalInt;
import java.util.Set;

/**
 * The token ids that drive greedy decoding, read as transformers reads them: generation_config.json's values over
 * config.json's (a null there does not override).
 *
 * @param decoderStart the first token of the decoder's sequence
 * @param eos the tokens that end the sequence (generation_config.json may list several)
 * @param forcedBos the token forced as the first generated one (mBART-50, M2M100, NLLB), if the config sets one
 * @param maxLength the longest sequence, start token included, if the config sets one
 */
public record SpecialTokens(long decoderStart, Set<Long> eos, Long forcedBos, OptionalInt maxLength) {

    /** The special tokens of an export folder; fails when it has no decoder_start_token_id. */
    public static SpecialTokens read(Path folder) throws IOException {
        JsonObject merged = new JsonObject();
        for (String name : new String[] {"config.json", "generation_config.json"}) {
            Path file = folder.resolve(name);
            if (!Files.isRegularFile(file)) {
                continue;
            }
            JsonObject config = JsonParser.parseString(Files.readString(file, StandardCharsets.UTF_8)).getAsJsonObject();
            for (Map.Entry<String, JsonElement> entry : config.entrySet()) {
                if (!entry.getValue().isJsonNull()) {
                    merged.add(entry.getKey(), entry.getValue());
                }
            }
        }
        if (!merged.has("decoder_start_token_id")) {
            throw new IOException("no decoder_start_token_id in " + folder.resolve("config.json")
                    + " or generation_config.json");
        }
        Set<Long> eos = new LinkedHashSet<>();
        JsonElement eosValue = merged.get("eos_token_id");
        if (eosValue != null && eosValue.isJsonArray()) {
            eosValue.getAsJsonArray().forEach(id -> eos.add(id.getAsLong()));
        } else if (eosValue != null) {
            eos.add(eosValue.getAsLong());
        }
        Long forcedBos = merged.has("forced_bos_token_id") ? merged.get("forced_bos_token_id").getAsLong() : null;
        OptionalInt maxLength = merged.has("max_length")
                ? OptionalInt.of(merged.get("max_length").getAsInt()) : OptionalInt.empty();
        return new SpecialTokens(merged.get("decoder_start_token_id").getAsLong(), Set.copyOf(eos), forcedBos,
                maxLength);
    }
}
