/*
 * zjuchat.h - client library for the ZJU Chat API (OpenAI-compatible chat
 * completions at https://chat.zju.edu.cn/api/ai/v1).
 *
 * Two front doors over one code path:
 *   - blocking calls (zjuchat_complete, zjuchat_stream, zjuchat_list_models)
 *     for programs and scripts;
 *   - an evented interface (zjuchat_call_start) that runs on the caller's
 *     libevent event_base, for servers holding thousands of streams; its
 *     pass-through form (zjuchat_call_start_raw, zjuchat_models_start) relays
 *     a caller's own request bytes, for gateways.
 * Both build requests, parse SSE and map errors the same way.
 *
 * Conventions
 *   - Functions that can fail return a zjuchat_code (ZJUCHAT_OK == 0) or NULL,
 *     and fill the caller's zjuchat_error when one is passed (it may be NULL).
 *     Out of memory is an error like any other. The library never prints and
 *     never exits.
 *   - "new" results are owned by the caller and freed with the matching _free
 *     function; "borrowed" pointers stay valid only as long as stated.
 *   - The API key never appears in an error message, a chunk or a response
 *     handed out by the library: every byte coming from upstream is redacted
 *     (each character of an echoed key replaced by '*') before it is seen.
 *
 * Thread safety
 *   A zjuchat_client and everything started from it belong to one thread at a
 *   time. Different clients may be used from different threads at once.
 *   zjuchat_global_init() must have run once before threads are started
 *   (zjuchat_client_new calls it, which is enough for single-threaded use).
 */
#ifndef ZJUCHAT_H
#define ZJUCHAT_H

#include <signal.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZJUCHAT_DEFAULT_BASE_URL "https://chat.zju.edu.cn/api/ai/v1"
#define ZJUCHAT_DEFAULT_MODEL "deepseek-r1-671b"

struct event_base;

/* ------------------------------------------------------------------ */
/* Errors                                                             */
/* ------------------------------------------------------------------ */

/* Error classes. Stable numbers: programs may store and compare them. */
typedef enum zjuchat_code {
    ZJUCHAT_OK = 0,
    ZJUCHAT_ERR_CONFIG = 1,    /* missing key, bad base URL, bad option */
    ZJUCHAT_ERR_NETWORK = 2,   /* DNS, connect, TLS, connection reset */
    ZJUCHAT_ERR_TIMEOUT = 3,   /* connect, first byte, idle or total */
    ZJUCHAT_ERR_API = 4,       /* upstream answered an HTTP error status */
    ZJUCHAT_ERR_PROTOCOL = 5,  /* malformed or truncated reply */
    ZJUCHAT_ERR_CANCELLED = 6, /* cancelled by the caller */
    ZJUCHAT_ERR_NOMEM = 7,     /* out of memory */
    ZJUCHAT_ERR_INVALID = 8    /* invalid argument from the caller */
} zjuchat_code;

/* Finer detail for ZJUCHAT_ERR_NETWORK and ZJUCHAT_ERR_TIMEOUT. */
typedef enum zjuchat_detail {
    ZJUCHAT_DETAIL_NONE = 0,
    ZJUCHAT_NET_DNS = 1,
    ZJUCHAT_NET_CONNECT = 2,
    ZJUCHAT_NET_TLS = 3,
    ZJUCHAT_NET_RESET = 4, /* connection closed or reset mid-reply */
    ZJUCHAT_TIMEOUT_CONNECT = 10,
    ZJUCHAT_TIMEOUT_FIRST_BYTE = 11, /* no response status in time */
    ZJUCHAT_TIMEOUT_IDLE = 12,       /* no byte of the body in time */
    ZJUCHAT_TIMEOUT_TOTAL = 13
} zjuchat_detail;

/* Caller-allocated error report, like jansson's json_error_t. */
typedef struct zjuchat_error {
    zjuchat_code code;
    zjuchat_detail detail;
    long http_status;    /* upstream status for ZJUCHAT_ERR_API, else 0 */
    long retry_after_ms; /* upstream Retry-After for 429/503, else -1 */
    char message[512];   /* human readable, NUL-terminated, key redacted */
} zjuchat_error;

