/*
 * openai_body.c - checks of an OpenAI request body and the default model's
 * insertion (openai_body.h). jansson parses; nothing here rebuilds the
 * body, which goes upstream as the client wrote it.
 */
#include "openai_body.h"
#include "http_util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int refuse(srv_openai_body *out, int status, const char *msg)
{
    snprintf(out->msg, sizeof out->msg, "%s", msg);
    return status;
}

static int check_messages(json_t *root, srv_openai_body *out)
{
    json_t *list = json_object_get(root, "messages");
    if (!json_is_array(list) || json_array_size(list) == 0)
        return refuse(out, 400, "messages is required and must be a non-empty array");
    size_t i;
    json_t *one;
    json_array_foreach(list, i, one)
    {
        if (!json_is_object(one) || !json_is_string(json_object_get(one, "role"))) {
            snprintf(out->msg, sizeof out->msg,
                     "messages[%zu] must be an object with a string role", i);
            return 400;
        }
    }
    return 0;
}

static int check_input(json_t *root, srv_openai_body *out)
{
    json_t *in = json_object_get(root, "input");
    int empty = json_is_string(in) ? json_string_length(in) == 0
                                   : !json_is_array(in) || json_array_size(in) == 0;
    if (empty)
        return refuse(out, 400,
                      "input is required: a non-empty string or a non-empty array");
    if (out->stream)
        return refuse(out, 400, "embeddings cannot be streamed");
    return 0;
}

static int check_object(json_t *root, srv_openai_body *out)
{
    if (!json_is_object(root))
        return refuse(out, 400, "request body must be a JSON object");
    json_t *m = json_object_get(root, "model");
    if (m) {
        /* no model id holds a NUL, and an empty one names nothing */
        if (!json_is_string(m) || json_string_length(m) == 0 ||
            strlen(json_string_value(m)) != json_string_length(m))
            return refuse(out, 400, "model must be a non-empty string");
        out->has_model = 1;
        snprintf(out->model, sizeof out->model, "%s", json_string_value(m));
    }
    json_t *opts = json_object_get(root, "stream_options");
    if (opts && !json_is_null(opts)) {
        if (!json_is_object(opts))
            return refuse(out, 400, "stream_options must be an object");
        out->has_stream_options = 1;
        out->include_usage = json_is_true(json_object_get(opts, "include_usage"));
    }
    json_t *s = json_object_get(root, "stream");
    if (s && !json_is_null(s)) { /* null: the SDKs' way to leave it unset */
        if (!json_is_boolean(s))
            return refuse(out, 400, "stream must be a boolean");
        out->stream = json_is_true(s);
    }
    return 0;
}

int srv_openai_body_check(srv_openai_kind kind, const char *content_type,
                          const char *bytes, size_t len, srv_openai_body *out)
{
    memset(out, 0, sizeof *out);
    if (!srv_http_is_json_type(content_type))
        return refuse(out, 415, "Content-Type must be application/json");
    json_error_t jerr;
    json_t *root = json_loadb(bytes ? bytes : "", len, JSON_ALLOW_NUL, &jerr);
    if (!root) {
        snprintf(out->msg, sizeof out->msg,
                 "request body is not valid JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        return 400;
    }
    int status = check_object(root, out);
    if (status == 0)
        status =
            kind == SRV_OPENAI_CHAT ? check_messages(root, out) : check_input(root, out);
    json_decref(root);
    return status;
}

char *srv_body_put_first(const char *bytes, size_t len, const char *member,
                         size_t *out_len)
{
    const char *brace = memchr(bytes, '{', len);
    if (!brace)
        return NULL;
    size_t rest = len - (size_t)(brace + 1 - bytes);
    size_t cap = strlen(member) + rest + 4;
    char *out = malloc(cap);
    if (out) {
        int head = snprintf(out, cap, "{%s,", member);
        memcpy(out + head, brace + 1, rest);
        *out_len = (size_t)head + rest;
    }
    return out;
}

char *srv_openai_body_with_model(const char *bytes, size_t len, const char *model,
                                 size_t *out_len)
{
    json_t *name = json_string(model);
    char *quoted = name ? json_dumps(name, JSON_ENCODE_ANY) : NULL;
    json_decref(name);
    char *member = quoted ? malloc(strlen(quoted) + 16) : NULL;
    char *out = NULL;
    if (member) {
        sprintf(member, "\"model\":%s", quoted);
        out = srv_body_put_first(bytes, len, member, out_len);
    }
    free(member);
    free(quoted);
    return out;
}

char *srv_openai_body_ask_usage(const char *bytes, size_t len, const srv_openai_body *b,
                                size_t *out_len)
{
    if (!b->has_stream_options)
        return srv_body_put_first(bytes, len,
                                  "\"stream_options\":{\"include_usage\":true}", out_len);
    /* Rare: the client's own stream_options without include_usage. Its other
     * options are kept; the body's bytes are jansson's from here on. */
    json_t *root = json_loadb(bytes, len, JSON_ALLOW_NUL, NULL);
    json_t *opts = json_object_get(root, "stream_options");
    char *out = NULL;
    if (json_is_object(opts) &&
        json_object_set_new(opts, "include_usage", json_true()) == 0) {
        out = json_dumps(root, JSON_COMPACT);
        if (out)
            *out_len = strlen(out);
    }
    json_decref(root);
    return out;
}
