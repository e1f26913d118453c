/*
 * transport.c - upstream calls: libcurl's multi-socket API driven by a
 * libevent event_base, with the library's own timers, retries, SSE parsing,
 * backpressure and error mapping. Both the blocking and the evented front
 * doors end up here, so there is one code path for every call.
 *
 * Re-entrancy rule: libcurl forbids curl_multi_* calls from inside its own
 * callbacks, and user callbacks (on_chunk, on_accepted) run inside them. So a
 * call never ends while libcurl or a user callback is on the stack: the end
 * is recorded in call->pending, libcurl is told to abort (a write or header
 * callback returning 0), and the call is finished from the event loop.
 */
#include "internal.h"
#include "sse.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define ERROR_BODY_CAP (64 * 1024) /* an error page needs no more */
#define RETRY_AFTER_CAP_MS 30000
#define BACKOFF_CAP_MS 8000

enum wake_kind { WAKE_NONE, WAKE_START, WAKE_RETRY, WAKE_FINISH };

/* One libcurl multi handle and its timer. A transfer joins the first shard
 * with fewer than ZJUCHAT__SHARD_STREAMS transfers, so a shard never holds
 * much more than that many connections and libcurl's per-transfer walk of
 * its connection cache stays short (measured: with 4,000 streams on one
 * multi handle, that walk and Curl_conncache_extract_oldest were 8% of the
 * server's CPU and made first events wait 170-930 ms during the ramp). */
struct zjuchat__shard {
    zjuchat_client *client;
    CURLM *multi;
    struct event *timer;
    int running; /* transfers in this multi handle */
    int touched; /* on client->touched: entered since process_done looked */
    struct zjuchat__shard *next_touched;
    struct timespec idle_since; /* when running last dropped to 0 */
};

/* A shard above the first that has carried no transfer for this long is
 * freed with its idle connections: after a burst of thousands of streams,
 * first-fit sends lighter load to the lower shards, and the upper ones would
 * otherwise hold their kept-alive sockets (up to 128 each) for ever. */
#define SHARD_IDLE_MS 60000
enum phase { PHASE_FIRST_BYTE, PHASE_IDLE };

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
    CURL *easy;
    /* easy has carried a transfer: replaced before the next (fresh_easy) */
    int easy_used;
    struct zjuchat__shard *shard; /* set while the easy handle is in a multi */
    char errbuf[CURL_ERROR_SIZE];

    /* State of the current attempt. */
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
    zjuchat_response *resp;
    unsigned rng;
    int error_body_ok;      /* on_done: buf is the upstream's error body */
    int error_body_dropped; /* it hid the key where it cannot be masked */
};

/* ---------------------------------------------------------------- */
/* small helpers                                                    */
/* ---------------------------------------------------------------- */

static long ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)((now.tv_sec - t0->tv_sec) * 1000 +
                  (now.tv_nsec - t0->tv_nsec) / 1000000);
}

