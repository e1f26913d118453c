/*
 * internal.h - structures shared by the library's files (never installed).
 * Names with the zjuchat__ prefix are internal and may change at any time.
 */
#ifndef ZJUCHAT_INTERNAL_H
#define ZJUCHAT_INTERNAL_H

#include "zjuchat.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>

struct event;

#define ZJUCHAT__SHARD_MAX 128
#define ZJUCHAT__SHARD_STREAMS 128
struct zjuchat__shard;
struct zjuchat__sock;

struct zjuchat_client {
    char *api_key;
    char *base_url; /* no trailing '/' */
    char *ca_file;
    int insecure;
    long timeouts_ms[4]; /* indexed by zjuchat_timeout */
    int max_retries;
    long retry_base_ms;
    long retry_budget_ms; /* longest a call waits for retries, from its start */
    size_t max_body;
    volatile sig_atomic_t *cancel_flag;

    struct event_base *base;
    int owns_base; /* created for the blocking calls */
    int evented;   /* bound to the caller's loop */
    /* libcurl's connection cache walks every connection to a host on each
     * new transfer, so one multi handle costs O(open streams) per request.
     * Transfers are spread over multi handles of at most
     * ZJUCHAT__SHARD_STREAMS each (curl_ev.c), created as load needs. */
    struct zjuchat__shard *shards[ZJUCHAT__SHARD_MAX];
    int nshards;
    CURLSH *share;                  /* DNS cache and TLS sessions, across every shard */
    struct event *reaper;           /* frees idle upper shards (curl_ev.c) */
    struct zjuchat__shard *touched; /* shards to look at for finished transfers */
    long shard_idle_ms;
    struct zjuchat__sock **socks; /* libcurl's sockets by fd (curl_sock.c) */
    int socks_cap;
    struct curl_slist *headers_json;   /* Accept: application/json */
    struct curl_slist *headers_stream; /* Accept: text/event-stream */
    int in_curl;                       /* depth of curl_multi_* calls on the stack */
    long connections_opened;
    unsigned calls_started;     /* varies the retry jitter from call to call */
    struct zjuchat_call *calls; /* active calls, doubly linked */
    /* The HTTP/1.1 transport's pool (h1.h); NULL: every call on libcurl. */
    struct zjuchat__h1pool *h1;
};

/* How long an upper shard may stay idle before it is freed (default 60 s);
 * for tests (curl_ev.c). */
void zjuchat__transport_set_shard_idle_ms(zjuchat_client *client, long ms);

/* Where a string of the document lies: the bytes between its quotes. */
typedef struct zjuchat__span {
    size_t off, len; /* raw bytes data[off..off+len) */
    size_t decoded;  /* bytes once its escapes are decoded */
    unsigned char present, escaped;
} zjuchat__span;

enum { ZJUCHAT__DELTA, ZJUCHAT__MESSAGE };     /* choices[0].delta / .message */
enum { ZJUCHAT__CONTENT, ZJUCHAT__REASONING }; /* .content / .reasoning_content */

/* What one pass over a JSON document found (scan.c). */
typedef struct zjuchat__scan {
    int valid;       /* well-formed JSON, valid UTF-8 */
    int is_object;   /* the top-level value is an object */
    int finish;      /* a choices[].finish_reason that is a string */
    int has_usage;   /* usage.*_tokens seen (the others stay -1) */
    int secret_seen; /* a decoded string or key contains the secret */
    int secret_raw;  /* the bytes may hold the secret as is (0: they do not) */
    long prompt, completion, total;
    size_t
        text_len; /* bytes of choices[].delta.content and .reasoning_content, decoded */
    /* choices[0].{delta,message}.{content,reasoning_content} when a string */
    zjuchat__span text[2][2];
} zjuchat__scan;

/* Scan data[0..len). Returns 0 when valid, -1 when not, -2 on OOM. */
int zjuchat__scan_json(const char *data, size_t len, const char *secret,
                       zjuchat__scan *out);

/* The events of a stream are the same bytes up to their delta's text
 * ({"id":..,"model":..,"choices":[{"index":0,"delta":{"content":): where
 * the last event's scan reached a choice's text, the memo keeps its bytes
 * up to there and the scanner's state, and the next event that starts with
 * the same bytes (and is scanned with the same secret) is scanned from
 * there on (scan.c). All zeros: empty. */
