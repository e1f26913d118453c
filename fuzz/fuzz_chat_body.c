/*
 * fuzz_chat_body.c - libFuzzer driver for the /api/chat body
 * (srv_chat_body_parse in src/server/chat_body.c): checks and the upstream
 * body built from them, seed form and multi-turn.
 *
 * Input layout: byte 0 picks the Content-Type header (bits 0-1: JSON, JSON
 * with a charset, text/plain, none; bit 7 set: the header value is the
 * input's first line instead), the body cap (bit 2: 64 bytes, so the 413
 * path is reachable; else 1 MiB as in production) and DEFAULT_MODEL (bit 3:
 * set; else the library's); the rest is the body.
 *
 * Checked: a rejected body gets 400, 413 or 415 with a message that
 * serialises to a JSON error, and no upstream body (500 would mean the
 * module refused what its own checks let through). An accepted one yields
 * an upstream body that is a JSON object of exactly upstream_len bytes with
 * the model, the stream flag, and as messages the system_content, the
 * messages and the user_content of the request unchanged, in that order;
 * the sampling fields with the request's values. The tree-less pass gives
 * what jansson's tree gives (status, message, upstream bytes) on every body.
 */
#include "chat_body.h"
#include "http_util.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zjuchat.h>

static void die(const char *what)
{
    fprintf(stderr, "fuzz_chat_body: invariant broken: %s\n", what);
    abort();
}

/* A member that is absent or null: not given. */
static json_t *given(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* The messages the upstream must get: system, history, user. */
static json_t *expected_messages(json_t *req)
{
    json_t *want = json_array();
    json_t *sys = given(req, "system_content");
    if (json_string_length(sys) > 0)
        json_array_append_new(want,
                              json_pack("{s:s,s:O}", "role", "system", "content", sys));
    json_t *history = given(req, "messages");
    if (history)
        json_array_extend(want, history);
    json_t *user = given(req, "user_content");
    if (user)
        json_array_append_new(want,
                              json_pack("{s:s,s:O}", "role", "user", "content", user));
    return want;
}

/* A sampling field went up with the request's value (an integer
 * temperature as a real), or neither has it. */
static void check_number(json_t *req, json_t *up, const char *key)
{
    json_t *a = given(req, key), *b = json_object_get(up, key);
    if (!a != !b || (a && json_number_value(a) != json_number_value(b)))
        die("a sampling field changed on its way upstream");
}

static void check_accepted(json_t *req, const srv_chat_body *b, const srv_config *cfg)
{
    if (!b->upstream || b->upstream_len != strlen(b->upstream))
        die("accepted without an upstream body of upstream_len bytes");
    if (b->stream != 0 && b->stream != 1)
        die("stream flag not 0/1");
    json_error_t jerr;
    json_t *up = json_loadb(b->upstream, b->upstream_len, JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(up))
        die("upstream body is not a JSON object");
    const char *model = json_string_value(json_object_get(up, "model"));
    if (!model || strncmp(model, b->model, sizeof b->model - 1) != 0)
        die("the upstream's model is not the reported one");
    const char *named = json_string_value(given(req, "model"));
    const char *dflt = cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL;
    if (strcmp(model, named && *named ? named : dflt) != 0)
        die("model neither the request's nor the default");
    if (json_is_true(json_object_get(up, "stream")) != (b->stream != 0) ||
        json_is_true(given(req, "stream")) != (b->stream != 0))
        die("stream flag changed on its way upstream");
    json_t *msgs = json_object_get(up, "messages");
    json_t *want = expected_messages(req);
    if (json_array_size(msgs) == 0)
        die("upstream request has no messages");
    if (!json_equal(msgs, want))
        die("messages changed on their way upstream");
    check_number(req, up, "temperature");
    check_number(req, up, "top_p");
    check_number(req, up, "max_tokens");
    json_t *stop = given(req, "stop");
    json_t *stops = json_is_string(stop) ? json_pack("[O]", stop) : json_incref(stop);
    if (!stops != !json_object_get(up, "stop") ||
        (stops && !json_equal(stops, json_object_get(up, "stop"))))
        die("stop changed on its way upstream");
    json_decref(stops);
    json_decref(want);
    json_decref(up);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *types[4] = {"application/json", "Application/JSON; charset=utf-8",
                                   "text/plain", NULL};
    uint8_t sel = data[0];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    char ct[256];
    const char *type = types[sel & 3];
    if (sel & 0x80) {
        const char *nl = memchr(body, '\n', len);
        size_t l = nl ? (size_t)(nl - body) : len;
        if (l >= sizeof ct)
            l = sizeof ct - 1;
        memcpy(ct, body, l);
        ct[l] = '\0';
        type = ct;
        if (nl) {
            len -= (size_t)(nl + 1 - body);
            body = nl + 1;
        } else {
            len = 0;
        }
    }

    srv_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.max_body = (sel & 4) ? 64 : 1024 * 1024;
    cfg.cors_origins = "*";
    cfg.default_model = (sel & 8) ? "qwen2.5-instruct" : NULL;

    srv_chat_body b;
    int status = srv_chat_body_parse(type, body, len, &cfg, &b);
    /* The tree-less pass agrees with jansson's tree: the same status, the
     * same upstream bytes, the same message. */
    if (srv_http_is_json_type(type) && len <= cfg.max_body) {
        srv_chat_body t;
        int tree = srv_chat_body_parse_tree(body, len, &cfg, &t);
        if (tree != status || t.stream != b.stream || strcmp(t.model, b.model) != 0 ||
            strcmp(t.msg, b.msg) != 0 || t.upstream_len != b.upstream_len ||
            (t.upstream && memcmp(t.upstream, b.upstream, t.upstream_len) != 0))
            die("the tree-less pass and the tree disagree");
        srv_chat_body_free(&t);
    }
    if (status == 0) {
        if (len > cfg.max_body)
            die("accepted a body over MAX_BODY_BYTES");
        /* The module parsed these bytes the same way. */
        json_t *req = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
        if (!json_is_object(req))
            die("accepted a body that is not a JSON object");
        check_accepted(req, &b, &cfg);
        json_decref(req);
    } else {
        if (status != 400 && status != 413 && status != 415)
            die("unexpected status");
        if (b.upstream)
            die("rejected with an upstream body");
        if (!b.msg[0])
            die("rejected without a message");
        char *j = srv_http_error_json(b.msg);
        if (!j)
            die("error message does not serialise");
        free(j);
    }
    srv_chat_body_free(&b);
    return 0;
}