/* Static name of an error class, e.g. "network error". Never NULL. */
const char *zjuchat_strerror(zjuchat_code code);

/* Static name of a detail, e.g. "tls", "first-byte". Never NULL. */
const char *zjuchat_detail_name(zjuchat_detail detail);

/*
 * Replace, in place, every occurrence of `secret` in buf[0..len) by the
 * same number of '*'. Returns how many occurrences were replaced. A NULL or
 * empty secret replaces nothing. Sizes are unchanged, so framing built on
 * lengths stays valid.
 */
size_t zjuchat_redact(char *buf, size_t len, const char *secret);

/* ------------------------------------------------------------------ */
/* Client                                                             */
/* ------------------------------------------------------------------ */

typedef struct zjuchat_client zjuchat_client;

/*
 * Shortest API key accepted. The key is kept out of every output by exact
 * match (zjuchat_redact), so a short key would also mask innocent text that
 * happens to contain it (a key "k" stars out every 'k' of model names and
 * answers). Real keys are long random strings (32 characters and more); 16
 * leaves room for any real key while making an accidental match in output
 * practically impossible.
 */
#define ZJUCHAT_MIN_KEY_LEN 16

/* Process-wide setup (libcurl). Idempotent. Returns ZJUCHAT_OK or an error. */
zjuchat_code zjuchat_global_init(void);

/*
 * Create a client.
 *   api_key   borrowed; copied. NULL or "" falls back to env ZJU_API_KEY;
 *             if that is empty too: NULL and ZJUCHAT_ERR_CONFIG saying to
 *             set ZJU_API_KEY. A key shorter than ZJUCHAT_MIN_KEY_LEN is
 *             ZJUCHAT_ERR_CONFIG too (the message names the minimum, never
 *             the key).
 *   base_url  borrowed; copied. NULL falls back to env ZJU_BASE_URL, then
 *             ZJUCHAT_DEFAULT_BASE_URL. A trailing '/' is tolerated. Must
 *             start with http:// or https://, else ZJUCHAT_ERR_CONFIG.
 * Returns a new client, or NULL with err filled.
 */
zjuchat_client *zjuchat_client_new(const char *api_key, const char *base_url,
                                   zjuchat_error *err);

/* Same as zjuchat_client_new(NULL, NULL, err): key and URL from env. */
zjuchat_client *zjuchat_client_new_from_env(zjuchat_error *err);

/*
 * Free a client. Calls still running on it are cancelled first (their
 * on_done runs with ZJUCHAT_ERR_CANCELLED). NULL is a no-op.
 */
void zjuchat_client_free(zjuchat_client *client);

/* Base URL in use, without trailing '/'. Borrowed, valid while client lives. */
const char *zjuchat_client_base_url(const zjuchat_client *client);

/*
 * Timeouts, in milliseconds; 0 disables one. Defaults: connect 10000,
 * first byte (until the response status arrives) 60000, idle (longest
 * silence between body bytes) 300000, total 0 (none). The total timeout
 * is enforced by the library's own timer, never CURLOPT_TIMEOUT.
 */
typedef enum zjuchat_timeout {
    ZJUCHAT_TIMEOUT_OPT_CONNECT = 0,
    ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE = 1,
    ZJUCHAT_TIMEOUT_OPT_IDLE = 2,
    ZJUCHAT_TIMEOUT_OPT_TOTAL = 3
} zjuchat_timeout;
zjuchat_code zjuchat_client_set_timeout(zjuchat_client *client, zjuchat_timeout which,
                                        long ms);

/*
 * Retries for connect failures, 429 and 5xx, only while nothing of the
 * answer has reached the caller. Exponential backoff from base_delay_ms
 * (doubling, capped at 8 s) with jitter (half fixed, half random); a
 * Retry-After header wins when it asks for at most 30 s (longer: no retry,
 * the error is returned). Every wait also has to fit the retry budget
 * (zjuchat_client_set_retry_budget). Defaults: 2 retries, 200 ms.
 */
