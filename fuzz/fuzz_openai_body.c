/*
 * fuzz_openai_body.c - libFuzzer driver for the checks the gateway makes on
 * an OpenAI request body and the default model's insertion
 * (src/server/openai_body.h).
 *
 * Input layout: byte 0 picks the route (bit 0: chat completions or
 * embeddings) and the Content-Type (bits 1-2: JSON, JSON with a charset,
 * text/plain, none); the rest is the body.
 *
 * Checked: a refused body gets 400 or 415 with a message; an accepted one is
 * a JSON object (jansson agrees), with a string model when has_model, and
 * stream as the body says; the tree-less pass and jansson's tree agree on
 * every body (status and members read); for a body that names no model, the body with
 * the default model put first is a JSON object whose "model" is the default
 * and whose every other member is the client's, unchanged; asking the
 * upstream for usage sets stream_options.include_usage and nothing else.
 */
#include "openai_body.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what)
{
    fprintf(stderr, "fuzz_openai_body: invariant broken: %s\n", what);
    abort();
}

static void check_injection(const char *body, size_t len, json_t *client)
{
    static const char model[] = "default-\"model\"\\\xc3\xa9";
    size_t out_len = 0;
    char *out = srv_openai_body_with_model(body, len, model, &out_len);
    if (!out)
        return; /* OOM is not a bug */
    json_t *sent = json_loadb(out, out_len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(sent))
        die("the body with the default model is not a JSON object");
    json_t *m = json_object_get(sent, "model");
    if (!json_is_string(m) || strcmp(json_string_value(m), model) != 0)
        die("the default model is not the body's model");
    json_object_del(sent, "model");
    if (!json_equal(sent, client))
        die("putting the model in changed another member");
    json_decref(sent);
    free(out);
}

/* Asking the upstream for usage changes stream_options.include_usage and
 * nothing else. */
static void check_ask_usage(const char *body, size_t len, const srv_openai_body *b,
                            json_t *client)
{
    size_t out_len = 0;
    char *out = srv_openai_body_ask_usage(body, len, b, &out_len);
    if (!out)
        return;
    json_t *sent = json_loadb(out, out_len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(sent))
        die("the body asking for usage is not a JSON object");
    json_t *opts = json_object_get(sent, "stream_options");
    if (!json_is_true(json_object_get(opts, "include_usage")))
        die("the body asking for usage does not ask for it");
    json_t *theirs = json_deep_copy(client);
    json_t *their_opts = json_object_get(theirs, "stream_options");
    if (json_is_object(their_opts))
        json_object_set_new(their_opts, "include_usage", json_true());
    else
        json_object_set_new(theirs, "stream_options",
                            json_pack("{s:b}", "include_usage", 1));
    if (!json_equal(sent, theirs))
        die("asking for usage changed another member");
    json_decref(theirs);
    json_decref(sent);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *types[4] = {"application/json", "application/json; charset=utf-8",
                                   "text/plain", NULL};
    srv_openai_kind kind = (data[0] & 1) ? SRV_OPENAI_EMBEDDINGS : SRV_OPENAI_CHAT;
    const char *type = types[(data[0] >> 1) & 3];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    srv_openai_body b;
    int status = srv_openai_body_check(kind, type, body, len, &b);
    /* The tree-less pass accepts only what jansson's tree accepts, and reads
     * the same members from it. */
    if (type && strncmp(type, "application/json", 16) == 0) {
        srv_openai_body t;
        int tree = srv_openai_body_check_tree(kind, body, len, &t);
        if (tree != status)
            die("the tree-less pass and the tree disagree on the status");
        if (status == 0 &&
            (t.has_model != b.has_model || strcmp(t.model, b.model) != 0 ||
             t.stream != b.stream || t.has_stream_options != b.has_stream_options ||
             t.include_usage != b.include_usage))
            die("the tree-less pass and the tree read different members");
    }
    if (status != 0) {
        if (status != 400 && status != 415)
            die("unexpected status");
        if (!b.msg[0])
            die("refused without a message");
        return 0;
    }
    /* Duplicate keys: jansson keeps the last; so does every upstream we know. */
    json_t *client = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(client))
        die("accepted a body that is not a JSON object");
    json_t *m = json_object_get(client, "model");
    if (b.has_model != (m != NULL))
        die("has_model disagrees with the body");
    if (b.stream != json_is_true(json_object_get(client, "stream")))
        die("stream disagrees with the body");
    if (kind == SRV_OPENAI_EMBEDDINGS && b.stream)
        die("a streamed embeddings request was accepted");
    if (!b.has_model)
        check_injection(body, len, client);
    if (b.include_usage !=
        json_is_true(
            json_object_get(json_object_get(client, "stream_options"), "include_usage")))
        die("include_usage disagrees with the body");
    if (b.stream && !b.include_usage)
        check_ask_usage(body, len, &b, client);
    json_decref(client);
    return 0;
}