static void add_timer_ms(struct event *ev, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

static void set_pending(zjuchat_call *call, zjuchat_code code, zjuchat_detail detail,
                        const char *msg)
{
    if (call->has_pending)
        return; /* the first reason wins */
    zjuchat__error_set(&call->pending, code, detail, "%s", msg);
    call->has_pending = 1;
    call->abort = 1;
}

static void process_done(zjuchat_client *client);
static struct zjuchat__shard *pick_shard(zjuchat_client *client);

/* Bracket every libcurl call that may run callbacks. */
static void curl_enter(struct zjuchat__shard *shard)
{
    zjuchat_client *client = shard->client;
    if (!shard->touched) {
        shard->touched = 1;
        shard->next_touched = client->touched;
        client->touched = shard;
    }
    client->in_curl++;
}

static void curl_leave(zjuchat_client *client)
{
    if (--client->in_curl == 0)
        process_done(client);
}

/* ---------------------------------------------------------------- */
/* ending a call                                                    */
/* ---------------------------------------------------------------- */

static void detach_easy(zjuchat_call *call)
{
    if (call->shard) {
        long n = 0;
        if (curl_easy_getinfo(call->easy, CURLINFO_NUM_CONNECTS, &n) == CURLE_OK)
            call->client->connections_opened += n;
        curl_multi_remove_handle(call->shard->multi, call->easy);
        if (--call->shard->running == 0)
            clock_gettime(CLOCK_MONOTONIC, &call->shard->idle_since);
        call->shard = NULL;
    }
}

static void call_free(zjuchat_call *call)
{
    zjuchat_client *client = call->client;
    if (call->prev)
        call->prev->next = call->next;
    else
        client->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    detach_easy(call);
    /* Not kept for the next call, cheap as that would be (7k instructions,
     * a 6 KB calloc): see fresh_easy. */
    if (call->easy)
        curl_easy_cleanup(call->easy);
    if (call->phase_timer)
        event_free(call->phase_timer);
    if (call->total_timer)
        event_free(call->total_timer);
    if (call->wake)
        event_free(call->wake);
    zjuchat__sse_free(call->sse);
    zjuchat_response_free(call->resp);
    free(call->buf);
    free(call->body);
    free(call->url);
    free(call);
}

/* End the call with err (copied). Deferred while libcurl or a user callback
 * is on the stack; then on_done runs from the loop. */
static void call_finish(zjuchat_call *call, const zjuchat_error *err)
{
    if (call->finished)
        return;
    if (call->client->in_curl || call->in_callback) {
        if (!call->has_pending) {
            call->pending = *err;
            call->has_pending = 1;
        }
        call->abort = 1;
        call->wake_kind = WAKE_FINISH;
        event_active(call->wake, EV_TIMEOUT, 0);
        return;
    }
    call->finished = 1;
    zjuchat_error final = *err;
    /* The last gate: no message leaves with the key in it. */
    zjuchat_redact(final.message, strlen(final.message), call->client->api_key);
    detach_easy(call);
    evtimer_del(call->phase_timer);
    evtimer_del(call->total_timer);
    evtimer_del(call->wake);
    call->stats.http_status = call->status;
    call->error_body_ok = final.code == ZJUCHAT_ERR_API && !call->error_body_dropped;
    call->cb.on_done(call, &final, final.code == ZJUCHAT_OK ? call->resp : NULL,
                     call->userdata);
    call_free(call);
}

static void finish_code(zjuchat_call *call, zjuchat_code code, zjuchat_detail detail,
                        const char *msg)
{
    zjuchat_error e;
    zjuchat__error_set(&e, code, detail, "%s", msg);
    call_finish(call, &e);
}

/* ---------------------------------------------------------------- */
/* attempts and retries                                             */
/* ---------------------------------------------------------------- */

static void reset_attempt(zjuchat_call *call)
{
    call->status = 0;
    call->headers_done = 0;
    call->accepted = 0;
    call->content_type[0] = '\0';
    call->retry_after_ms = -1;
    call->buf_len = 0;
    call->error_body_dropped = 0;
    call->saw_done = call->saw_finish = 0;
    call->abort = 0;
    if (call->sse)
        zjuchat__sse_reset(call->sse);
}

static int setup_easy(zjuchat_call *call);
static CURL *fresh_easy(void);

static int start_attempt(zjuchat_call *call, zjuchat_error *err)
{
    zjuchat_client *client = call->client;
    if (call->easy_used) { /* a retry: never a second transfer on one handle */
        curl_easy_cleanup(call->easy);
        call->easy = fresh_easy();
        if (!call->easy || setup_easy(call)) {
            zjuchat__nomem(err);
            return -1;
        }
    }
    call->easy_used = 1;
    reset_attempt(call);
    clock_gettime(CLOCK_MONOTONIC, &call->attempt_start);
    call->phase = PHASE_FIRST_BYTE;
    if (client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE] > 0)
        add_timer_ms(call->phase_timer,
                     client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE]);
    struct zjuchat__shard *shard = pick_shard(client);
    CURLMcode mc =
        shard ? curl_multi_add_handle(shard->multi, call->easy) : CURLM_OUT_OF_MEMORY;
    if (mc != CURLM_OK) {
        evtimer_del(call->phase_timer);
        zjuchat__error_set(
            err, mc == CURLM_OUT_OF_MEMORY ? ZJUCHAT_ERR_NOMEM : ZJUCHAT_ERR_INVALID,
            ZJUCHAT_DETAIL_NONE, "cannot start transfer: %s", curl_multi_strerror(mc));
        return -1;
    }
    call->shard = shard;
    shard->running++;
    return 0;
}

static int retryable(const zjuchat_error *e)
{
    if (e->code == ZJUCHAT_ERR_NETWORK && e->detail == ZJUCHAT_NET_CONNECT)
        return 1;
    if (e->code == ZJUCHAT_ERR_TIMEOUT && e->detail == ZJUCHAT_TIMEOUT_CONNECT)
        return 1;
    if (e->code == ZJUCHAT_ERR_API)
        return e->http_status == 429 || (e->http_status >= 500 && e->http_status <= 599);
    return 0;
}

/* Delay before the next attempt, or -1 when Retry-After asks too much. */
static long retry_delay_ms(zjuchat_call *call, const zjuchat_error *e)
{
    if (e->retry_after_ms >= 0)
        return e->retry_after_ms <= RETRY_AFTER_CAP_MS ? e->retry_after_ms : -1;
    long cap = call->client->retry_base_ms
               << (call->stats.retries < 16 ? call->stats.retries : 16);
    if (cap > BACKOFF_CAP_MS || cap <= 0)
        cap = BACKOFF_CAP_MS;
    /* "Equal jitter": half fixed, half random, so attempts still back off. */
    return cap / 2 + (long)(rand_r(&call->rng) % (unsigned)(cap / 2 + 1));
}

/* A wait fits the budget when it ends within retry_budget_ms of the call's
 * start: the attempts so far count too, since the caller waits through them
 * as well, and the sum of the waits can never exceed the budget. A delay
 * that does not fit is not shortened (a Retry-After is the upstream's
 * demand): the call ends now with the error, its retry_after_ms kept for
 * the caller to pass on. */
static int fits_retry_budget(zjuchat_call *call, long delay)
{
    long budget = call->client->retry_budget_ms;
    return budget > 0 && delay <= budget - ms_since(&call->start);
}

static void attempt_failed(zjuchat_call *call, const zjuchat_error *e)
{
    zjuchat_client *client = call->client;
    if (!call->accepted && retryable(e) && call->stats.retries < client->max_retries) {
        long delay = retry_delay_ms(call, e);
        if (delay >= 0 && fits_retry_budget(call, delay)) {
            detach_easy(call);
            evtimer_del(call->phase_timer);
            call->stats.retries++;
            call->wake_kind = WAKE_RETRY;
            add_timer_ms(call->wake, delay);
            return;
        }
    }
    call_finish(call, e);
}