zjuchat_code zjuchat_client_set_retries(zjuchat_client *client, int max_retries,
                                        long base_delay_ms);

/*
 * Retry budget, in milliseconds: a retry waits only when its delay ends
 * within `ms` of the call's start, so the waits between attempts (and the
 * attempts before them) never hold a call longer than that. A delay that
 * would end later is not shortened: the call ends at once with the last
 * error; for an upstream 429 that is ZJUCHAT_ERR_API with http_status 429
 * and retry_after_ms as the upstream sent it, so the caller can pass the
 * Retry-After on. 0: never wait, so no retry. Default 3000 (the default
 * backoff and a Retry-After of 1-2 s fit; longer waits go back to the
 * caller, whose own timeout would otherwise fire first).
 * ZJUCHAT_ERR_INVALID for ms < 0.
 */
zjuchat_code zjuchat_client_set_retry_budget(zjuchat_client *client, long ms);

/* CA bundle file for TLS verification (borrowed, copied); NULL: system. */
zjuchat_code zjuchat_client_set_ca_file(zjuchat_client *client, const char *path);

/*
 * Whether the CA bundle at `path` can verify a server: it is read as TLS
 * connections read it (PEM, OpenSSL's loader) and must hold at least one
 * certificate. ZJUCHAT_OK; ZJUCHAT_ERR_CONFIG with err->message saying why
 * ("cannot be read: Permission denied", "holds no certificate OpenSSL can
 * use (no certificate or crl found)"), the path not included;
 * ZJUCHAT_ERR_INVALID for a NULL or empty path. Touches no client: a
 * program calls it when it starts, so that a bad file is said once there
 * and not by every call over TLS (zju-chat-server does, for ZJU_CA_FILE).
 */
zjuchat_code zjuchat_ca_file_check(const char *path, zjuchat_error *err);

/* Turn TLS peer verification off (tests only). On by default. */
zjuchat_code zjuchat_client_set_insecure(zjuchat_client *client, int insecure);

/* Largest accepted non-stream body or error body; default 8 MiB. */
zjuchat_code zjuchat_client_set_max_body(zjuchat_client *client, size_t bytes);

/*
 * Blocking calls poll *flag every 50 ms and stop with ZJUCHAT_ERR_CANCELLED
 * once it is non-zero (set it from a SIGINT handler). Borrowed; NULL clears.
 */
void zjuchat_client_set_cancel_flag(zjuchat_client *client, volatile sig_atomic_t *flag);

/*
 * Bind the client to the caller's event loop for zjuchat_call_start. Must be
 * called before the first call; afterwards the blocking functions return
 * ZJUCHAT_ERR_INVALID. `base` is borrowed and must outlive the client.
 * The evented calls take the library's own HTTP/1.1 transport (keep-alive
 * pool, TLS with OpenSSL). For an https base URL the TLS context and its CA
 * store are loaded here (tens of milliseconds for the system's store), not
 * at the first call; the CA file and the insecure setting may still change
 * afterwards, and then take effect at the next new connection (a failure to
 * load them is reported by the call that needed them). ZJU_UPSTREAM_ENGINE=curl in the
 * environment when this is called, or a proxy in http_proxy/https_proxy/all_proxy, keeps
 * them on libcurl.
 */
zjuchat_code zjuchat_client_use_event_base(zjuchat_client *client,
                                           struct event_base *base);

/* Number of upstream connections opened so far on this client. */
long zjuchat_client_connections_opened(const zjuchat_client *client);

/* ------------------------------------------------------------------ */
/* Requests                                                           */
/* ------------------------------------------------------------------ */

typedef struct zjuchat_request zjuchat_request;

/* New empty request (model defaults to ZJUCHAT_DEFAULT_MODEL); NULL on OOM. */
zjuchat_request *zjuchat_request_new(void);

/*
 * The original client's convenience form: optional system message (omitted
 * when system_content is NULL or ""), then the user message. model NULL or
 * "" means the default. Returns a new request, NULL on OOM or NULL user.
 */
