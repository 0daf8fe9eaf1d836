/* The few generation settings greedy decoding needs, read from config.json and generation_config.json. */
#ifndef GREEDY_DECODE_JSON_CONFIG_H
#define GREEDY_DECODE_JSON_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define MAX_EOS_TOKENS 16

typedef struct {
    int has_decoder_start;
    int64_t decoder_start_token_id;
    size_t eos_count; /* 0: never stop at a token */
    int64_t eos_token_ids[MAX_EOS_TOKENS];
    int has_forced_bos;
    int64_t forced_bos_token_id;
    int64_t max_length; /* 0: no limit from the config */
} generation_settings;

/* Reads MODEL_DIR/config.json, then MODEL_DIR/generation_config.json (optional) over it: a key present there,
 * null included, replaces config.json's, as transformers reads them. Returns 0, or -1 with a message in error. */
int read_generation_settings(const char *model_dir, generation_settings *settings, char *error, size_t error_size);

#endif
