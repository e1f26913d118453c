/*
 * api_chat.c - POST /api/chat, the seed's contract: {"user_content",
 * "system_content"?, "model"?, "stream"?} checked here, turned into the
 * upstream's chat-completions body by the library (zjuchat_request), and
 * relayed in the seed's dialect (relay.c, dialect.c).
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

/* Validation: a string member or absent/null. Returns 0, or -1 when the
 * member exists with another type. */
static int opt_string(json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    *out = json_string_value(v);
    return 0;
}

/* Parse and check the body. Returns 0 and fills the outputs (borrowed from
 * *root, which the caller frees), or an HTTP status with msg set. */
static int validate(const char *content_type, const char *bytes, size_t len,
                    const srv_config *cfg, json_t **root, const char **user,
                    const char **model, const char **system, int *stream,
                    const char **msg)
{
    if (!srv_http_is_json_type(content_type)) {
        *msg = "Content-Type must be application/json";
        return 415;
    }
    if (len > cfg->max_body) {
        *msg = "request body too large";
        return 413;
    }
    json_error_t jerr;
    /* \u0000 is valid JSON: the texts keep it (their lengths go upstream). */
    *root = json_loadb(bytes ? bytes : "", len, JSON_ALLOW_NUL, &jerr);
    if (!*root) {
        /* Say where and why; one worker is one thread, so a static buffer
         * lives until the reply is built. */
        static char why[320];
        snprintf(why, sizeof why,
                 "request body is not valid JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        *msg = why;
        return 400;
    }
    if (!json_is_object(*root)) {
        *msg = "request body must be a JSON object";
        return 400;
    }
    json_t *u = json_object_get(*root, "user_content");
    if (!json_is_string(u) || json_string_length(u) == 0) {
        *msg = "user_content is required and must be a non-empty string";
        return 400;
    }
    *user = json_string_value(u);
    if (opt_string(*root, "model", model) < 0) {
        *msg = "model must be a string";
        return 400;
    }
    if (*model && strlen(*model) != json_string_length(json_object_get(*root, "model"))) {
        *msg = "model must not contain NUL"; /* no model id does */
        return 400;
    }
    if (opt_string(*root, "system_content", system) < 0) {
        *msg = "system_content must be a string";
        return 400;
    }
    json_t *s = json_object_get(*root, "stream");
    *stream = 0;
    /* Unlike model and system_content, a null stream is an error: the
     * contract wants a boolean whenever the member is present. */
    if (s) {
        if (!json_is_boolean(s)) {
            *msg = "stream must be a boolean";
            return 400;
        }
        *stream = json_is_true(s);
    }
    return 0;
}

/* A validated text's length: it may hold \u0000, so not strlen. 0 for an
 * absent or null member. */
static size_t text_length(json_t *root, const char *key)
{
    return json_string_length(json_object_get(root, key));
}

/* The upstream body for a checked request; NULL on OOM. */
static char *upstream_body(json_t *root, const char *model, const char *user,
                           const char *system, int stream)
{
    zjuchat_request *r =
        zjuchat_request_new_simple_n(model, user, text_length(root, "user_content"),
                                     system, text_length(root, "system_content"));
    char *body = r ? zjuchat_request_to_json(r, stream) : NULL;
    zjuchat_request_free(r);
    return body;
}

int srv_handle_api_chat(srv_ctx *ctx)
{
    const srv_config *cfg = ctx->w->cfg;
    json_t *root = NULL;
    const char *user = NULL, *model = NULL, *system = NULL, *msg = NULL;
    int stream = 0;
    size_t blen;
    const char *body = srv_req_body(ctx->req, &blen);
    int status = validate(srv_req_header(ctx->req, "Content-Type"), body, blen, cfg,
                          &root, &user, &model, &system, &stream, &msg);
    if (status != 0) {
        srv_ctx_error(ctx, status, msg, NULL, -1);
        json_decref(root);
        return SRV_ANSWERED;
    }
    if (!model || !*model)
        model = cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL;
    snprintf(ctx->acc.model, sizeof ctx->acc.model, "%s", model);
    ctx->acc.stream = stream;
    char *up = upstream_body(root, model, user, system, stream);
    json_decref(root);
    if (!up) {
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
        return SRV_ANSWERED;
    }
    int rc = srv_relay_start(ctx, "chat/completions", up, strlen(up), stream);
    free(up);
    return rc;
}