zjuchat_request *zjuchat_request_new_simple(const char *model, const char *user_content,
                                            const char *system_content);

/*
 * The same with explicit lengths, for texts that may contain NUL (JSON's
 * \u0000, e.g. from a parsed request): user_content[0..user_len) and
 * system_content[0..system_len) are sent as they are, NUL bytes included
 * (written as \u0000). The system message is omitted when system_content is
 * NULL or system_len is 0. NULL on OOM, NULL user_content or invalid UTF-8.
 */
zjuchat_request *zjuchat_request_new_simple_n(const char *model, const char *user_content,
                                              size_t user_len, const char *system_content,
                                              size_t system_len);

void zjuchat_request_free(zjuchat_request *req);

/* All strings are borrowed and copied; they must be valid UTF-8, else
 * ZJUCHAT_ERR_INVALID. */
zjuchat_code zjuchat_request_set_model(zjuchat_request *req, const char *model);
/* Append a turn; role is "system", "user", "assistant" or "tool". */
zjuchat_code zjuchat_request_add_message(zjuchat_request *req, const char *role,
                                         const char *content);
/* Same, with content[0..len): NUL bytes inside are kept (sent as \u0000). */
zjuchat_code zjuchat_request_add_message_n(zjuchat_request *req, const char *role,
                                           const char *content, size_t len);
/*
 * Append a whole message given as JSON text, message_json[0..len) (borrowed;
 * parsed and copied): an object with a "role" ("system", "user", "assistant"
 * or "tool") and a "content" that is a string or a non-empty array of
 * content parts, each an object with a string "type", as in OpenAI's
 * multimodal form ({"type": "text", "text": ...}, {"type": "image_url",
 * "image_url": {"url": ...}}). An assistant message with a "tool_calls"
 * array may have no content (absent or null). The parts and every other
 * member (name, tool_call_id, tool_calls...) go upstream as given (reals
 * written with 17 significant digits, like the rest of the body); which part
 * types a model takes is the upstream's call. \u0000 inside strings is kept.
 * ZJUCHAT_ERR_INVALID, with err->message saying what is wrong (e.g.
 * "content[1] must be an object with a string \"type\""), for NULL
 * arguments, invalid JSON or UTF-8, a member given twice or a message of
 * another shape; ZJUCHAT_ERR_NOMEM. On error the request is unchanged.
 */
zjuchat_code zjuchat_request_add_message_json(zjuchat_request *req,
                                              const char *message_json, size_t len,
                                              zjuchat_error *err);
zjuchat_code zjuchat_request_set_temperature(zjuchat_request *req, double t);
zjuchat_code zjuchat_request_set_top_p(zjuchat_request *req, double p);
zjuchat_code zjuchat_request_set_max_tokens(zjuchat_request *req, long n);
zjuchat_code zjuchat_request_add_stop(zjuchat_request *req, const char *stop);
/*
 * Raw escape hatch: `json_object` must be a JSON object; its members are
 * merged into the request body last (overriding). "messages" and "stream"
 * cannot be overridden (ZJUCHAT_ERR_INVALID).
 */
zjuchat_code zjuchat_request_set_extra(zjuchat_request *req, const char *json_object,
                                       zjuchat_error *err);

/* Model of the request; borrowed, valid until the request changes. */
const char *zjuchat_request_model(const zjuchat_request *req);

/* Body as sent upstream; new string (free()), NULL on OOM. */
char *zjuchat_request_to_json(const zjuchat_request *req, int stream);

/* ------------------------------------------------------------------ */
/* Responses and chunks                                               */
/* ------------------------------------------------------------------ */

typedef struct zjuchat_response zjuchat_response;
typedef struct zjuchat_chunk zjuchat_chunk;

