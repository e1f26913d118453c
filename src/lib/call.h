/*
 * call.h - one upstream call, shared by the files of the transport (never
 * installed). Who owns what:
 *   call.c        the call's lifecycle: start, attempts, timers, pause,
 *                 cancel, the end (on_done exactly once), the public
 *                 zjuchat_call_* accessors
 *   retry.c       whether and when a failed attempt is tried again
 *   easy.c        the libcurl easy handle of one attempt and its options
 *   reply.c       libcurl's header and write callbacks: reading the answer
 *   sse_policy.c  what of an event stream reaches on_chunk
 *   outcome.c     what an attempt that libcurl ended means (zjuchat_error,
 *                 or the response)
 *   curl_ev.c, curl_sock.c (curl_ev.h): libcurl's multi handles on libevent
 *   h1_conn.c, h1_exchange.c (h1.h): the library's own HTTP/1.1 transport,
 *                 which the evented calls take instead (client->h1 set)
 *
 * Re-entrancy rule: libcurl forbids curl_multi_* calls from inside its own
 * callbacks, and user callbacks (on_chunk, on_accepted) run inside them. So a
 * call never ends while libcurl or a user callback is on the stack: the end
 * is recorded in call->pending, libcurl is told to abort (a write or header
 * callback returning 0), and the call is finished from the event loop.
 */
#ifndef ZJUCHAT_CALL_H
#define ZJUCHAT_CALL_H

#include "internal.h"
#include "sse.h"

#include <time.h>

#define ERROR_BODY_CAP (64 * 1024) /* an error page needs no more */

enum wake_kind { WAKE_NONE, WAKE_START, WAKE_RETRY, WAKE_FINISH };
enum phase { PHASE_FIRST_BYTE, PHASE_IDLE };

struct zjuchat__h1conn;

struct zjuchat_call {
    zjuchat_client *client;
    zjuchat_call *prev, *next;
    zjuchat_callbacks cb;
    void *userdata;
    int stream;
    int pass_done; /* ZJUCHAT_CALL_PASS_DONE: [DONE] reaches on_chunk */
    char *url;
    char *body; /* NULL for GET */
    size_t body_len;
    CURL *easy;                 /* NULL when the call takes the HTTP/1.1 transport */
    struct zjuchat__h1conn *h1; /* its connection, while an attempt has one */
    /* easy has carried a transfer: replaced before the next (easy.c) */
    int easy_used;
    struct zjuchat__shard *shard; /* set while the easy handle is in a multi */
    char errbuf[CURL_ERROR_SIZE];

    /* State of the current attempt: reset by call.c when it starts, written
     * by reply.c and sse_policy.c as the answer comes in. */
    long status;
    int headers_done;
    int accepted;
    char content_type[96];
    long retry_after_ms;
    char *buf; /* non-stream body, or an error body */
    size_t buf_len, buf_cap;
    zjuchat__sse *sse;
    int saw_done, saw_finish;

    /* Control. */
    int abort;       /* make libcurl's callbacks stop the transfer */
    int in_callback; /* a user callback is running */
    int finished;
    int paused;
    int has_pending;
    zjuchat_error pending;
    enum phase phase;
    struct event *phase_timer; /* first byte, then idle */
    struct event *total_timer;
    struct event *wake; /* start, retry delay, or deferred finish */
    enum wake_kind wake_kind;
    struct timespec start, attempt_start;
    zjuchat_call_stats stats;
    /* the last piece of the body, for the lazy idle timer (call.c) */
    struct timespec last_body;
    /* told after each upstream read's last on_chunk (zjuchat__call_on_read_end) */
    void (*on_read_end)(zjuchat_call *call, void *userdata);
    zjuchat_response *resp;
    unsigned rng;
    int error_body_ok;      /* on_done: buf is the upstream's error body */
    int error_body_dropped; /* it hid the key where it cannot be masked */
};

