/* A minimal JSON reader for the generation settings: it walks the whole document (strings with escapes, nested
 * objects and arrays, nesting at most 64 deep) and keeps only the top-level keys greedy decoding uses, whose
 * values must be an integer, null, or (eos_token_id only) a list of integers. A nested key of the same name, such
 * as task_specific_params.translation.max_length, is skipped like any other value. */
#include "json_config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct {
    const char *text, *at, *end;
    const char *path;
    char *error;
    size_t error_size;
} cursor;

static int fail(cursor *c, const char *what) {
    snprintf(c->error, c->error_size, "%s: %s at byte %ld", c->path, what, (long)(c->at - c->text));
    return -1;
}

static void skip_space(cursor *c) {
    while (c->at < c->end && (*c->at == ' ' || *c->at == '\t' || *c->at == '\n' || *c->at == '\r')) c->at++;
}

static int expect(cursor *c, char wanted) {
    skip_space(c);
    if (c->at >= c->end || *c->at != wanted) {
        char what[32];
        snprintf(what, sizeof what, "expected '%c'", wanted);
        return fail(c, what);
    }
    c->at++;
    return 0;
}

/* A string; its raw bytes between the quotes (escapes left as they are) in *start and *length. */
static int read_string(cursor *c, const char **start, size_t *length) {
    if (expect(c, '"') != 0) return -1;
    *start = c->at;
    while (c->at < c->end && *c->at != '"') {
        if ((unsigned char)*c->at < 0x20) return fail(c, "control character in a string");
        if (*c->at == '\\') {
            c->at++;
            if (c->at >= c->end || !strchr("\"\\/bfnrtu", *c->at)) return fail(c, "bad escape in a string");
            if (*c->at == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (c->at + i >= c->end || !strchr("0123456789abcdefABCDEF", c->at[i]) || !c->at[i])
                        return fail(c, "bad \\u escape in a string");
                c->at += 4;
            }
        }
        c->at++;
    }
    if (c->at >= c->end) return fail(c, "unterminated string");
    *length = (size_t)(c->at - *start);
    c->at++;
    return 0;
}

static int read_literal(cursor *c, const char *word) {
    size_t length = strlen(word);
    if ((size_t)(c->end - c->at) < length || memcmp(c->at, word, length) != 0) return fail(c, "unexpected character");
    c->at += length;
    return 0;
}

/* A JSON number; it must be an integer (no fraction or exponent) when integer is not NULL. */
static int read_number(cursor *c, int64_t *integer) {
    const char *start = c->at;
    if (c->at < c->end && *c->at == '-') c->at++;
    const char *digits = c->at;
    while (c->at < c->end && *c->at >= '0' && *c->at <= '9') c->at++;
    if (c->at == digits) return fail(c, "expected a number");
    int fractional = 0;
    if (c->at < c->end && *c->at == '.') {
        fractional = 1;
        for (c->at++; c->at < c->end && *c->at >= '0' && *c->at <= '9'; c->at++) {}
    }
    if (c->at < c->end && (*c->at == 'e' || *c->at == 'E')) {
        fractional = 1;
        c->at++;
        if (c->at < c->end && (*c->at == '+' || *c->at == '-')) c->at++;
        for (; c->at < c->end && *c->at >= '0' && *c->at <= '9'; c->at++) {}
    }
    if (integer == NULL) return 0;
    char copy[24];
    size_t length = (size_t)(c->at - start);
    if (fractional || length >= sizeof copy) return fail(c, "expected an integer");
    memcpy(copy, start, length);
    copy[length] = '\0';
    errno = 0;
    long long value = strtoll(copy, NULL, 10);
    if (errno == ERANGE) return fail(c, "integer out of range");
    *integer = (int64_t)value;
    return 0;
}

static int skip_value(cursor *c, int depth);

static int skip_container(cursor *c, int depth, char close, int is_object) {
    if (depth >= MAX_DEPTH) return fail(c, "nesting too deep");
    c->at++;
    skip_space(c);
    if (c->at < c->end && *c->at == close) {
        c->at++;
        return 0;
    }
    for (;;) {
        if (is_object) {
            const char *key;
            size_t key_length;
            if (read_string(c, &key, &key_length) != 0 || expect(c, ':') != 0) return -1;
        }
        if (skip_value(c, depth + 1) != 0) return -1;
        skip_space(c);
        if (c->at < c->end && *c->at == ',') {
            c->at++;
            continue;
        }
        return expect(c, close);
    }
}

static int skip_value(cursor *c, int depth) {
    skip_space(c);
    if (c->at >= c->end) return fail(c, "unexpected end");
    const char *ignored;
    size_t ignored_length;
    switch (*c->at) {
    case '{': return skip_container(c, depth, '}', 1);
    case '[': return skip_container(c, depth, ']', 0);
    case '"': return read_string(c, &ignored, &ignored_length);
    case 't': return read_literal(c, "true");
    case 'f': return read_literal(c, "false");
    case 'n': return read_literal(c, "null");
    default: return read_number(c, NULL);
    }
}