void zjuchat_response_free(zjuchat_response *resp);
/* Raw body bytes exactly as upstream sent them (key redacted). Borrowed. */
const char *zjuchat_response_body(const zjuchat_response *resp, size_t *len);
long zjuchat_response_status(const zjuchat_response *resp);
/* choices[0].message.content / .reasoning_content / finish_reason, or NULL.
 * Borrowed, valid while resp lives. len may be NULL. */
const char *zjuchat_response_content(const zjuchat_response *resp, size_t *len);
const char *zjuchat_response_reasoning(const zjuchat_response *resp, size_t *len);
const char *zjuchat_response_finish_reason(const zjuchat_response *resp);
/* usage.*_tokens; returns 0 when present, -1 when absent (outputs untouched). */
int zjuchat_response_usage(const zjuchat_response *resp, long *prompt, long *completion,
                           long *total);
/* For GET /models: number of entries in data[] and the i-th id (borrowed). */
size_t zjuchat_response_model_count(const zjuchat_response *resp);
const char *zjuchat_response_model_id(const zjuchat_response *resp, size_t i);

/* A stream chunk; borrowed, valid only during the callback that gets it. */
/* The event's data bytes (a JSON object), not NUL-terminated. */
const char *zjuchat_chunk_data(const zjuchat_chunk *chunk, size_t *len);
/* choices[0].delta.content / .reasoning_content / finish_reason, or NULL. */
const char *zjuchat_chunk_content(const zjuchat_chunk *chunk, size_t *len);
const char *zjuchat_chunk_reasoning(const zjuchat_chunk *chunk, size_t *len);
const char *zjuchat_chunk_finish_reason(const zjuchat_chunk *chunk);
/* Bytes of text the chunk carries: choices[].delta.content and
 * .reasoning_content together (decoded, all choices), from the check every
 * event gets: no parse, unlike the accessors above. 0 for NULL. */
size_t zjuchat_chunk_text_length(const zjuchat_chunk *chunk);
/* usage, when the chunk carries one (0), else -1. */
int zjuchat_chunk_usage(const zjuchat_chunk *chunk, long *prompt, long *completion,
                        long *total);
/*
 * 1 when the chunk is the upstream's end marker `data: [DONE]`, else 0 (also
 * for NULL). Only calls started with ZJUCHAT_CALL_PASS_DONE ever get one:
 * zjuchat_chunk_data gives "[DONE]" (6 bytes), the other accessors NULL or
 * -1. It is not counted in zjuchat_call_stats.events.
 */
int zjuchat_chunk_is_done(const zjuchat_chunk *chunk);

/* ------------------------------------------------------------------ */
/* Blocking calls                                                     */
/* ------------------------------------------------------------------ */

/*
 * Non-stream chat completion. On success *out is a new response (2xx, body
 * is JSON). On failure *out is NULL and err says why; for ZJUCHAT_ERR_API
 * err->message holds the upstream's error message.
 */
zjuchat_code zjuchat_complete(zjuchat_client *client, const zjuchat_request *req,
                              zjuchat_response **out, zjuchat_error *err);

/* Return 0 to go on, non-zero to stop the stream (the call then returns
 * ZJUCHAT_ERR_CANCELLED). */
typedef int (*zjuchat_chunk_fn)(const zjuchat_chunk *chunk, void *userdata);

/*
 * Streaming chat completion: fn runs once per JSON event as it arrives,
 * until the upstream's [DONE]. Events whose data is not JSON are skipped.
 */
zjuchat_code zjuchat_stream(zjuchat_client *client, const zjuchat_request *req,
                            zjuchat_chunk_fn fn, void *userdata, zjuchat_error *err);

/* GET {base}/models. *out: new response; see zjuchat_response_model_*. */
zjuchat_code zjuchat_list_models(zjuchat_client *client, zjuchat_response **out,
                                 zjuchat_error *err);

/* ------------------------------------------------------------------ */
/* Evented interface (for servers)                                    */
/* ------------------------------------------------------------------ */

typedef struct zjuchat_call zjuchat_call;

/* Returned by on_chunk to end the call early (on_done: CANCELLED). */
#define ZJUCHAT_STOP 1

