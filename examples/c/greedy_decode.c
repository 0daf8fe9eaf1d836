/* Greedy decoding of a graphfix-repaired Optimum export with the onnxruntime C API: the plain present->past loop.
 *
 *   greedy-decode LIBONNXRUNTIME [--max-new-tokens N] [--ignore-eos] MODEL_DIR [TOKEN_ID ...]
 *
 * Normally started by ./run, which compiles this file and finds the onnxruntime library. The library is opened
 * with dlopen (no link-time dependency), and the program asks it for the C API level of its own release (16 for
 * 1.16.x), capped by the header's ORT_API_VERSION: a newer header than the runtime is fine as long as only
 * functions both know are called, and everything here is in the C API since level 1.
 * Every input and output name comes from the model's own lists; nothing is specific to one architecture. The last
 * line of stdout is the decoder's sequence: the start token, then each generated id. On a model onnxruntime
 * cannot run, onnxruntime's own error goes to stderr and the exit code is 1 (2 for usage or setup errors). */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_config.h"
#include "onnxruntime_c_api.h"

static const int64_t default_source_ids[] = {17, 42, 8, 61, 33, 5}; /* the same in every example client */
static const char past_prefix[] = "past_key_values.";
static const char present_prefix[] = "present.";

static const OrtApi *ort;
static const char *failing_stage = "setup";

static void die(int code, const char *message) {
    fprintf(stderr, "error: %s\n", message);
    exit(code);
}

/* Any onnxruntime error ends the program with onnxruntime's own message on stderr. */
static void check(OrtStatus *status) {
    if (status == NULL) return;
    const char *message = ort->GetErrorMessage(status);
    int length = (int)strlen(message);
    while (length > 0 && (message[length - 1] == '\n' || message[length - 1] == ' ')) length--;
    fprintf(stderr, "error: %s: %.*s\n", failing_stage, length, message);
    ort->ReleaseStatus(status);
    exit(1);
}

static void *allocate(size_t size) {
    void *memory = calloc(1, size ? size : 1);
    if (memory == NULL) die(1, "out of memory");
    return memory;
}

/* [docs:load] */
static const OrtApi *load_onnxruntime(const char *library) {
    void *handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) die(2, dlerror());
    const OrtApiBase *(*get_api_base)(void);
    *(void **)&get_api_base = dlsym(handle, "OrtGetApiBase"); /* the POSIX idiom for a function from dlsym */
    if (get_api_base == NULL) die(2, "the library has no OrtGetApiBase");
    const OrtApiBase *base = get_api_base();
    const char *version = base->GetVersionString();
    unsigned major = 0, minor = 0;
    if (sscanf(version, "%u.%u", &major, &minor) != 2 || major != 1) die(2, "unrecognised onnxruntime version");
    /* In the 1.x releases the C API level is the minor version. */
    uint32_t level = minor < ORT_API_VERSION ? minor : ORT_API_VERSION;
    const OrtApi *api = base->GetApi(level);
    if (api == NULL) die(2, "onnxruntime refused the C API level it should serve");
    fprintf(stderr, "onnxruntime %s from %s, C API level %u\n", version, library, level);
    return api;
}
/* [/docs:load] */

typedef struct {
    OrtSession *session;
    size_t input_count, output_count;
    char **input_names, **output_names;
} model;

static char **names_of(OrtSession *session, size_t count, bool outputs, OrtAllocator *allocator) {
    char **names = allocate(count * sizeof *names);
    for (size_t i = 0; i < count; i++) {
        char *name;
        check(outputs ? ort->SessionGetOutputName(session, i, allocator, &name)
                      : ort->SessionGetInputName(session, i, allocator, &name));
        names[i] = strdup(name);
        check(ort->AllocatorFree(allocator, name));
    }
    return names;
}

static model open_model(OrtEnv *env, const char *path, OrtAllocator *allocator) {
    model m = {0};
    OrtSessionOptions *options;
    check(ort->CreateSessionOptions(&options));
    check(ort->CreateSession(env, path, options, &m.session));
    ort->ReleaseSessionOptions(options);
    check(ort->SessionGetInputCount(m.session, &m.input_count));
    check(ort->SessionGetOutputCount(m.session, &m.output_count));
    m.input_names = names_of(m.session, m.input_count, false, allocator);
    m.output_names = names_of(m.session, m.output_count, true, allocator);
    return m;
}