static void map_curl_error(zjuchat_call *call, CURLcode rc, zjuchat_error *e)
{
    zjuchat_code code = ZJUCHAT_ERR_NETWORK;
    zjuchat_detail detail = ZJUCHAT_DETAIL_NONE;
    const char *what = "upstream transfer failed";
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        detail = ZJUCHAT_NET_DNS;
        what = "cannot resolve upstream host";
        break;
    case CURLE_COULDNT_CONNECT:
        detail = ZJUCHAT_NET_CONNECT;
        what = "cannot connect to upstream";
        break;
    case CURLE_OPERATION_TIMEDOUT:
        /* No CURLOPT_TIMEOUT is ever set, so curl only times out connects. */
        code = ZJUCHAT_ERR_TIMEOUT;
        detail = ZJUCHAT_TIMEOUT_CONNECT;
        what = "connecting to upstream timed out";
        break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
        detail = ZJUCHAT_NET_TLS;
        what = "TLS with upstream failed";
        break;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        detail = ZJUCHAT_NET_RESET;
        what = call->accepted ? "upstream connection closed mid-reply"
                              : "upstream closed the connection";
        break;
    case CURLE_OUT_OF_MEMORY:
        code = ZJUCHAT_ERR_NOMEM;
        what = "out of memory";
        break;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        code = ZJUCHAT_ERR_CONFIG;
        what = "bad upstream URL";
        break;
    default:
        break;
    }
    zjuchat__error_set(e, code, detail, "%s: %s", what,
                       call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc));
    zjuchat_redact(e->message, strlen(e->message), call->client->api_key);
}

/* The error body is handed out (zjuchat_call_error_body), so a key that
 * hides behind JSON escapes is masked too, as in a 2xx body. When it cannot
 * be (the body is not valid JSON past the escaped key), the body is dropped:
 * err->message still says what happened. */
static void mask_escaped_key(zjuchat_call *call)
{
    zjuchat__scan scan;
    const char *key = call->client->api_key;
    if (!call->buf || !memchr(call->buf, '\\', call->buf_len) ||
        zjuchat__scan_json(call->buf, call->buf_len, key, &scan) == -2 ||
        !scan.secret_seen)
        return;
    size_t clean_len = 0;
    json_t *json = json_loadb(call->buf, call->buf_len, JSON_ALLOW_NUL, NULL);
    char *clean =
        json ? zjuchat__redact_json(call->buf, call->buf_len, json, key, &clean_len)
             : NULL;
    json_decref(json);
    free(call->buf);
    call->buf = clean;
    call->buf_len = call->buf_cap = clean ? clean_len : 0;
    call->error_body_dropped = clean == NULL;
}

static void api_error(zjuchat_call *call, zjuchat_error *e)
{
    zjuchat_redact(call->buf, call->buf_len, call->client->api_key);
    if (call->buf_len >= ERROR_BODY_CAP) /* a key may straddle the cap */
        zjuchat__redact_tail(call->buf, call->buf_len, call->client->api_key);
    zjuchat__error_set(e, ZJUCHAT_ERR_API, ZJUCHAT_DETAIL_NONE, "%s", "");
    zjuchat__api_message(call->buf, call->buf_len, call->content_type, call->status,
                         call->client->api_key, e->message, sizeof e->message);
    e->http_status = call->status;
    e->retry_after_ms = call->retry_after_ms;
    mask_escaped_key(call); /* after the message: it reads the whole body */
}

/* libcurl says the attempt is over (outside every callback). */
static void attempt_done(zjuchat_call *call, CURLcode rc)
{
    zjuchat_error e;
    if (call->has_pending) {
        call_finish(call, &call->pending);
        return;
    }
    if (rc != CURLE_OK) {
        map_curl_error(call, rc, &e);
        attempt_failed(call, &e);
        return;
    }
    if (!call->accepted) {
        api_error(call, &e);
        attempt_failed(call, &e);
        return;
    }
    if (call->stream) {
        if (!call->saw_done && !call->saw_finish) {
            finish_code(call, ZJUCHAT_ERR_PROTOCOL, ZJUCHAT_DETAIL_NONE,
                        "upstream stream ended before [DONE]");
            return;
        }
        finish_code(call, ZJUCHAT_OK, ZJUCHAT_DETAIL_NONE, "success");
        return;
    }
    zjuchat_redact(call->buf, call->buf_len, call->client->api_key);
    zjuchat__scan scan;
    const char *body = call->buf ? call->buf : "";
    if (zjuchat__scan_json(body, call->buf_len, call->client->api_key, &scan) == -2) {
        finish_code(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE, "out of memory");
        return;
    }
    if (!scan.valid || !scan.is_object) {
        finish_code(call, ZJUCHAT_ERR_PROTOCOL, ZJUCHAT_DETAIL_NONE,
                    "upstream answered 2xx with a body that is not a JSON object");
        return;
    }
    json_t *json = NULL;
    if (scan.secret_seen) {
        /* Rare: the key hides behind JSON escapes. Rebuild the body. */
        size_t clean_len;
        json = json_loadb(body, call->buf_len, JSON_ALLOW_NUL, NULL);
        char *clean = zjuchat__redact_json(call->buf, call->buf_len, json,
                                           call->client->api_key, &clean_len);
        if (clean) {
            free(call->buf);
            call->buf = clean;
            call->buf_len = call->buf_cap = clean_len;
        }
    }
    call->resp =
        zjuchat__response_new(call->buf, call->buf_len, call->status, json, &scan);
    if (!call->resp) {
        json_decref(json);
        finish_code(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE, "out of memory");
        return;
    }
    call->buf = NULL; /* now owned by the response */
    call->buf_len = call->buf_cap = 0;
    finish_code(call, ZJUCHAT_OK, ZJUCHAT_DETAIL_NONE, "success");
}