typedef struct zjuchat_callbacks {
    /*
     * Optional. The upstream accepted the request: 2xx status and, for a
     * stream, an event-stream content type. Runs once, before any on_chunk.
     * Retries are over by then.
     */
    void (*on_accepted)(zjuchat_call *call, void *userdata);
    /* Stream only: one JSON event. Return 0 or ZJUCHAT_STOP. */
    int (*on_chunk)(zjuchat_call *call, const zjuchat_chunk *chunk, void *userdata);
    /*
     * Required. Runs exactly once when the call ends. err is borrowed (code
     * ZJUCHAT_OK on success). resp is the non-stream response on success,
     * borrowed for the duration of the callback, else NULL. The call is
     * freed right after on_done returns.
     */
    void (*on_done)(zjuchat_call *call, const zjuchat_error *err,
                    const zjuchat_response *resp, void *userdata);
} zjuchat_callbacks;

/*
 * Start a call on the client's event base (see zjuchat_client_use_event_base).
 * req and cb are copied/serialised: they may be freed on return. On failure
 * returns NULL, fills err, and no callback ever runs.
 */
zjuchat_call *zjuchat_call_start(zjuchat_client *client, const zjuchat_request *req,
                                 int stream, const zjuchat_callbacks *cb, void *userdata,
                                 zjuchat_error *err);

/*
 * Cancel: the upstream transfer is dropped at once and on_done runs with
 * ZJUCHAT_ERR_CANCELLED before this returns (or, when called from inside
 * one of the call's own callbacks, as soon as that callback returns).
 */
void zjuchat_call_cancel(zjuchat_call *call);

/*
 * Backpressure: stop reading from upstream until resumed. Events already
 * received in the current network read are still delivered (at most one
 * read, 16 KiB). Safe to call from on_chunk.
 */
void zjuchat_call_pause(zjuchat_call *call);
void zjuchat_call_resume(zjuchat_call *call);

typedef struct zjuchat_call_stats {
    long http_status;   /* upstream status, 0 before it arrived */
    long first_byte_ms; /* start to upstream status, -1 before */
    long events;        /* JSON events delivered */
    long skipped;       /* events whose data was not JSON */
    long retries;       /* attempts beyond the first */
    int saw_done;       /* upstream sent [DONE] */
} zjuchat_call_stats;

void zjuchat_call_get_stats(const zjuchat_call *call, zjuchat_call_stats *out);

/*
 * The upstream's error body, for a call that ends with ZJUCHAT_ERR_API
 * (an HTTP status outside 2xx): the bytes as received (Content-Type in
 * zjuchat_call_content_type), so a gateway can pass the upstream's own
 * 400/404/422 answer on. For every kind of call (zjuchat_call_start too).
 * Callable only from inside on_done; borrowed until on_done returns. *len
 * (may be NULL) gets its length.
 *   - The key is redacted: an echoed key is masked byte for byte (sizes
 *     unchanged), and a JSON body that hides it behind escapes
 *     ("\u0073k-...") is re-serialised with it masked. A body that hides it
 *     so and is not valid JSON is withheld (NULL); err->message still says
 *     what happened.
 *   - Only the first 64 KiB of a longer body are kept: such a body comes
 *     back cut (it is then seldom valid JSON).
 *   - An empty body gives "" and 0. NULL (and 0) for every other outcome
 *     (success, network error, timeout, cancel...) and outside on_done.
 */
const char *zjuchat_call_error_body(const zjuchat_call *call, size_t *len);

/*
 * Content-Type of the upstream's last response to this call, "" when none
 * arrived (or NULL call). Borrowed; valid during the call's callbacks. Key
 * redacted.
 */
const char *zjuchat_call_content_type(const zjuchat_call *call);

/* ------------------------------------------------------------------ */
/* Pass-through calls (for gateways)                                  */
/* ------------------------------------------------------------------ */