static void close_model(model *m) {
    for (size_t i = 0; i < m->input_count; i++) free(m->input_names[i]);
    for (size_t i = 0; i < m->output_count; i++) free(m->output_names[i]);
    free(m->input_names);
    free(m->output_names);
    ort->ReleaseSession(m->session);
}

static long index_of(char **names, size_t count, const char *name) {
    for (size_t i = 0; i < count; i++)
        if (strcmp(names[i], name) == 0) return (long)i;
    return -1;
}

static bool starts_with(const char *text, const char *prefix) { return strncmp(text, prefix, strlen(prefix)) == 0; }

/* A tensor over caller-owned memory (which must outlive it). */
static OrtValue *tensor_over(OrtMemoryInfo *memory, void *data, size_t bytes, const int64_t *shape, size_t rank,
                             ONNXTensorElementDataType type) {
    OrtValue *value;
    check(ort->CreateTensorWithDataAsOrtValue(memory, data, bytes, shape, rank, type, &value));
    return value;
}

/* Runs the encoder on input_ids and attention_mask (those it declares); returns last_hidden_state. */
static OrtValue *run_encoder(OrtEnv *env, const char *path, OrtAllocator *allocator, OrtMemoryInfo *memory,
                             int64_t *source_ids, int64_t *mask, size_t length) {
    failing_stage = "encoder";
    model encoder = open_model(env, path, allocator);
    const char *output = "last_hidden_state";
    if (index_of(encoder.output_names, encoder.output_count, output) < 0) die(1, "the encoder has no last_hidden_state");
    int64_t shape[2] = {1, (int64_t)length};
    OrtValue **feeds = allocate(encoder.input_count * sizeof *feeds);
    for (size_t i = 0; i < encoder.input_count; i++) {
        int64_t *data = strcmp(encoder.input_names[i], "input_ids") == 0        ? source_ids
                        : strcmp(encoder.input_names[i], "attention_mask") == 0 ? mask
                                                                                : NULL;
        if (data == NULL) {
            fprintf(stderr, "error: encoder input %s is neither input_ids nor attention_mask\n", encoder.input_names[i]);
            exit(1);
        }
        feeds[i] = tensor_over(memory, data, length * sizeof *data, shape, 2, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
    }
    OrtValue *hidden = NULL;
    check(ort->Run(encoder.session, NULL, (const char *const *)encoder.input_names, (const OrtValue *const *)feeds,
                   encoder.input_count, &output, 1, &hidden));
    for (size_t i = 0; i < encoder.input_count; i++) ort->ReleaseValue(feeds[i]);
    free(feeds);
    close_model(&encoder);
    return hidden;
}

/* [docs:empty-past] */
/* Step 1's past for decoder input i: shape (1, heads, 0, head_dim), heads and head_dim as the decoder declares. */
static OrtValue *empty_past(model *decoder, size_t i, OrtAllocator *allocator) {
    OrtTypeInfo *type_info;
    const OrtTensorTypeAndShapeInfo *tensor_info;
    check(ort->SessionGetInputTypeInfo(decoder->session, i, &type_info));
    check(ort->CastTypeInfoToTensorInfo(type_info, &tensor_info));
    size_t rank;
    ONNXTensorElementDataType type;
    check(ort->GetDimensionsCount(tensor_info, &rank));
    check(ort->GetTensorElementType(tensor_info, &type));
    int64_t dims[4];
    if (rank == 4) check(ort->GetDimensions(tensor_info, dims, 4));
    ort->ReleaseTypeInfo(type_info);
    if (rank != 4 || dims[1] <= 0 || dims[3] <= 0) {
        fprintf(stderr, "error: decoder input %s: heads and head_dim must be fixed numbers\n", decoder->input_names[i]);
        exit(1);
    }
    int64_t shape[4] = {1, dims[1], 0, dims[3]};
    OrtValue *value;
    check(ort->CreateTensorAsOrtValue(allocator, shape, 4, type, &value));
    return value;
}
/* [/docs:empty-past] */

static int64_t argmax_last_position(OrtValue *logits) {
    OrtTensorTypeAndShapeInfo *info;
    check(ort->GetTensorTypeAndShape(logits, &info));
    size_t rank, count;
    ONNXTensorElementDataType type;
    check(ort->GetDimensionsCount(info, &rank));
    check(ort->GetTensorShapeElementCount(info, &count));
    check(ort->GetTensorElementType(info, &type));
    int64_t dims[8];
    if (rank < 1 || rank > 8) die(1, "logits has an unexpected rank");
    check(ort->GetDimensions(info, dims, rank));
    ort->ReleaseTensorTypeAndShapeInfo(info);
    if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) die(1, "logits is not float32");
    float *scores;
    check(ort->GetTensorMutableData(logits, (void **)&scores));
    size_t vocab = (size_t)dims[rank - 1];
    const float *last = scores + count - vocab; /* logits[0, -1, :] */
    size_t best = 0;
    for (size_t i = 1; i < vocab; i++)
        if (last[i] > last[best]) best = i; /* ties go to the lowest index, as numpy's argmax */
    return (int64_t)best;
}