/* Only the shards entered since the last pass can hold finished transfers:
 * one per socket event, not a walk over every shard. */
static void process_done(zjuchat_client *client)
{
    struct zjuchat__shard *shard;
    while ((shard = client->touched) != NULL) {
        client->touched = shard->next_touched;
        shard->touched = 0;
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(shard->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            zjuchat_call *call = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
            CURLcode rc = msg->data.result;
            if (call && !call->finished)
                attempt_done(call, rc);
        }
    }
}

/* ---------------------------------------------------------------- */
/* libcurl callbacks (no curl_multi_* calls in here)                */
/* ---------------------------------------------------------------- */

static int append(zjuchat_call *call, const char *p, size_t len, size_t cap)
{
    if (call->buf_len + len > cap)
        return -1;
    if (call->buf_len + len + 1 > call->buf_cap) {
        size_t want = call->buf_cap ? call->buf_cap * 2 : 4096;
        while (want < call->buf_len + len + 1)
            want *= 2;
        if (want > cap + 1)
            want = cap + 1;
        char *nb = realloc(call->buf, want);
        if (!nb)
            return -2;
        call->buf = nb;
        call->buf_cap = want;
    }
    memcpy(call->buf + call->buf_len, p, len);
    call->buf_len += len;
    call->buf[call->buf_len] = '\0';
    return 0;
}

/* Runs on_chunk; ZJUCHAT_STOP ends the call as cancelled. Returns what the
 * SSE parser should: non-zero to stop parsing. */
static int deliver_chunk(zjuchat_call *call, zjuchat_chunk *chunk)
{
    int r = 0;
    if (call->cb.on_chunk) {
        call->in_callback++;
        r = call->cb.on_chunk(call, chunk, call->userdata);
        call->in_callback--;
    }
    json_decref(chunk->json); /* built by an accessor, if one asked */
    chunk->json = NULL;
    if (r == ZJUCHAT_STOP)
        set_pending(call, ZJUCHAT_ERR_CANCELLED, ZJUCHAT_DETAIL_NONE,
                    "stream stopped by the caller");
    return call->abort ? 1 : 0;
}

static int on_sse_event(void *userdata, const char *event, const char *data, size_t len)
{
    zjuchat_call *call = userdata;
    if (call->saw_done)
        return 0; /* nothing after [DONE] counts */
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        call->saw_done = 1;
        call->stats.saw_done = 1;
        /* A relay that speaks OpenAI's protocol forwards the marker. */
        zjuchat_chunk done = {data, len, NULL, 0, {0}, 1};
        return call->pass_done ? deliver_chunk(call, &done) : 0;
    }
    /* The parser hands out its own buffer or libcurl's receive buffer, both
     * writable: redact in place so no copy of the event is needed. */
    zjuchat_redact((char *)data, len, call->client->api_key);
    zjuchat_chunk chunk = {data, len, NULL, 0, {0}, 0};
    if (zjuchat__scan_json(data, len, call->client->api_key, &chunk.scan) == -2) {
        set_pending(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE, "out of memory");
        return 1;
    }
    if (!chunk.scan.valid || !chunk.scan.is_object) {
        call->stats.skipped++;
        return 0;
    }
    if (chunk.scan.finish)
        call->saw_finish = 1;
    call->stats.events++;
    char *clean = NULL;
    if (chunk.scan.secret_seen) {
        /* Rare: the key hides behind JSON escapes. Rebuild the event. */
        size_t clean_len = 0;
        chunk.json = json_loadb(data, len, JSON_ALLOW_NUL, NULL);
        chunk.parsed = 1;
        clean = zjuchat__redact_json(data, len, chunk.json, call->client->api_key,
                                     &clean_len);
        if (clean) {
            chunk.data = clean;
            chunk.len = clean_len;
        }
    }
    int r = deliver_chunk(call, &chunk);
    free(clean);
    return r;
}

static void headers_complete(zjuchat_call *call)
{
    zjuchat_client *client = call->client;
    call->headers_done = 1;
    call->stats.http_status = call->status;
    call->stats.first_byte_ms = ms_since(&call->attempt_start);
    evtimer_del(call->phase_timer);
    call->phase = PHASE_IDLE;
    if (client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE] > 0 && !call->paused)
        add_timer_ms(call->phase_timer, client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE]);
    if (call->status < 200 || call->status > 299)
        return; /* an error: its body is collected, then reported */
    if (call->stream && strncasecmp(call->content_type, "text/event-stream", 17) != 0) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "upstream answered a stream request with Content-Type \"%s\", "
                 "not text/event-stream",
                 call->content_type);
        set_pending(call, ZJUCHAT_ERR_PROTOCOL, ZJUCHAT_DETAIL_NONE, msg);
        return;
    }
    call->accepted = 1;
    if (call->cb.on_accepted) {
        call->in_callback++;
        call->cb.on_accepted(call, call->userdata);
        call->in_callback--;
    }
}

static long parse_retry_after(const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v >= '0' && *v <= '9') {
        char *end;
        long s = strtol(v, &end, 10);
        return s > 86400 ? 86400L * 1000 : s * 1000;
    }
    time_t when = curl_getdate(v, NULL);
    if (when < 0)
        return -1;
    time_t now = time(NULL);
    return when > now ? (long)(when - now) * 1000 : 0;
}