#define ZJUCHAT__SCAN_MEMO_BYTES 256
#define ZJUCHAT__SCAN_MEMO_DEPTH 8
typedef struct zjuchat__scan_memo {
    const char *secret; /* the same pointer to the same bytes */
    size_t secret_len;
    int outside; /* scan.c's OUT_* for the secret */
    size_t len;  /* prefix[0..len): 0 when empty */
    zjuchat__scan out;
    size_t check_from, choice_index, elem_text[2];
    int choices_seen, elem_finish, depth, role, in_array, key;
    unsigned usage_set;
    unsigned char stack[ZJUCHAT__SCAN_MEMO_DEPTH + 1];
    unsigned char prefix[ZJUCHAT__SCAN_MEMO_BYTES];
} zjuchat__scan_memo;
/* zjuchat__scan_json, resuming from and filling memo (NULL: none). */
int zjuchat__scan_json_memo(const char *data, size_t len, const char *secret,
                            zjuchat__scan *out, zjuchat__scan_memo *memo);
/* Decode the JSON string raw[0..len) (between its quotes, as the scan
 * validated it) into out (room for len bytes); returns its length. */
size_t zjuchat__json_unescape(const char *raw, size_t len, char *out);

/* Accessors parse with jansson on first use (json stays NULL until then);
 * scan answers the rest without a tree, and the texts of choices[0] from
 * its spans (decoded on first use into text, NUL-terminated) unless the
 * scan saw the key: then the bytes were replaced by the redacted tree's
 * serialisation, which the spans do not point into (response.c). */
struct zjuchat_response {
    char *body;
    size_t len;
    long status;
    json_t *json;
    int parsed; /* json was attempted */
    zjuchat__scan scan;
    char *text[2]; /* decoded message.content, .reasoning_content */
};

/* sse_policy.c sets the fields one by one: a new one is set there too. */
struct zjuchat_chunk {
    const char *data;
    size_t len;
    json_t *json;
    int parsed;
    zjuchat__scan scan;
    int done;      /* the upstream's [DONE] (ZJUCHAT_CALL_PASS_DONE) */
    char *text[2]; /* decoded delta.content, .reasoning_content; freed after on_chunk */
};

/* error.c */
void zjuchat__error_set(zjuchat_error *err, zjuchat_code code, zjuchat_detail detail,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
zjuchat_code zjuchat__nomem(zjuchat_error *err);
/* Pull a human message out of an upstream error body into out (redacted). */
void zjuchat__api_message(const char *body, size_t len, const char *content_type,
                          long status, const char *secret, char *out, size_t cap);

/* redact.c */
/* Mask a proper prefix (4+ bytes) of secret that ends buf: what is left of a
 * key cut by a size cap. Returns the bytes masked. */
size_t zjuchat__redact_tail(char *buf, size_t len, const char *secret);
/* When parsed JSON hides the secret behind escapes in its decoded strings,
 * mask them in `json` and return a new compact serialisation (free()) with
 * its length; NULL when raw had no escapes or no decoded string held it. */
char *zjuchat__redact_json(const char *raw, size_t len, json_t *json, const char *secret,
                           size_t *out_len);

/* response.c */
/* Takes body and json (may be NULL: parsed on demand). */
zjuchat_response *zjuchat__response_new(char *body, size_t len, long status, json_t *json,
                                        const zjuchat__scan *scan);
/* Accessors on a chat object: choices[0].<container>.<field> as string. */
const char *zjuchat__choice_string(json_t *root, const char *container, const char *field,
                                   size_t *len);
const char *zjuchat__choice_finish(json_t *root);

/* The transport (its files: call.h, curl_ev.h). curl_ev.c: set up libcurl on
 * client->base; free it, ending every running call as cancelled first. */
zjuchat_code zjuchat__transport_init(zjuchat_client *client, zjuchat_error *err);
void zjuchat__transport_free(zjuchat_client *client);
/* call.c */
/* Start a GET (body NULL) or POST of body[0..body_len); path ("/..." ) is
 * appended to the base URL; flags are ZJUCHAT_CALL_*. */
zjuchat_call *zjuchat__call_start(zjuchat_client *client, const char *path,
                                  char *body_steal, size_t body_len, unsigned flags,
                                  const zjuchat_callbacks *cb, void *userdata,
                                  zjuchat_error *err);
/* GET {base}/models, for the blocking and the evented listing. */
#define ZJUCHAT__MODELS_PATH "/models"
/* Take ownership of the response handed to on_done (blocking wrappers). */
zjuchat_response *zjuchat__call_take_response(zjuchat_call *call);

/* request.c */
char *zjuchat__request_body(const zjuchat_request *req, int stream);

#endif
