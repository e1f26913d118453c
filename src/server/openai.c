/*
 * openai.c - OpenAI's API on the gateway: POST /v1/chat/completions and
 * POST /v1/embeddings. The client's body goes upstream as it came, byte for
 * byte, except for the model when it names none (the server's default is
 * put first in the object; every other member, e.g. tools,
 * response_format, stream_options, passes untouched). The client's headers,
 * its Authorization above all, never go upstream: the call carries the
 * server's key only. The few checks made here are what the gateway needs
 * to relay (the stream flag, a model) and what OpenAI answers with 400
 * without a call; the rest is the upstream's to judge, and its 400/404/422
 * reach the client as they are (dialect.c).
 */
#include "dialect.h"
#include "front.h"
#include "http_util.h"
#include "relay.h"
#include "routes.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zjuchat.h>

#define DEFAULT_EMBEDDING_MODEL "bge-m3"

/* A body that passed the checks. */
typedef struct openai_body {
    json_t *root;
    const char *model; /* NULL: none named */
    int stream;
} openai_body;

/* Parse and check what every /v1 POST needs: a JSON object, model a
 * non-empty string when present, stream a boolean when present (null is
 * false, as the SDKs' optional fields). Returns 0, or a status with *msg. */
static int parse_common(srv_ctx *ctx, openai_body *b, const char **msg)
{
    static char why[320]; /* one worker is one thread: lives until the reply */
    size_t len;
    const char *bytes = srv_req_body(ctx->req, &len);
    memset(b, 0, sizeof *b);
    if (!srv_http_is_json_type(srv_req_header(ctx->req, "Content-Type"))) {
        *msg = "Content-Type must be application/json";
        return 415;
    }
    json_error_t jerr;
    b->root = json_loadb(bytes ? bytes : "", len, JSON_ALLOW_NUL, &jerr);
    if (!b->root) {
        snprintf(why, sizeof why,
                 "request body is not valid JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        *msg = why;
        return 400;
    }
    if (!json_is_object(b->root)) {
        *msg = "request body must be a JSON object";
        return 400;
    }
    json_t *m = json_object_get(b->root, "model");
    if (m) {
        if (!json_is_string(m) || json_string_length(m) == 0 ||
            strlen(json_string_value(m)) != json_string_length(m)) {
            *msg = "model must be a non-empty string";
            return 400;
        }
        b->model = json_string_value(m);
    }
    json_t *s = json_object_get(b->root, "stream");
    if (s && !json_is_null(s)) {
        if (!json_is_boolean(s)) {
            *msg = "stream must be a boolean";
            return 400;
        }
        b->stream = json_is_true(s);
    }
    return 0;
}

static int check_messages(json_t *root, const char **msg)
{
    static char why[160];
    json_t *list = json_object_get(root, "messages");
    if (!json_is_array(list) || json_array_size(list) == 0) {
        *msg = "messages is required and must be a non-empty array";
        return 400;
    }
    size_t i;
    json_t *one;
    json_array_foreach(list, i, one)
    {
        if (!json_is_object(one) || !json_is_string(json_object_get(one, "role"))) {
            snprintf(why, sizeof why,
                     "messages[%zu] must be an object with a string role", i);
            *msg = why;
            return 400;
        }
    }
    return 0;
}

static int check_input(json_t *root, const char **msg)
{
    json_t *in = json_object_get(root, "input");
    if (json_is_string(in) ? json_string_length(in) == 0
                           : !json_is_array(in) || json_array_size(in) == 0) {
        *msg = "input is required: a non-empty string or a non-empty array";
        return 400;
    }
    return 0;
}

/*
 * The body to send: the client's bytes, or, when it names no model, the
 * same bytes with "model": default put first. Textual, so that the rest
 * stays byte for byte what the client sent. *owned is the new buffer to
 * free (NULL when the client's bytes are used).
 */
static const char *with_model(srv_ctx *ctx, const char *model, size_t *len, char **owned)
{
    const char *bytes = srv_req_body(ctx->req, len);
    *owned = NULL;
    json_t *name = json_string(model);
    char *quoted = name ? json_dumps(name, JSON_ENCODE_ANY) : NULL;
    json_decref(name);
    if (!quoted)
        return NULL;
    size_t brace = 0;
    while (bytes[brace] != '{') /* a checked object: the first non-space byte */
        brace++;
    size_t qlen = strlen(quoted), n = *len + qlen + 16;
    char *out = malloc(n);
    if (out) {
        int head = snprintf(out, n, "{\"model\":%s,", quoted);
        memcpy(out + head, bytes + brace + 1, *len - brace - 1);
        *len = (size_t)head + *len - brace - 1;
        *owned = out;
    }
    free(quoted);
    return out;
}

static int relay_openai(srv_ctx *ctx, const char *path, openai_body *b,
                        const char *default_model)
{
    const char *model = b->model ? b->model : default_model;
    snprintf(ctx->acc.model, sizeof ctx->acc.model, "%s", model);
    ctx->acc.stream = b->stream;
    size_t len;
    char *owned = NULL;
    const char *body = b->model ? srv_req_body(ctx->req, &len)
                                : with_model(ctx, default_model, &len, &owned);
    int stream = b->stream;
    json_decref(b->root);
    if (!body) {
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
        return SRV_ANSWERED;
    }
    int rc = srv_relay_start(ctx, path, body, len, stream);
    free(owned);
    return rc;
}

int srv_handle_chat_completions(srv_ctx *ctx)
{
    const srv_config *cfg = ctx->w->cfg;
    openai_body b;
    const char *msg = NULL;
    int status = parse_common(ctx, &b, &msg);
    if (status == 0)
        status = check_messages(b.root, &msg);
    if (status != 0) {
        srv_ctx_error(ctx, status, msg, NULL, -1);
        json_decref(b.root);
        return SRV_ANSWERED;
    }
    return relay_openai(ctx, "chat/completions", &b,
                        cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL);
}

int srv_handle_embeddings(srv_ctx *ctx)
{
    const srv_config *cfg = ctx->w->cfg;
    openai_body b;
    const char *msg = NULL;
    int status = parse_common(ctx, &b, &msg);
    if (status == 0 && b.stream) {
        msg = "embeddings cannot be streamed";
        status = 400;
    }
    if (status == 0)
        status = check_input(b.root, &msg);
    if (status != 0) {
        srv_ctx_error(ctx, status, msg, NULL, -1);
        json_decref(b.root);
        return SRV_ANSWERED;
    }
    return relay_openai(ctx, "embeddings", &b,
                        cfg->default_embedding_model ? cfg->default_embedding_model
                                                     : DEFAULT_EMBEDDING_MODEL);
}