static size_t header_cb(char *ptr, size_t size, size_t n, void *userdata)
{
    zjuchat_call *call = userdata;
    size_t len = size * n;
    if (call->abort)
        return 0;
    /* Header values end up in error messages: mask an echoed key first. */
    zjuchat_redact(ptr, len, call->client->api_key);
    if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        /* A new status line: an interim 1xx may come before the real one. */
        const char *sp = memchr(ptr, ' ', len);
        call->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        call->content_type[0] = '\0';
        call->retry_after_ms = -1;
        return len;
    }
    if (len <= 2 && (ptr[0] == '\r' || ptr[0] == '\n')) {
        if (call->status >= 200 || call->status == 0)
            headers_complete(call);
        return call->abort ? 0 : len;
    }
    char line[256];
    size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, ptr, l);
    while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == '\n'))
        l--;
    line[l] = '\0';
    if (strncasecmp(line, "content-type:", 13) == 0) {
        const char *v = line + 13;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strnlen(v, sizeof call->content_type - 1);
        memcpy(call->content_type, v, vl);
        call->content_type[vl] = '\0';
    } else if (strncasecmp(line, "retry-after:", 12) == 0) {
        call->retry_after_ms = parse_retry_after(line + 12);
    }
    return len;
}

static size_t write_cb(char *ptr, size_t size, size_t n, void *userdata)
{
    zjuchat_call *call = userdata;
    zjuchat_client *client = call->client;
    size_t len = size * n;
    if (call->abort)
        return 0;
    if (call->phase == PHASE_IDLE && !call->paused &&
        client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE] > 0)
        add_timer_ms(call->phase_timer, client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE]);
    if (!call->accepted) {
        /* Error body: keep the head, stop reading once it is capped. */
        size_t room = call->buf_len < ERROR_BODY_CAP ? ERROR_BODY_CAP - call->buf_len : 0;
        if (append(call, ptr, len < room ? len : room, ERROR_BODY_CAP) == -2) {
            set_pending(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE, "out of memory");
            return 0;
        }
        if (len > room) {
            zjuchat_error e;
            api_error(call, &e);
            call->pending = e;
            call->has_pending = 1;
            call->abort = 1;
            return 0;
        }
        return len;
    }
    if (!call->stream) {
        int r = append(call, ptr, len, client->max_body);
        if (r) {
            char msg[120];
            snprintf(msg, sizeof msg, "upstream response exceeds %zu bytes",
                     client->max_body);
            set_pending(call, r == -2 ? ZJUCHAT_ERR_NOMEM : ZJUCHAT_ERR_PROTOCOL,
                        ZJUCHAT_DETAIL_NONE, r == -2 ? "out of memory" : msg);
            return 0;
        }
        return len;
    }
    int r = zjuchat__sse_feed(call->sse, ptr, len);
    if (r == ZJUCHAT__SSE_TOO_LONG)
        set_pending(call, ZJUCHAT_ERR_PROTOCOL, ZJUCHAT_DETAIL_NONE,
                    "upstream event or line exceeds the size limit");
    else if (r == ZJUCHAT__SSE_NOMEM)
        set_pending(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE, "out of memory");
    return call->abort ? 0 : len;
}

/* ---------------------------------------------------------------- */
/* libevent side of the multi-socket API                            */
/* ---------------------------------------------------------------- */

/* One libcurl socket as libevent sees it. libcurl drops a kept-alive
 * socket from its interest list at the end of every transfer and asks for it
 * again at the start of the next: two epoll_ctl calls per request for
 * nothing. So a dropped socket that was only being read stays registered,
 * "parked"; the next request's interest costs no system call. Found by fd
 * (libcurl forgets its per-socket pointer on removal); freed when libcurl
 * closes the socket, through the close callback. */
struct zjuchat__sock {
    struct event *ev;
    struct zjuchat__shard *shard;
    short kind;   /* what ev is registered for; 0 when not registered */
    int parked;   /* libcurl has no interest; ev may still be registered */
    int parkable; /* a connection socket: libcurl closes it through
                     close_socket_cb, which drops the registration first */
};

static struct zjuchat__sock *sock_lookup(zjuchat_client *client, curl_socket_t fd)
{
    return fd >= 0 && fd < client->socks_cap ? client->socks[fd] : NULL;
}

static void sock_drop(zjuchat_client *client, curl_socket_t fd)
{
    struct zjuchat__sock *sc = sock_lookup(client, fd);
    if (!sc)
        return;
    event_free(sc->ev);
    free(sc);
    client->socks[fd] = NULL;
}

static int sock_slot(zjuchat_client *client, curl_socket_t fd)
{
    if (fd < client->socks_cap)
        return 0;
    int cap = client->socks_cap ? client->socks_cap : 64;
    while (cap <= fd)
        cap *= 2;
    struct zjuchat__sock **grown = realloc(client->socks, (size_t)cap * sizeof *grown);
    if (!grown)
        return -1;
    memset(grown + client->socks_cap, 0,
           (size_t)(cap - client->socks_cap) * sizeof *grown);
    client->socks = grown;
    client->socks_cap = cap;
    return 0;
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct zjuchat__sock *sc = arg;
    struct zjuchat__shard *shard = sc->shard;
    if (sc->parked) {
        /* An idle keep-alive socket became readable: the upstream closed it
         * (or sent junk). libcurl finds out when it next looks at it; until
         * then stop the level-triggered wake-ups. */
        event_del(sc->ev);
        sc->kind = 0;
        return;
    }
    int flags = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
                ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    curl_enter(shard);
    curl_multi_socket_action(shard->multi, fd, flags, &running); /* may free sc */
    curl_leave(shard->client);
}

