/*
 * POST .../embeddings of the mock (bge-m3): OpenAI's embedding list for an
 * input string or array of strings. The vectors are deterministic so tests
 * can compare them, even recompute them:
 *   state = FNV-1a 64 of the input's bytes;
 *   for i < 1024: state += 0x9E3779B97F4A7C15, z = splitmix64 mix of state,
 *                 raw[i] = (int32_t)(z >> 32) / 2^31;
 *   v[i] = (float)(raw[i] / sqrt(sum of raw[i]^2, in order, in double)).
 * "encoding_format":"base64" gives the float32 values little-endian, base64
 * encoded (what the openai SDKs ask for by default); the JSON floats carry 9
 * significant digits, enough to give back the same float32.
 * Usage: prompt_tokens = total_tokens = sum over inputs of ceil(bytes / 4).
 */
#include "mock.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define EMBEDDING_DIM 1024
#define MAX_INPUTS 2048 /* OpenAI's limit per request */

static uint64_t fnv1a64(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void embed(const char *s, size_t n, float out[EMBEDDING_DIM])
{
    double raw[EMBEDDING_DIM], sum = 0;
    uint64_t state = fnv1a64(s, n);
    for (int i = 0; i < EMBEDDING_DIM; i++) {
        raw[i] = (double)(int32_t)(uint32_t)(splitmix64(&state) >> 32) / 2147483648.0;
        sum += raw[i] * raw[i];
    }
    double norm = sqrt(sum);
    for (int i = 0; i < EMBEDDING_DIM; i++)
        out[i] = (float)(raw[i] / norm);
}

/* Appends the vector as a JSON array of floats, or a base64 string. */
static void add_vector(struct evbuffer *b, const float v[EMBEDDING_DIM], int base64)
{
    if (base64) {
        unsigned char bytes[EMBEDDING_DIM * 4];
        unsigned char text[(EMBEDDING_DIM * 4 + 2) / 3 * 4 + 1];
        for (int i = 0; i < EMBEDDING_DIM; i++) {
            uint32_t u;
            memcpy(&u, &v[i], 4);
            for (int k = 0; k < 4; k++)
                bytes[i * 4 + k] = (unsigned char)(u >> (8 * k)); /* little-endian */
        }
        int len = EVP_EncodeBlock(text, bytes, (int)sizeof(bytes));
        evbuffer_add(b, "\"", 1);
        evbuffer_add(b, text, (size_t)len);
        evbuffer_add(b, "\"", 1);
        return;
    }
    evbuffer_add(b, "[", 1);
    for (int i = 0; i < EMBEDDING_DIM; i++)
        evbuffer_add_printf(b, i ? ",%.9g" : "%.9g", (double)v[i]);
    evbuffer_add(b, "]", 1);
}

/* The inputs as an array of strings (new reference), or NULL if invalid. */
static json_t *inputs_of(json_t *input, char *msg, size_t msglen)
{
    size_t i;
    json_t *s;
    if (json_is_string(input)) {
        if (json_string_length(input) > 0)
            return json_pack("[O]", input);
        snprintf(msg, msglen, "'input' must not be an empty string");
        return NULL;
    }
    if (!json_is_array(input) || json_array_size(input) == 0 ||
        json_array_size(input) > MAX_INPUTS) {
        snprintf(msg, msglen,
                 "'input' must be a non-empty string or an array of 1 to %d non-empty "
                 "strings",
                 MAX_INPUTS);
        return NULL;
    }
    json_array_foreach(input, i, s)
    {
        if (!json_is_string(s) || json_string_length(s) == 0) {
            snprintf(msg, msglen, "input[%zu] must be a non-empty string", i);
            return NULL;
        }
    }
    return json_incref(input);
}

/* Validates; plans a 4xx and returns NULL, or returns the inputs. */
static json_t *validate(struct mock_req *m, json_t *o, const char *model,
                        int model_is_str, int *base64)
{
    char msg[256];
    json_t *fmt = json_object_get(o, "encoding_format"), *inputs;
    const char *f = json_string_value(fmt);
    int caps = mock_model_caps(model);
    if (!model_is_str || !model[0]) {
        mock_plan_error(m, 400, "invalid_request_error", "missing_model", "model",
                        "'model' must be a non-empty string");
        return NULL;
    }
    if (!(inputs = inputs_of(json_object_get(o, "input"), msg, sizeof(msg)))) {
        mock_plan_error(m, 400, "invalid_request_error", "invalid_input", "input", msg);
        return NULL;
    }
    if (fmt && !json_is_null(fmt) &&
        (!f || (strcmp(f, "float") && strcmp(f, "base64")))) {
        json_decref(inputs);
        mock_plan_error(m, 400, "invalid_request_error", "invalid_type",
                        "encoding_format",
                        "'encoding_format' must be 'float' or 'base64'");
        return NULL;
    }
    *base64 = f && !strcmp(f, "base64");
    if (!caps || !(caps & MOCK_CAP_EMBED)) {
        json_decref(inputs);
        snprintf(msg, sizeof(msg),
                 caps ? "The model '%.100s' is not an embedding model (bge-m3 is)"
                      : "The model '%.100s' does not exist",
                 model);
        mock_plan_error(m, caps ? 400 : 404, "invalid_request_error",
                        caps ? "model_not_supported" : "model_not_found", "model", msg);
        return NULL;
    }
    return inputs;
}

static void plan_success(struct mock_req *m, json_t *inputs, const char *model,
                         int base64)
{
    struct evbuffer *b = evbuffer_new();
    json_t *mj = json_string(model), *s;
    char *model_json = mj ? json_dumps(mj, JSON_ENCODE_ANY) : NULL;
    float v[EMBEDDING_DIM];
    size_t i;
    int tokens = 0;
    json_decref(mj);
    if (!b || !model_json) {
        if (b)
            evbuffer_free(b);
        free(model_json);
        mock_plan_ok(m, NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"object\":\"list\",\"data\":[");
    json_array_foreach(inputs, i, s)
    {
        size_t n = json_string_length(s);
        embed(json_string_value(s), n, v);
        tokens += (int)((n + 3) / 4);
        evbuffer_add_printf(b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":",
                            i ? "," : "", i);
        add_vector(b, v, base64);
        evbuffer_add(b, "}", 1);
    }
    evbuffer_add_printf(
        b, "],\"model\":%s,\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}",
        model_json, tokens, tokens);
    free(model_json);
    mock_plan_ok(m, b);
}

void mock_embeddings_handle(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    char model[256];
    int model_is_str, base64 = 0;
    struct mock_req *m;
    json_t *inputs;

    mock.stats.embedding_requests++;
    mock_record_last(req, body, len);
    if (!(m = mock_req_new(req)))
        return;
    json_t *o = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
    if (mock_req_front(m, o, model, sizeof(model), &model_is_str) == 0 &&
        (inputs = validate(m, o, model, model_is_str, &base64))) {
        plan_success(m, inputs, model, base64);
        json_decref(inputs);
    }
    json_decref(o);
    mock_req_start(m);
}
