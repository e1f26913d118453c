/*
 * openai_body.c - checks of an OpenAI request body and the default model's
 * insertion (openai_body.h). One YAJL pass without a tree accepts the
 * bodies it can vouch for (json_fast.h); every other body is judged, and
 * every refusal worded, by jansson's tree. Nothing here rebuilds the body,
 * which goes upstream as the client wrote it.
 */
#include "openai_body.h"
#include "http_util.h"
#include "json_fast.h"

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

/* ---- the pass without a tree ----
 * It follows the members check_object, check_messages and check_input read,
 * the last of each name counting (as in jansson's tree), and accepts only
 * when all of them pass; any doubt declines, and the tree decides. */

enum top { T_OTHER, T_MODEL, T_STREAM, T_OPTIONS, T_MESSAGES, T_INPUT };
enum kind { V_NONE, V_NULL, V_FALSE, V_TRUE, V_STRING, V_OTHER, V_MAP, V_ARRAY };

typedef struct pass {
    srv_json_fast f; /* first: json_fast.h */
    srv_openai_kind kind;
    srv_openai_body *out;
    enum top key;  /* the top-level member being read */
    int sub_usage; /* in stream_options: the key is include_usage */
    int sub_role;  /* in a message: the key is role */
    enum kind model, stream, options, list; /* the last value of each */
    size_t model_len;
    int has_nul;      /* the model holds a NUL */
    int usage;        /* stream_options.include_usage is true (the last one) */
    size_t items;     /* messages' or input's elements */
    int bad_item;     /* a message that is no object with a string role */
    enum kind role;   /* the current message's last role */
    int input_string; /* input is a non-empty string */
} pass;

/* The members followed; the list is the kind's own (messages or input). */
static enum top top_of(srv_openai_kind kind, const unsigned char *k, size_t n)
{
#define IS(lit) (n == sizeof lit - 1 && memcmp(k, lit, n) == 0)
    if (IS("model"))
        return T_MODEL;
    if (IS("stream"))
        return T_STREAM;
    if (IS("stream_options"))
        return T_OPTIONS;
    if (kind == SRV_OPENAI_CHAT && IS("messages"))
        return T_MESSAGES;
    if (kind == SRV_OPENAI_EMBEDDINGS && IS("input"))
        return T_INPUT;
    return T_OTHER;
#undef IS
}

/* A value at depth (containers open around it, the top object being 1). */
static int value(pass *p, enum kind k, const unsigned char *str, size_t len)
{
    int d = p->f.depth;
    if (d == 1) {
        switch (p->key) {
        case T_MODEL:
            p->model = k;
            if (k == V_STRING) {
                p->model_len = len;
                p->has_nul = memchr(str, 0, len) != NULL;
                size_t keep =
                    len < sizeof p->out->model - 1 ? len : sizeof p->out->model - 1;
                memcpy(p->out->model, str, keep);
                p->out->model[keep] = '\0';
            }
            break;
        case T_STREAM:
            p->stream = k;
            break;
        case T_OPTIONS:
            p->options = k;
            p->usage = 0;
            break;
        case T_MESSAGES:
        case T_INPUT:
            p->list = k;
            p->items = 0;
            p->bad_item = 0;
            p->input_string = k == V_STRING && len > 0;
            break;
        case T_OTHER:
            break;
        }
    } else if (d == 2 && p->key == T_OPTIONS && p->options == V_MAP && p->sub_usage) {
        p->usage = k == V_TRUE;
    } else if (d == 2 && (p->key == T_MESSAGES || p->key == T_INPUT) &&
               p->list == V_ARRAY) {
        p->items++;
        if (k != V_MAP)
            p->bad_item = 1; /* a message must be an object */
        else
            p->role = V_NONE;
    } else if (d == 3 && p->key == T_MESSAGES && p->list == V_ARRAY && p->sub_role) {
        p->role = k;
    }
    return 1;
}

static int on_null(void *ctx)
{
    return value(ctx, V_NULL, NULL, 0);
}

