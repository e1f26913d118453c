/*
 * dialect.h - how a route speaks: the shape of its error bodies and how an
 * upstream failure is told to its clients. The relay (relay.c) and the
 * request pipeline (pipeline.c) are the same for every route; only this
 * differs between the seed's /api/chat and OpenAI's /v1 API:
 *
 *            error body                         upstream [DONE]   upstream 4xx
 *   seed     {"error": "message"}               dropped           500 + message
 *   openai   {"error": {"message", "type",      forwarded         400/404/422 passed on,
 *             "param", "code"}}                                   401/403 -> 502
 */
#ifndef SRV_DIALECT_H
#define SRV_DIALECT_H

#include <stddef.h>

struct zjuchat_error;
struct zjuchat_call;

/* An answer to send instead of a relayed reply. */
typedef struct srv_failure {
    int status;
    long retry_after_s; /* -1: no Retry-After */
    char *body;         /* JSON, malloc'd; NULL: out of memory */
    size_t len;
} srv_failure;

typedef struct srv_dialect {
    const char *name;
    /* zjuchat_call_start_raw flags added to a stream (ZJUCHAT_CALL_PASS_DONE) */
    unsigned stream_flags;
    /*
     * Error body for `status` with `message` (any bytes; invalid UTF-8 is
     * replaced). `code` is a short machine-readable reason or NULL; the seed
     * dialect has no place for it. A new string (free()), NULL on OOM.
     */
    char *(*error_body)(int status, const char *message, const char *code);
    /*
     * What the client gets for an upstream call that failed before any reply
     * byte was sent. `call` is the failed call (inside on_done, for its
     * error body), NULL when the call never started.
     */
    void (*upstream_failure)(const struct zjuchat_error *e, struct zjuchat_call *call,
                             srv_failure *out);
} srv_dialect;

extern const srv_dialect srv_dialect_seed;
extern const srv_dialect srv_dialect_openai;

/* Short code for a status the gateway itself answers ("not_found"...). */
const char *srv_dialect_status_code(int status);

#endif
