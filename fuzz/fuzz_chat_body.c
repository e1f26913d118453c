/*
 * fuzz_chat_body.c - libFuzzer driver for the /api/chat request validator
 * (validate() in src/server/api_chat.c, static, so api_chat.c is #included here).
 *
 * Input layout: byte 0 picks the Content-Type header (bits 0-1: JSON, JSON
 * with a charset, text/plain, none; bit 7 set: the header value is the
 * input's first line instead) and the body cap (bit 2: 64 bytes, so the 413
 * path is reachable; else 1 MiB as in production); the rest is the body.
 *
 * Checked: a rejected body gets 400, 413 or 415 with a message that
 * serialises to a JSON error; an accepted one yields a non-empty user
 * string, a 0/1 stream flag and string-or-NULL model and system; the
 * upstream request the server would build from them is valid JSON that
 * carries the user text unchanged as the last message.
 */
#include "../src/server/api_chat.c"

#include <stdint.h>
#include <stdio.h>

static void die(const char *what)
{
    fprintf(stderr, "fuzz_chat_body: invariant broken: %s\n", what);
    abort();
}

/* The request body the library would send upstream must carry `user` as
 * the content of its last message, byte for byte. */
static void check_upstream_body(const char *model, const char *user, const char *system,
                                int stream)
{
    zjuchat_request *r = zjuchat_request_new_simple(model, user, system);
    if (!r)
        return; /* invalid UTF-8 cannot come out of jansson; OOM is not a bug */
    char *body = zjuchat_request_to_json(r, stream);
    if (!body)
        die("request_to_json failed on validated input");
    json_error_t jerr;
    json_t *j = json_loads(body, 0, &jerr);
    if (!json_is_object(j))
        die("upstream request body is not a JSON object");
    json_t *msgs = json_object_get(j, "messages");
    size_t n = json_array_size(msgs);
    if (n == 0)
        die("upstream request has no messages");
    json_t *last = json_array_get(msgs, n - 1);
    json_t *content = json_object_get(last, "content");
    if (!json_is_string(content) || strcmp(json_string_value(content), user) != 0)
        die("user content changed on its way upstream");
    if (json_is_true(json_object_get(j, "stream")) != (stream != 0))
        die("stream flag changed on its way upstream");
    json_decref(j);
    free(body);
    zjuchat_request_free(r);
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

    json_t *root = NULL;
    const char *user = NULL, *model = NULL, *system = NULL, *msg = NULL;
    int stream = -1;
    int status =
        validate(type, body, len, &cfg, &root, &user, &model, &system, &stream, &msg);
    if (status == 0) {
        if (!json_is_object(root) || !user || !*user)
            die("accepted without a non-empty user_content");
        if (stream != 0 && stream != 1)
            die("stream flag not 0/1");
        if (len > cfg.max_body)
            die("accepted a body over MAX_BODY_BYTES");
        check_upstream_body(model, user, system, stream);
    } else {
        if (status != 400 && status != 413 && status != 415)
            die("unexpected status");
        if (!msg)
            die("rejected without a message");
        char *j = srv_http_error_json(msg);
        if (!j)
            die("error message does not serialise");
        free(j);
    }
    json_decref(root);
    return 0;
}
