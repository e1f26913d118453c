/*
 * openai_body.h - the checks the gateway makes on an OpenAI request body
 * before relaying it (POST /v1/chat/completions, /v1/embeddings), and the
 * one change it may make to it: the default model put first. Pure
 * functions of the bytes, so fuzz/fuzz_openai_body.c drives them.
 */
#ifndef SRV_OPENAI_BODY_H
#define SRV_OPENAI_BODY_H

#include <stddef.h>

typedef enum srv_openai_kind {
    SRV_OPENAI_CHAT,      /* messages: a non-empty array of objects with a string role */
    SRV_OPENAI_EMBEDDINGS /* input: a non-empty string or array; no stream */
} srv_openai_kind;

typedef struct srv_openai_body {
    int has_model;          /* the body names a model (then in model, cut to fit) */
    char model[128];        /* as much as the access log keeps */
    int stream;             /* "stream": true */
    int has_stream_options; /* a "stream_options" member is there */
    int include_usage;      /* "stream_options": {"include_usage": true} */
    char msg[320];          /* why it was refused */
} srv_openai_body;

/*
 * Check a body of `kind` sent with content_type (NULL: none). Returns 0, or
 * the status to answer (400, 415) with out->msg set. Checked: JSON (NULs
 * inside strings allowed), an object, "model" a non-empty string without
 * NUL when present, "stream" a boolean or null when present, and the kind's
 * own member. Everything else is the upstream's to judge.
 */
int srv_openai_body_check(srv_openai_kind kind, const char *content_type,
                          const char *bytes, size_t len, srv_openai_body *out);

/*
 * The same check on jansson's tree alone (no Content-Type): what
 * srv_openai_body_check falls back to for every body its tree-less pass
 * does not accept, and the reference the fuzzer holds that pass to.
 */
int srv_openai_body_check_tree(srv_openai_kind kind, const char *bytes, size_t len,
                               srv_openai_body *out);

/*
 * The same bytes with "model": model put first in the object: a checked
 * body that names no model. Textual, so that the rest stays byte for byte
 * what the client sent. A new buffer (free()), its length in *out_len;
 * NULL on OOM or when bytes hold no object.
 */
char *srv_openai_body_with_model(const char *bytes, size_t len, const char *model,
                                 size_t *out_len);

/*
 * The same bytes with `member` (a JSON member, e.g. "\"a\":1") put first in
 * the object; the rest byte for byte. A new buffer (free()), its length in
 * *out_len; NULL on OOM or when bytes hold no object. The caller makes sure
 * the body has no member of that name.
 */
char *srv_body_put_first(const char *bytes, size_t len, const char *member,
                         size_t *out_len);

/*
 * A checked stream body asking the upstream for usage
 * (stream_options.include_usage true), for the gateway's counting: put first
 * when the body has no stream_options, else the body re-serialised with it
 * set (its other members kept). NULL on OOM.
 */
char *srv_openai_body_ask_usage(const char *bytes, size_t len, const srv_openai_body *b,
                                size_t *out_len);

#endif