static void on_curl_timer(evutil_socket_t fd, short what, void *arg)
{
    struct zjuchat__shard *shard = arg;
    int running;
    curl_enter(shard);
    curl_multi_socket_action(shard->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    curl_leave(shard->client);
}

static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct zjuchat__shard *shard = userp;
    zjuchat_client *client = shard->client;
    struct zjuchat__sock *sc = sock_lookup(client, s);
    if (what == CURL_POLL_REMOVE) {
        if (!sc)
            return 0;
        /* Only sockets libcurl opened through open_socket_cb may stay
         * registered: the others (the threaded resolver's socketpair) are
         * closed by libcurl without a callback, and a registration left on
         * a closed descriptor makes libevent skip the next socket that gets
         * its number (the server's next client was never read). */
        if (sc->parkable && sc->kind == (EV_PERSIST | EV_READ)) {
            sc->parked = 1; /* see struct zjuchat__sock */
            return 0;
        }
        sock_drop(client, s);
        return 0;
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                 ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (!sc) {
        if (sock_slot(client, s))
            return -1;
        sc = calloc(1, sizeof *sc);
        if (!sc)
            return -1;
        sc->ev = event_new(client->base, s, kind, on_socket_event, sc);
        if (!sc->ev) {
            free(sc);
            return -1;
        }
        client->socks[s] = sc;
    } else if (sc->kind == kind && sc->shard == shard) {
        sc->parked = 0; /* still registered as wanted: nothing to tell epoll */
        return 0;
    } else {
        event_del(sc->ev);
        event_assign(sc->ev, client->base, s, kind, on_socket_event, sc);
    }
    sc->shard = shard;
    sc->parked = 0;
    sc->kind = kind;
    event_add(sc->ev, NULL);
    return 0;
}

/* libcurl opens its connection sockets here (CURLOPT_OPENSOCKETFUNCTION):
 * noted as parkable, since their close comes through close_socket_cb. */
static curl_socket_t open_socket_cb(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *addr)
{
    zjuchat_client *client = clientp;
    curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
    if (fd == CURL_SOCKET_BAD)
        return fd;
    struct zjuchat__sock *sc = NULL;
    if (sock_slot(client, fd) == 0 && (sc = calloc(1, sizeof *sc)) != NULL) {
        sc->ev = event_new(client->base, fd, 0, on_socket_event, sc);
        if (!sc->ev) {
            free(sc);
            sc = NULL;
        }
    }
    if (!sc) { /* unparkable is only slower: carry on without */
        return fd;
    }
    sock_drop(client, fd); /* a stale entry for a number reused behind our back */
    sc->parkable = 1;
    client->socks[fd] = sc;
    return fd;
}

/* libcurl closes its sockets here (CURLOPT_CLOSESOCKETFUNCTION): the event
 * goes before the descriptor, so that a parked registration never outlives
 * it and lands on a new socket that reuses the number. */
static int close_socket_cb(void *clientp, curl_socket_t fd)
{
    sock_drop(clientp, fd);
    return close(fd);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct zjuchat__shard *shard = userp;
    if (timeout_ms < 0)
        evtimer_del(shard->timer);
    else
        add_timer_ms(shard->timer, timeout_ms);
    return 0;
}

static void shard_free(struct zjuchat__shard *shard)
{
    if (shard->multi)
        curl_multi_cleanup(shard->multi);
    if (shard->timer)
        event_free(shard->timer);
    free(shard);
}

/* Frees the top shards that have been idle for shard_idle_ms; runs while
 * there is more than one shard. */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    zjuchat_client *client = arg;
    while (client->nshards > 1) {
        struct zjuchat__shard *top = client->shards[client->nshards - 1];
        if (top->running > 0 || top->touched ||
            ms_since(&top->idle_since) < client->shard_idle_ms)
            break;
        client->nshards--;
        shard_free(top); /* closes its connections through close_socket_cb */
    }
    if (client->nshards > 1)
        add_timer_ms(client->reaper, client->shard_idle_ms / 2 + 1);
}

void zjuchat__transport_set_shard_idle_ms(zjuchat_client *client, long ms)
{
    client->shard_idle_ms = ms > 0 ? ms : SHARD_IDLE_MS;
}