static bool is_eos(const generation_settings *settings, int64_t token) {
    for (size_t i = 0; i < settings->eos_count; i++)
        if (settings->eos_token_ids[i] == token) return true;
    return false;
}

int main(int argc, char **argv) {
    const char *usage = "usage: greedy-decode LIBONNXRUNTIME [--max-new-tokens N] [--ignore-eos] MODEL_DIR [TOKEN_ID ...]";
    if (argc < 3) die(2, usage);
    const char *library = argv[1];
    int next = 2;
    long max_new_tokens = 32;
    bool stop_at_eos = true; /* --ignore-eos generates every step, e.g. to reach step 3 on a model that picks EOS */
    while (next < argc && strncmp(argv[next], "--", 2) == 0) {
        if (strcmp(argv[next], "--ignore-eos") == 0) {
            stop_at_eos = false;
            next++;
            continue;
        }
        char *end;
        if (strcmp(argv[next], "--max-new-tokens") != 0) die(2, usage);
        if (next + 1 >= argc || (max_new_tokens = strtol(argv[next + 1], &end, 10)) < 1 || *end)
            die(2, "--max-new-tokens needs a positive integer");
        next += 2;
    }
    if (next >= argc) die(2, usage);
    const char *model_dir = argv[next++];
    size_t length = argc > next ? (size_t)(argc - next) : sizeof default_source_ids / sizeof *default_source_ids;
    int64_t *source_ids = allocate(length * sizeof *source_ids), *mask = allocate(length * sizeof *mask);
    for (size_t i = 0; i < length; i++) {
        char *end;
        source_ids[i] = argc > next ? strtoll(argv[next + (int)i], &end, 10) : default_source_ids[i];
        if (argc > next && *end) die(2, "token ids must be integers");
        mask[i] = 1;
    }
    generation_settings settings;
    char error[1024];
    if (read_generation_settings(model_dir, &settings, error, sizeof error) != 0) die(2, error);

    ort = load_onnxruntime(library);
    OrtEnv *env;
    OrtAllocator *allocator;
    OrtMemoryInfo *memory;
    check(ort->CreateEnv(ORT_LOGGING_LEVEL_ERROR, "greedy-decode", &env));
    check(ort->GetAllocatorWithDefaultOptions(&allocator));
    check(ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &memory));
    char path[4096];
    snprintf(path, sizeof path, "%s/encoder_model.onnx", model_dir);
    OrtValue *hidden = run_encoder(env, path, allocator, memory, source_ids, mask, length);

    failing_stage = "decoder";
    snprintf(path, sizeof path, "%s/decoder_model_merged.onnx", model_dir);
    model decoder = open_model(env, path, allocator);
    long logits_index = index_of(decoder.output_names, decoder.output_count, "logits");
    if (logits_index < 0) die(1, "the decoder has no output named logits");
    /* past[i] feeds decoder input i when it is a past_key_values.X; present_of[i] is the output present.X. */
    OrtValue **feeds = allocate(decoder.input_count * sizeof *feeds);
    OrtValue **past = allocate(decoder.input_count * sizeof *past);
    long *present_of = allocate(decoder.input_count * sizeof *present_of);
    for (size_t i = 0; i < decoder.input_count; i++) {
        present_of[i] = -1;
        if (!starts_with(decoder.input_names[i], past_prefix)) continue;
        char present_name[512];
        snprintf(present_name, sizeof present_name, "%s%s", present_prefix,
                 decoder.input_names[i] + strlen(past_prefix));
        present_of[i] = index_of(decoder.output_names, decoder.output_count, present_name);
        if (present_of[i] < 0) die(1, "a past_key_values input has no present output of the same suffix");
        past[i] = empty_past(&decoder, i, allocator);
    }
    OrtValue **results = allocate(decoder.output_count * sizeof *results);
    int64_t token = settings.decoder_start_token_id, token_shape[2] = {1, 1}, flag_shape[1] = {1};
    bool use_cache_branch = false;

    int64_t *sequence = allocate(((size_t)max_new_tokens + 1) * sizeof *sequence);
    size_t sequence_length = 0;
    sequence[sequence_length++] = token;
    for (long step = 1; step <= max_new_tokens; step++) {
        if (settings.max_length > 0 && (int64_t)sequence_length >= settings.max_length) break;
        char stage[64];
        snprintf(stage, sizeof stage, "decoder step %ld", step);
        failing_stage = stage;
        use_cache_branch = step > 1;
        OrtValue *token_value = tensor_over(memory, &token, sizeof token, token_shape, 2,
                                            ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
        /* [docs:feeds] */
        OrtValue *flag_value = tensor_over(memory, &use_cache_branch, sizeof use_cache_branch, flag_shape, 1,
                                           ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL);
        OrtValue *mask_value = tensor_over(memory, mask, length * sizeof *mask, (int64_t[]){1, (int64_t)length}, 2,
                                           ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
        for (size_t i = 0; i < decoder.input_count; i++) {
            const char *name = decoder.input_names[i];
            feeds[i] = strcmp(name, "input_ids") == 0                ? token_value
                       : strcmp(name, "use_cache_branch") == 0       ? flag_value
                       : strcmp(name, "encoder_hidden_states") == 0  ? hidden
                       : strcmp(name, "encoder_attention_mask") == 0 ? mask_value
                       : present_of[i] >= 0                          ? past[i]
                                                                     : NULL;
            if (feeds[i] == NULL) {
                fprintf(stderr, "error: no value for decoder input %s\n", name);
                return 1;
            }
        }
        memset(results, 0, decoder.output_count * sizeof *results);
        check(ort->Run(decoder.session, NULL, (const char *const *)decoder.input_names,
                       (const OrtValue *const *)feeds, decoder.input_count,
                       (const char *const *)decoder.output_names, decoder.output_count, results));
        /* [/docs:feeds] */
        ort->ReleaseValue(token_value);
        ort->ReleaseValue(flag_value);
        ort->ReleaseValue(mask_value);
        /* The whole cache for the next step: every present.X becomes past_key_values.X (encoder KV included). */
        for (size_t i = 0; i < decoder.input_count; i++) {
            if (present_of[i] < 0) continue;
            ort->ReleaseValue(past[i]);
            past[i] = results[present_of[i]];
            results[present_of[i]] = NULL;
        }
        token = argmax_last_position(results[logits_index]);
        for (size_t i = 0; i < decoder.output_count; i++)
            if (results[i] != NULL) ort->ReleaseValue(results[i]);
        if (step == 1 && settings.has_forced_bos) token = settings.forced_bos_token_id;
        sequence[sequence_length++] = token;
        if (stop_at_eos && is_eos(&settings, token)) break;
    }

    for (size_t i = 0; i < sequence_length; i++) printf(i ? " %lld" : "%lld", (long long)sequence[i]);
    printf("\n");
    for (size_t i = 0; i < decoder.input_count; i++)
        if (present_of[i] >= 0) ort->ReleaseValue(past[i]);
    ort->ReleaseValue(hidden);
    close_model(&decoder);
    ort->ReleaseMemoryInfo(memory);
    ort->ReleaseEnv(env);
    free(sequence), free(results), free(present_of), free(past), free(feeds), free(source_ids), free(mask);
    return fflush(stdout) == 0 ? 0 : 1;
}