/* Flags of zjuchat_call_start_raw. */
#define ZJUCHAT_CALL_STREAM 0x1u /* a stream: on_chunk per event, no resp */
/* With ZJUCHAT_CALL_STREAM: hand the upstream's `data: [DONE]` to on_chunk
 * as one last chunk (zjuchat_chunk_is_done), as OpenAI's API forwards it.
 * None is made up: a stream the upstream ends on a finish chunk alone still
 * succeeds without one (zjuchat_call_stats.saw_done tells the two apart). */
#define ZJUCHAT_CALL_PASS_DONE 0x2u

/*
 * Start a POST of a caller-made JSON body on the client's event base: for a
 * gateway that relays an OpenAI request byte for byte. Everything else is
 * zjuchat_call_start's: callbacks, timeouts, retries and retry budget
 * (the body is sent again as is), cancel, pause/resume, stats, and the key
 * kept out of every byte handed back.
 *   path      borrowed; appended to the base URL, e.g. "chat/completions"
 *             or "embeddings" ({base}/chat/completions); a leading '/' is
 *             optional. It must stay under the base URL: only URL path
 *             characters (RFC 3986 pchar, '/' and a '?' query), no "." or
 *             ".." segment (plain or %2e-encoded), else ZJUCHAT_ERR_INVALID.
 *   body      body[0..body_len), borrowed and copied (it may be freed on
 *             return). Sent as it is, with Content-Type: application/json:
 *             never parsed, checked or rebuilt. Choosing the model (for a
 *             request that names none) and "stream" is the caller's job;
 *             "stream" must agree with ZJUCHAT_CALL_STREAM. NULL:
 *             ZJUCHAT_ERR_INVALID (body_len 0 sends an empty body).
 *   flags     0 (non-stream) or ZJUCHAT_CALL_STREAM, optionally with
 *             ZJUCHAT_CALL_PASS_DONE; other bits, or PASS_DONE without
 *             STREAM: ZJUCHAT_ERR_INVALID.
 * Non-stream: on success on_done's resp holds the upstream's 2xx body
 * (zjuchat_response_body) and its status (zjuchat_response_status); a 2xx
 * body that is not a JSON object is ZJUCHAT_ERR_PROTOCOL. Stream: the
 * upstream must answer text/event-stream; on_chunk gets each JSON event, its
 * bytes in zjuchat_chunk_data; events that are not JSON are skipped (stats
 * count them). Bytes come as received, the key masked: in place when echoed
 * as is, by re-serialising the body or event when it hides behind JSON
 * escapes (the only case where they differ from upstream's). An
 * error status (either kind) ends with ZJUCHAT_ERR_API: err->http_status,
 * err->retry_after_ms, and the body in zjuchat_call_error_body.
 * Returns the call, or NULL with err filled (no callback ever runs):
 * ZJUCHAT_ERR_INVALID for a client not bound to an event base or a bad
 * argument, ZJUCHAT_ERR_NOMEM. Same thread rules as zjuchat_call_start.
 */
zjuchat_call *zjuchat_call_start_raw(zjuchat_client *client, const char *path,
                                     const char *body, size_t body_len, unsigned flags,
                                     const zjuchat_callbacks *cb, void *userdata,
                                     zjuchat_error *err);

/*
 * GET {base}/models on the client's event base: the evented
 * zjuchat_list_models. cb->on_done is required, cb->on_accepted optional,
 * cb->on_chunk unused. On success on_done's resp (borrowed, as for any call)
 * holds the raw body (zjuchat_response_body, key redacted) and the parsed
 * list (zjuchat_response_model_count, zjuchat_response_model_id). The
 * client's timeouts and retries apply; zjuchat_call_cancel cancels it; an
 * error status ends with ZJUCHAT_ERR_API and zjuchat_call_error_body.
 * Returns the call, or NULL with err filled (ZJUCHAT_ERR_INVALID for a
 * client not bound to an event base or no on_done; ZJUCHAT_ERR_NOMEM).
 */
zjuchat_call *zjuchat_models_start(zjuchat_client *client, const zjuchat_callbacks *cb,
                                   void *userdata, zjuchat_error *err);

#ifdef __cplusplus
}
#endif

#endif /* ZJUCHAT_H */