/* call.c */
/* End the call with err (copied). Deferred while libcurl or a user callback
 * is on the stack; then on_done runs from the loop. */
void zjuchat__call_finish(zjuchat_call *call, const zjuchat_error *err);
void zjuchat__call_finish_code(zjuchat_call *call, zjuchat_code code,
                               zjuchat_detail detail, const char *msg);
/* Record why the call must end (the first reason wins) and make libcurl's
 * callbacks stop the transfer; for use inside callbacks. */
void zjuchat__call_set_pending(zjuchat_call *call, zjuchat_code code,
                               zjuchat_detail detail, const char *msg);
/* The attempt ended with e: retry it later (retry.c decides) or end. */
void zjuchat__call_attempt_failed(zjuchat_call *call, const zjuchat_error *e);
/* End every call of the client as cancelled (the client is being freed). */
void zjuchat__calls_end_all(zjuchat_client *client);

/* A piece of the body came: the idle timeout counts from now. Cheaper than
 * re-arming the timer on every piece (a timer-heap update each, callgrind):
 * the timer keeps its deadline and, when it fires early, waits out the
 * rest (on_phase_timer). */
void zjuchat__call_touch_idle(zjuchat_call *call);
/* For a gateway that coalesces a read's events into one write (the
 * server's relay.c): fn runs once the events of one upstream read have all
 * reached on_chunk, from the loop (no parser on the stack; the call may be
 * paused or cancelled in it), before the loop waits again. Returns 0, or -1
 * when the call's transport cannot tell (libcurl's): the caller then keeps
 * its own way. fn NULL stops it. */
int zjuchat__call_on_read_end(zjuchat_call *call,
                              void (*fn)(zjuchat_call *call, void *userdata));

/* retry.c */
/* Milliseconds to wait before retrying the attempt that failed with e, or
 * -1 when it is not retried. */
long zjuchat__retry_wait_ms(zjuchat_call *call, const zjuchat_error *e);

/* easy.c */
/* A new easy handle with the options that must precede its first transfer;
 * NULL on OOM. */
CURL *zjuchat__easy_fresh(void);
/* Set call->easy's options for the call. 0, or -1 when libcurl refused one. */
int zjuchat__easy_setup(zjuchat_call *call);

/* reply.c: the answer as a transport reads it. A status line (status 0:
 * not known yet) starts a reply; then its headers one by one (value as
 * sent, not yet trimmed); then the end of the headers, which accepts or
 * refuses the reply; then the body, as many pieces as come. headers_end and
 * body return -1 when the transfer must stop (call->abort). */
void zjuchat__reply_begin(zjuchat_call *call, long status);
void zjuchat__reply_header(zjuchat_call *call, const char *name, size_t name_len,
                           const char *value, size_t value_len);
int zjuchat__reply_headers_end(zjuchat_call *call);
int zjuchat__reply_body(zjuchat_call *call, char *ptr, size_t len);
/* The same steps as libcurl's CURLOPT_HEADERFUNCTION and WRITEFUNCTION. */
size_t zjuchat__reply_header_cb(char *ptr, size_t size, size_t n, void *userdata);
size_t zjuchat__reply_write_cb(char *ptr, size_t size, size_t n, void *userdata);

/* sse_policy.c: the SSE parser's event callback (zjuchat__sse_event_fn). */
int zjuchat__call_on_sse_event(void *userdata, const char *event, const char *data,
                               size_t len);

/* outcome.c */
/* libcurl says the attempt is over (outside every callback). */
void zjuchat__attempt_done(zjuchat_call *call, CURLcode rc);
/* A transport says the attempt is over (outside every callback): failed
 * with *transport_err (our words, already redacted), or NULL when the whole
 * answer came in. */
void zjuchat__attempt_ended(zjuchat_call *call, const zjuchat_error *transport_err);
/* The upstream answered with an error status: fill e from call->buf (its
 * error body, which is redacted here). */
void zjuchat__call_api_error(zjuchat_call *call, zjuchat_error *e);

#endif