/* An integer or null: *present says which. */
static int read_optional_integer(cursor *c, int *present, int64_t *value) {
    skip_space(c);
    if (c->at < c->end && *c->at == 'n') {
        *present = 0;
        return read_literal(c, "null");
    }
    *present = 1;
    return read_number(c, value);
}

/* eos_token_id: an integer, a list of integers, or null. */
static int read_eos(cursor *c, generation_settings *settings) {
    skip_space(c);
    settings->eos_count = 0;
    if (c->at >= c->end || *c->at != '[') {
        int present;
        if (read_optional_integer(c, &present, &settings->eos_token_ids[0]) != 0) return -1;
        settings->eos_count = present ? 1 : 0;
        return 0;
    }
    c->at++;
    skip_space(c);
    if (c->at < c->end && *c->at == ']') {
        c->at++;
        return 0;
    }
    for (;;) {
        if (settings->eos_count == MAX_EOS_TOKENS) return fail(c, "too many eos_token_id values");
        skip_space(c);
        if (read_number(c, &settings->eos_token_ids[settings->eos_count++]) != 0) return -1;
        skip_space(c);
        if (c->at < c->end && *c->at == ',') {
            c->at++;
            continue;
        }
        return expect(c, ']');
    }
}

static int key_is(const char *key, size_t length, const char *name) {
    return strlen(name) == length && memcmp(key, name, length) == 0;
}

static int read_top_level_value(cursor *c, const char *key, size_t length, generation_settings *s) {
    if (key_is(key, length, "decoder_start_token_id"))
        return read_optional_integer(c, &s->has_decoder_start, &s->decoder_start_token_id);
    if (key_is(key, length, "forced_bos_token_id"))
        return read_optional_integer(c, &s->has_forced_bos, &s->forced_bos_token_id);
    if (key_is(key, length, "max_length")) {
        int present;
        if (read_optional_integer(c, &present, &s->max_length) != 0) return -1;
        if (!present) s->max_length = 0;
        return 0;
    }
    if (key_is(key, length, "eos_token_id")) return read_eos(c, s);
    return skip_value(c, 1);
}

static int read_settings_file(cursor *c, generation_settings *settings) {
    if (expect(c, '{') != 0) return -1;
    skip_space(c);
    if (c->at < c->end && *c->at == '}') {
        c->at++;
    } else {
        for (;;) {
            const char *key;
            size_t key_length;
            if (read_string(c, &key, &key_length) != 0 || expect(c, ':') != 0) return -1;
            if (read_top_level_value(c, key, key_length, settings) != 0) return -1;
            skip_space(c);
            if (c->at < c->end && *c->at == ',') {
                c->at++;
                continue;
            }
            if (expect(c, '}') != 0) return -1;
            break;
        }
    }
    skip_space(c);
    return c->at == c->end ? 0 : fail(c, "trailing characters after the object");
}

/* The file's contents in *text (to free), or NULL with errno set. */
static char *read_file(const char *path, size_t *size) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) return NULL;
    char *text = NULL;
    size_t used = 0, capacity = 0;
    for (;;) {
        if (used == capacity) {
            capacity = capacity ? capacity * 2 : 65536;
            char *grown = realloc(text, capacity);
            if (grown == NULL) break;
            text = grown;
        }
        size_t got = fread(text + used, 1, capacity - used, file);
        used += got;
        if (got == 0) break;
    }
    int failed = ferror(file) || text == NULL;
    fclose(file);
    if (failed) {
        free(text);
        errno = errno ? errno : EIO;
        return NULL;
    }
    *size = used;
    return text;
}

int read_generation_settings(const char *model_dir, generation_settings *settings, char *error, size_t error_size) {
    memset(settings, 0, sizeof *settings);
    const char *names[] = {"config.json", "generation_config.json"};
    for (int i = 0; i < 2; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", model_dir, names[i]);
        size_t size = 0;
        errno = 0;
        char *text = read_file(path, &size);
        if (text == NULL && errno == ENOENT && i == 1) continue;
        if (text == NULL) {
            snprintf(error, error_size, "%s: %s", path, strerror(errno));
            return -1;
        }
        cursor c = {text, text, text + size, path, error, error_size};
        int result = read_settings_file(&c, settings);
        free(text);
        if (result != 0) return -1;
    }
    if (!settings->has_decoder_start) {
        snprintf(error, error_size, "no decoder_start_token_id in %s/config.json or generation_config.json",
                 model_dir);
        return -1;
    }
    return 0;
}