static int on_bool(void *ctx, int b)
{
    return value(ctx, b ? V_TRUE : V_FALSE, NULL, 0);
}

static int on_integer(void *ctx, long long v)
{
    return value(ctx, V_OTHER, NULL, 0);
}

static int on_double(void *ctx, double v)
{
    return value(ctx, V_OTHER, NULL, 0);
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    return value(ctx, V_STRING, s, n);
}

static int on_key(void *ctx, const unsigned char *k, size_t n)
{
    pass *p = ctx;
    if (memchr(k, 0, n))
        return 0; /* jansson refuses a NUL in a key, even with JSON_ALLOW_NUL */
    if (p->f.depth == 1)
        p->key = top_of(p->kind, k, n);
    else if (p->f.depth == 2)
        p->sub_usage = n == 13 && memcmp(k, "include_usage", 13) == 0;
    else if (p->f.depth == 3)
        p->sub_role = n == 4 && memcmp(k, "role", 4) == 0;
    return 1;
}

static int open_container(pass *p, enum kind k)
{
    if (p->f.depth == 0 && k != V_MAP)
        return 0; /* not an object: the tree words the refusal */
    if (p->f.depth > 0)
        value(p, k, NULL, 0);
    if (p->f.depth == 1)
        p->sub_usage = p->sub_role = 0;
    return srv_json_fast_open(&p->f);
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, V_MAP);
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, V_ARRAY);
}

static int on_end(void *ctx)
{
    pass *p = ctx;
    /* a message object closes: it needed a string role */
    if (p->f.depth == 3 && p->key == T_MESSAGES && p->list == V_ARRAY &&
        p->role != V_STRING)
        p->bad_item = 1;
    srv_json_fast_close(&p->f);
    return 1;
}

static const yajl_callbacks pass_callbacks = {
    on_null,      on_bool, on_integer, on_double,      NULL,   on_string,
    on_start_map, on_key,  on_end,     on_start_array, on_end,
};

/* 1: accepted, out filled as check_object would; 0: ask the tree. */
static int accepted_without_tree(srv_openai_kind kind, const char *bytes, size_t len,
                                 srv_openai_body *out)
{
    pass p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    p.out = out;
    if (!srv_json_fast_parse(bytes, len, &pass_callbacks, &p))
        return 0;
    if (p.model != V_NONE && (p.model != V_STRING || p.model_len == 0 || p.has_nul))
        return 0;
    if (p.options != V_NONE && p.options != V_NULL && p.options != V_MAP)
        return 0;
    if (p.stream != V_NONE && p.stream != V_NULL && p.stream != V_TRUE &&
        p.stream != V_FALSE)
        return 0;
    int stream = p.stream == V_TRUE;
    if (kind == SRV_OPENAI_CHAT) {
        if (p.list != V_ARRAY || p.items == 0 || p.bad_item)
            return 0;
    } else if (stream || !(p.input_string || (p.list == V_ARRAY && p.items > 0))) {
        return 0;
    }
    out->has_model = p.model == V_STRING;
    if (!out->has_model)
        out->model[0] = '\0';
    out->stream = stream;
    out->has_stream_options = p.options == V_MAP;
    out->include_usage = out->has_stream_options && p.usage;
    return 1;
}

/* The reference: jansson's tree, every refusal worded. */
int srv_openai_body_check_tree(srv_openai_kind kind, const char *bytes, size_t len,
                               srv_openai_body *out)
{
    memset(out, 0, sizeof *out);
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

int srv_openai_body_check(srv_openai_kind kind, const char *content_type,
                          const char *bytes, size_t len, srv_openai_body *out)
{
    memset(out, 0, sizeof *out);
    if (!srv_http_is_json_type(content_type))
        return refuse(out, 415, "Content-Type must be application/json");
    if (accepted_without_tree(kind, bytes, len, out))
        return 0;
    return srv_openai_body_check_tree(kind, bytes, len, out);
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