static struct zjuchat__shard *shard_new(zjuchat_client *client)
{
    struct zjuchat__shard *shard = calloc(1, sizeof *shard);
    if (!shard)
        return NULL;
    shard->client = client;
    shard->multi = curl_multi_init();
    shard->timer = evtimer_new(client->base, on_curl_timer, shard);
    if (!shard->multi || !shard->timer) {
        shard_free(shard);
        return NULL;
    }
    curl_multi_setopt(shard->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(shard->multi, CURLMOPT_SOCKETDATA, shard);
    curl_multi_setopt(shard->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(shard->multi, CURLMOPT_TIMERDATA, shard);
    curl_multi_setopt(shard->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
    /* Idle connections a burst of streams can come back to. Above this,
     * each finished transfer walks the whole cache for the oldest one. */
    curl_multi_setopt(shard->multi, CURLMOPT_MAXCONNECTS, (long)ZJUCHAT__SHARD_STREAMS);
    clock_gettime(CLOCK_MONOTONIC, &shard->idle_since);
    client->shards[client->nshards++] = shard;
    if (client->nshards == 2 && client->reaper)
        add_timer_ms(client->reaper, client->shard_idle_ms / 2 + 1);
    return shard;
}

/* The first shard with room, so that light load stays on one multi handle
 * and reuses its connections; a new shard when all are full; the least
 * loaded one at ZJUCHAT__SHARD_MAX. NULL only when none exists or can be
 * made. */
static struct zjuchat__shard *pick_shard(zjuchat_client *client)
{
    struct zjuchat__shard *least = NULL;
    for (int i = 0; i < client->nshards; i++) {
        struct zjuchat__shard *shard = client->shards[i];
        if (shard->running < ZJUCHAT__SHARD_STREAMS)
            return shard;
        if (!least || shard->running < least->running)
            least = shard;
    }
    if (client->nshards < ZJUCHAT__SHARD_MAX) {
        struct zjuchat__shard *fresh = shard_new(client);
        if (fresh)
            return fresh;
    }
    return least;
}

/* Per-call timers. */
static void on_phase_timer(evutil_socket_t fd, short what, void *arg)
{
    zjuchat_call *call = arg;
    if (call->phase == PHASE_FIRST_BYTE) {
        finish_code(call, ZJUCHAT_ERR_TIMEOUT, ZJUCHAT_TIMEOUT_FIRST_BYTE,
                    "upstream sent no response status in time");
    } else if (call->saw_done) {
        /* The answer is complete; the upstream only failed to end the body. */
        finish_code(call, ZJUCHAT_OK, ZJUCHAT_DETAIL_NONE, "success");
    } else if (!call->accepted && call->headers_done) {
        zjuchat_error e;
        api_error(call, &e);
        call_finish(call, &e);
    } else {
        finish_code(call, ZJUCHAT_ERR_TIMEOUT, ZJUCHAT_TIMEOUT_IDLE,
                    "upstream went silent mid-reply");
    }
}

static void on_total_timer(evutil_socket_t fd, short what, void *arg)
{
    finish_code(arg, ZJUCHAT_ERR_TIMEOUT, ZJUCHAT_TIMEOUT_TOTAL,
                "upstream call exceeded the total time limit");
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    zjuchat_call *call = arg;
    zjuchat_error e;
    switch (call->wake_kind) {
    case WAKE_START:
    case WAKE_RETRY:
        call->wake_kind = WAKE_NONE;
        if (start_attempt(call, &e))
            call_finish(call, &e);
        break;
    case WAKE_FINISH:
        call_finish(call, &call->pending);
        break;
    case WAKE_NONE:
        break;
    }
}

/* ---------------------------------------------------------------- */
/* public and internal entry points                                 */
/* ---------------------------------------------------------------- */

zjuchat_code zjuchat__transport_init(zjuchat_client *client, zjuchat_error *err)
{
    client->share = curl_share_init();
    client->reaper = evtimer_new(client->base, on_reap, client);
    if (!client->shard_idle_ms)
        client->shard_idle_ms = SHARD_IDLE_MS;
    if (!client->share || !client->reaper || !shard_new(client))
        return zjuchat__nomem(err);
    curl_share_setopt(client->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(client->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    return ZJUCHAT_OK;
}

void zjuchat__transport_free(zjuchat_client *client)
{
    zjuchat_error e;
    zjuchat__error_set(&e, ZJUCHAT_ERR_CANCELLED, ZJUCHAT_DETAIL_NONE,
                       "client freed while the call was running");
    client->in_curl = 0;
    while (client->calls) {
        zjuchat_call *call = client->calls;
        call->in_callback = 0;
        call_finish(call, &e);
    }
    if (client->reaper)
        event_free(client->reaper);
    client->reaper = NULL;
    client->touched = NULL;
    while (client->nshards > 0)
        shard_free(client->shards[--client->nshards]);
    /* libcurl closed every connection above, through close_socket_cb. */
    for (int fd = 0; fd < client->socks_cap; fd++)
        sock_drop(client, fd);
    free(client->socks);
    client->socks = NULL;
    client->socks_cap = 0;
    if (client->share)
        curl_share_cleanup(client->share);
    client->share = NULL;
}

/* Every attempt gets a new easy handle, never one that has carried a
 * transfer. libcurl 7.88.1 (Debian 12's) keeps a pointer to the last
 * response header a handle stored (state.prevhead); the handle's next
 * transfer frees the stored headers but not that pointer, and a first
 * header line that is folded (starts with a space or tab) is appended to
 * it: a use after free driven by upstream bytes (curl issue #11101, fixed
 * in 8.1.0; docs/FAULTS.md, fuzz/regressions/fuzz_upstream/uaf-*). Only a
 * new handle has no such pointer; connections are the multi handle's and
 * are still reused. */
static CURL *fresh_easy(void)
{
    CURL *e = curl_easy_init();
    /* libcurl's receive buffer, 16 KB by default. 8 KB measured 1.1 KB less
     * resident memory per held stream (1,000 streams: 28.8 -> 27.8 MB);
     * events are far smaller, a long answer takes a few more reads.
     * Settable only before the handle's first transfer allocates it. */
    if (e)
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 8192L);
    return e;
}

static int setup_easy(zjuchat_call *call)
{
    zjuchat_client *client = call->client;
    CURL *e = call->easy;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, call->url);
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)call);
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER,
                            call->stream ? client->headers_stream : client->headers_json);
    if (call->body) {
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body);
        bad |=
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
    } else {
        bad |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, client);
    bad |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket_cb);
    bad |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, client);
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    bad |= curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    bad |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "libzjuchat/0.1");
    bad |= curl_easy_setopt(e, CURLOPT_SHARE, client->share);
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    long connect_ms = client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_CONNECT];
    bad |=
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms > 0 ? connect_ms : 0L);
    /* Debian's libcurl has a CA path compiled in, which disables the CA store
     * cache: every handshake would reload the store (docs/STACK.md pitfall 7). */
    curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
    if (client->ca_file)
        bad |= curl_easy_setopt(e, CURLOPT_CAINFO, client->ca_file);
    if (client->insecure) {
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    return bad ? -1 : 0;
}

zjuchat_call *zjuchat__call_start(zjuchat_client *client, const char *path,
                                  char *body_steal, size_t body_len, unsigned flags,
                                  const zjuchat_callbacks *cb, void *userdata,
                                  zjuchat_error *err)
{
    int stream = (flags & ZJUCHAT_CALL_STREAM) != 0;
    if (!cb || !cb->on_done) {
        free(body_steal);
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "on_done callback is required");
        return NULL;
    }
    zjuchat_call *call = calloc(1, sizeof *call);
    if (!call) {
        free(body_steal);
        zjuchat__nomem(err);
        return NULL;
    }
    call->client = client;
    call->cb = *cb;
    call->userdata = userdata;
    call->stream = stream;
    call->pass_done = stream && (flags & ZJUCHAT_CALL_PASS_DONE);
    call->body = body_steal;
    call->body_len = body_len;
    call->stats.first_byte_ms = -1;
    /* Jitter only needs calls to differ, not secrecy: no getpid() syscall. */
    call->rng = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)call ^
                (client->calls_started++ * 2654435761u);
    size_t ulen = strlen(client->base_url) + strlen(path) + 1;
    call->url = malloc(ulen);
    call->easy = fresh_easy();
    call->phase_timer = evtimer_new(client->base, on_phase_timer, call);
    call->total_timer = evtimer_new(client->base, on_total_timer, call);
    call->wake = evtimer_new(client->base, on_wake, call);
    if (stream)
        call->sse = zjuchat__sse_new(0, 0, on_sse_event, call);
    /* Link first so call_free can unlink. */
    call->next = client->calls;
    if (client->calls)
        client->calls->prev = call;
    client->calls = call;
    if (!call->url || !call->easy || !call->phase_timer || !call->total_timer ||
        !call->wake || (stream && !call->sse)) {
        call_free(call);
        zjuchat__nomem(err);
        return NULL;
    }
    snprintf(call->url, ulen, "%s%s", client->base_url, path);
    if (setup_easy(call)) {
        call_free(call);
        zjuchat__error_set(err, ZJUCHAT_ERR_CONFIG, ZJUCHAT_DETAIL_NONE,
                           "libcurl refused an option (is it built with HTTPS?)");
        return NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &call->start);
    if (client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_TOTAL] > 0)
        add_timer_ms(call->total_timer, client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_TOTAL]);
    if (client->in_curl) {
        /* Started from inside a callback: libcurl may not be re-entered. */
        call->wake_kind = WAKE_START;
        event_active(call->wake, EV_TIMEOUT, 0);
        return call;
    }
    if (start_attempt(call, err)) {
        call_free(call);
        return NULL;
    }
    return call;
}

zjuchat_call *zjuchat_call_start(zjuchat_client *client, const zjuchat_request *req,
                                 int stream, const zjuchat_callbacks *cb, void *userdata,
                                 zjuchat_error *err)
{
    if (!client || !req || !client->evented) {
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "zjuchat_call_start needs a client bound to an event base "
                           "(zjuchat_client_use_event_base) and a request");
        return NULL;
    }
    char *body = zjuchat__request_body(req, stream);
    if (!body) {
        zjuchat__nomem(err);
        return NULL;
    }
    return zjuchat__call_start(client, "/chat/completions", body, strlen(body),
                               stream ? ZJUCHAT_CALL_STREAM : 0, cb, userdata, err);
}

zjuchat_response *zjuchat__call_take_response(zjuchat_call *call)
{
    zjuchat_response *r = call->resp;
    call->resp = NULL;
    return r;
}

void zjuchat_call_cancel(zjuchat_call *call)
{
    if (!call || call->finished)
        return;
    finish_code(call, ZJUCHAT_ERR_CANCELLED, ZJUCHAT_DETAIL_NONE,
                "call cancelled by the caller");
}

void zjuchat_call_pause(zjuchat_call *call)
{
    if (!call || call->finished || call->paused)
        return;
    call->paused = 1;
    /* A paused transfer is our choice, not upstream silence. */
    if (call->phase == PHASE_IDLE)
        evtimer_del(call->phase_timer);
    curl_easy_pause(call->easy, CURLPAUSE_RECV);
}

void zjuchat_call_resume(zjuchat_call *call)
{
    if (!call || call->finished || !call->paused)
        return;
    zjuchat_client *client = call->client;
    call->paused = 0;
    if (call->phase == PHASE_IDLE && client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE] > 0)
        add_timer_ms(call->phase_timer, client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE]);
    /* Unpausing may deliver buffered data right away, through write_cb. */
    if (!call->shard) {
        curl_easy_pause(call->easy, CURLPAUSE_CONT);
        return;
    }
    curl_enter(call->shard);
    curl_easy_pause(call->easy, CURLPAUSE_CONT);
    curl_leave(client);
}

void zjuchat_call_get_stats(const zjuchat_call *call, zjuchat_call_stats *out)
{
    if (call && out)
        *out = call->stats;
}

const char *zjuchat_call_error_body(const zjuchat_call *call, size_t *len)
{
    int ok = call && call->finished && call->error_body_ok;
    if (len)
        *len = ok ? call->buf_len : 0;
    if (!ok)
        return NULL;
    return call->buf ? call->buf : "";
}

const char *zjuchat_call_content_type(const zjuchat_call *call)
{
    return call ? call->content_type : "";
}
