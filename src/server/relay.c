/*
 * relay.c - the relay engine (relay.h): an evented upstream call
 * (zjuchat_call_start_raw) and its answer carried to one client, with
 * backpressure, heartbeats, cancellation and the dialect's framing. The
 * front reads the client's socket all along and tells the context when the
 * client leaves (ctx->on_gone), in any phase.
 */
#include "relay.h"
#include "call.h" /* the library's read-end hook: internal, linked statically */
#include "dialect.h"
#include "front.h"
#include "http_util.h"
#include "shared.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <zjuchat.h>

/* Above this many bytes waiting for a client, the upstream is paused. */
#define OUT_HIGH_WATER (64 * 1024)
/* A streaming client that accepts no byte for this long is dropped. */
#define STREAM_WRITE_TIMEOUT_S 120

typedef struct relay {
    srv_ctx *ctx;
    zjuchat_call *call;
    const char *abort_reason; /* set at the drain deadline */
    int stream;
    unsigned flags;       /* SRV_RELAY_* */
    size_t prompt_bytes;  /* the upstream body, for an estimate */
    size_t content_bytes; /* content and reasoning relayed, for an estimate */
    int accepted;         /* the upstream answered 2xx: it works on it, tokens count */
    int started;          /* stream reply headers sent */
    int paused;
    struct event *ping;       /* heartbeat timer */
    struct timeval last_send; /* loop time of the last piece, for the heartbeat */
    /* The events of one upstream read leave as one piece: the library says
     * when a read ended (coalesce); on a transport that cannot, an event
     * made active sends them once the read's callbacks are done (flush). */
    int coalesce;
    struct event *flush;
    /* The next piece of the reply: a plain buffer (an evbuffer's three
     * adds per event cost more than the event's JSON check: callgrind),
     * its room above OUT_KEEP freed once sent, so a held stream keeps
     * no burst's size. */
    char *out;
    size_t out_len, out_cap;
    struct timespec t0; /* the call's start, for the time to first token */
    int gauged;         /* counted in the metrics' streams in flight */
} relay;

static struct event_base *base_of(relay *r)
{
    return r->ctx->w->base;
}

static void stop_timers(relay *r)
{
    if (r->ping) {
        event_free(r->ping);
        r->ping = NULL;
    }
    if (r->flush) {
        event_free(r->flush);
        r->flush = NULL;
    }
}

static void relay_free(relay *r)
{
    stop_timers(r);
    free(r->out);
    free(r);
}

#define OUT_KEEP 1024

/* Room for n more bytes at the end of the next piece; NULL out of memory
 * (the bytes are then dropped: the stream misses them, as an evbuffer that
 * failed to grow did). */
static char *out_room(relay *r, size_t n)
{
    if (r->out_len + n > r->out_cap) {
        size_t cap = r->out_cap ? r->out_cap : 256;
        while (cap < r->out_len + n)
            cap *= 2;
        char *grown = realloc(r->out, cap);
        if (!grown)
            return NULL;
        r->out = grown;
        r->out_cap = cap;
    }
    return r->out + r->out_len;
}

static void out_add(relay *r, const char *p, size_t n)
{
    char *o = out_room(r, n);
    if (o) {
        memcpy(o, p, n);
        r->out_len += n;
    }
}

/* "data: <bytes>\n\n", with one check for room. */
static void out_event(relay *r, const char *data, size_t len)
{
    char *o = out_room(r, len + 8);
    if (o) {
        memcpy(o, "data: ", 6);
        memcpy(o + 6, data, len);
        memcpy(o + 6 + len, "\n\n", 2);
        r->out_len += len + 8;
    }
}

/* The piece went out (or was dropped with the request). */
static void out_clear(relay *r)
{
    r->out_len = 0;
    if (r->out_cap > OUT_KEEP) {
        free(r->out);
        r->out = NULL;
        r->out_cap = 0;
    }
}

static size_t pending_out(relay *r)
{
    return r->ctx->req ? srv_req_output_pending(r->ctx->req) : 0;
}

/* ---- the client's side ---- */

/* The client left before the reply ended: cancel the upstream call (its
 * on_done then only logs and frees). */
static void on_client_gone(srv_ctx *ctx)
{
    relay *r = ctx->handler_data;
    stop_timers(r);
    ctx->acc.status = SRV_STATUS_CLIENT_GONE;
    zjuchat_call_cancel(r->call);
}

/* The client caught up: resume the upstream. */
static void on_client_drained(srv_ctx *ctx)
{
    relay *r = ctx->handler_data;
    if (r->paused) {
        r->paused = 0;
        if (ctx->w->cfg->debug)
            srv_log("debug: client caught up, resuming upstream");
        zjuchat_call_resume(r->call);
    }
}

static void on_abort(srv_ctx *ctx, const char *reason)
{
    relay *r = ctx->handler_data;
    r->abort_reason = reason;
    zjuchat_call_cancel(r->call);
}

/* Arm the heartbeat to fire ms from now. Re-arming it on every piece cost a
 * timer-heap update per relayed event; instead the timer fires on schedule
 * and re-arms itself for the rest of the period when pieces went out
 * meanwhile (see on_ping). */
static void arm_ping_in(relay *r, long ms)
{
    if (!r->ping)
        return;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(r->ping, &tv);
}

static long ms_since_send(relay *r)
{
    struct timeval now, since;
    event_base_gettimeofday_cached(base_of(r), &now);
    timersub(&now, &r->last_send, &since);
    return since.tv_sec * 1000L + since.tv_usec / 1000;
}

static void arm_ping(relay *r)
{
    long left = r->ctx->w->cfg->heartbeat_ms - ms_since_send(r);
    arm_ping_in(r, left < 1 ? 1 : left);
}

/* Send what is in r->out as one piece of the reply; pause the upstream
 * above high water. */
static void send_out(relay *r)
{
    r->ctx->acc.bytes += r->out_len;
    srv_req_write(r->ctx->req, r->out, r->out_len);
    out_clear(r);
    event_base_gettimeofday_cached(base_of(r), &r->last_send);
    if (!r->paused && pending_out(r) > OUT_HIGH_WATER) {
        r->paused = 1;
        if (r->ctx->w->cfg->debug)
            srv_log("debug: client behind by %zu bytes, pausing upstream",
                    pending_out(r));
        zjuchat_call_pause(r->call);
    }
}

static void on_ping(evutil_socket_t fd, short what, void *arg)
{
    relay *r = arg;
    long period = r->ctx->w->cfg->heartbeat_ms;
    if (!r->ctx->req)
        return;
    if (ms_since_send(r) < period) {
        arm_ping(r); /* pieces went out meanwhile: wait out the rest */
        return;
    }
    if (pending_out(r) > 0) { /* the client is still behind: no need */
        arm_ping_in(r, period);
        return;
    }
    out_add(r, ": ping\n\n", 8);
    send_out(r);
    arm_ping(r);
}

/* Events that arrive in one upstream read leave as one HTTP chunk: fewer
 * chunk headers and writes, no added latency (same loop iteration). The
 * library tells the read's end; making an event active for it cost a
 * libevent activation and dispatch per event (callgrind). */
static void on_read_end(zjuchat_call *call, void *arg)
{
    relay *r = arg;
    if (!r->ctx->req)
        return;
    if (r->out_len > 0)
        send_out(r); /* with the head, if this read brought it */
    else
        srv_req_flush(r->ctx->req); /* the head alone: no event came with it */
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    on_read_end(NULL, arg);
}

/* ---- the upstream's side ---- */

static void on_accepted(zjuchat_call *call, void *arg)
{
    relay *r = arg;
    srv_ctx *ctx = r->ctx;
    r->accepted = 1;
    if (!r->stream || !ctx->req)
        return;
    srv_http_common_headers(ctx->req, ctx->w->cfg);
    srv_req_add_header(ctx->req, "Content-Type", "text/event-stream");
    srv_req_add_header(ctx->req, "Cache-Control", "no-cache");
    srv_req_add_header(ctx->req, "X-Accel-Buffering", "no");
    srv_req_start(ctx->req, 200);
    r->started = 1;
    ctx->acc.status = 200;
    const srv_shared *sh = srv_shared_get();
    if (sh) {
        srv_metrics_stream(sh->metrics, sh->slot, 1);
        r->gauged = 1;
    }
    /* A quiet stream is fine; a client that takes no byte for this long is
     * dropped (on_gone). */
    srv_req_set_write_timeout(ctx->req, STREAM_WRITE_TIMEOUT_S);
    int told = zjuchat__call_on_read_end(call, on_read_end) == 0;
    if (!told)
        r->flush = event_new(base_of(r), -1, 0, on_flush, r);
    r->coalesce = told || r->flush; /* else (OOM) each event goes at once */
    /* The head is held for the events of this read (srv_req_start). */
    if (!r->coalesce)
        srv_req_flush(ctx->req);
    else if (r->flush)
        event_active(r->flush, EV_TIMEOUT, 1);
    if (ctx->w->cfg->heartbeat_ms > 0) {
        r->ping = evtimer_new(base_of(r), on_ping, r);
        event_base_gettimeofday_cached(base_of(r), &r->last_send);
        arm_ping(r);
    }
}

static void note_usage(srv_access *acc, long p, long q, long t)
{
    acc->prompt_tokens = p;
    acc->completion_tokens = q;
    acc->total_tokens = t;
}

/* The time to first token: the first delta with content or reasoning. */
static void note_first_token(relay *r, const zjuchat_chunk *chunk)
{
    size_t n = 0, m = 0;
    if ((zjuchat_chunk_content(chunk, &n) && n > 0) ||
        (zjuchat_chunk_reasoning(chunk, &m) && m > 0)) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        r->ctx->acc.ttft_ms = (long)(now.tv_sec - r->t0.tv_sec) * 1000 +
                              (now.tv_nsec - r->t0.tv_nsec) / 1000000;
    }
}

/* The chunk include_usage adds at a stream's end: usage, no choice with
 * content, reasoning or a finish (upstreams that put usage on the finish
 * chunk keep it: that one goes to the client). */
static int usage_only(const zjuchat_chunk *chunk)
{
    return !zjuchat_chunk_content(chunk, NULL) && !zjuchat_chunk_reasoning(chunk, NULL) &&
           !zjuchat_chunk_finish_reason(chunk);
}

/* No usage came for an answer the upstream gave (an upstream that reports
 * none, a stream cut or left; a refused call costs nothing):
 * about four bytes a token, as OpenAI's rule of thumb for English; the
 * access record says it is an estimate. */
static void estimate_usage(relay *r)
{
    srv_access *acc = &r->ctx->acc;
    if (!(r->flags & SRV_RELAY_COUNT) || !r->accepted || acc->total_tokens >= 0)
        return;
    acc->prompt_tokens = (long)((r->prompt_bytes + 3) / 4);
    acc->completion_tokens = (long)((r->content_bytes + 3) / 4);
    acc->total_tokens = acc->prompt_tokens + acc->completion_tokens;
    acc->tokens_estimated = 1;
}

static int on_chunk(zjuchat_call *call, const zjuchat_chunk *chunk, void *arg)
{
    relay *r = arg;
    if (!r->ctx->req || !r->started)
        return ZJUCHAT_STOP;
    size_t len;
    const char *data = zjuchat_chunk_data(chunk, &len);
    long p, q, t;
    if (zjuchat_chunk_usage(chunk, &p, &q, &t) == 0) {
        note_usage(&r->ctx->acc, p, q, t);
        if ((r->flags & SRV_RELAY_HIDE_USAGE) && usage_only(chunk))
            return 0; /* asked for by the gateway, not by the client */
    }
    if (r->ctx->acc.ttft_ms < 0)
        note_first_token(r, chunk);
    if (r->flags & SRV_RELAY_COUNT)
        r->content_bytes += zjuchat_chunk_text_length(chunk);
    out_event(r, data, len);
    if (!r->coalesce) {
        send_out(r);
    } else if (!r->paused && pending_out(r) + r->out_len > OUT_HIGH_WATER) {
        send_out(r); /* pauses the upstream */
    } else if (r->flush && !event_pending(r->flush, EV_TIMEOUT, NULL)) {
        event_active(r->flush, EV_TIMEOUT, 1);
    }
    return 0;
}

static void finish_stream(relay *r, const zjuchat_error *err, int saw_done)
{
    srv_ctx *ctx = r->ctx;
    /* A stream the upstream ended well without [DONE] (a finish chunk and a
     * clean end: the library's test of a complete stream) still ends with
     * one for a dialect that forwards it: clients that wait for it, or tell
     * a cut stream by its absence, see the same end either way. */
    if (err->code == ZJUCHAT_OK && !saw_done &&
        (ctx->dialect->stream_flags & ZJUCHAT_CALL_PASS_DONE))
        out_add(r, "data: [DONE]\n\n", 14);
    if (err->code != ZJUCHAT_OK) {
        /* The status line is gone: the failure becomes one event in the
         * route's error shape. */
        srv_failure f;
        ctx->dialect->upstream_failure(err, NULL, &f);
        static const char oom[] = "{\"error\": \"out of memory\"}";
        out_event(r, f.body ? f.body : oom, f.body ? f.len : sizeof oom - 1);
        free(f.body);
    }
    if (r->out_len > 0) {
        ctx->acc.bytes += r->out_len;
        srv_req_write(ctx->req, r->out, r->out_len);
        out_clear(r);
    }
    srv_req_end(ctx->req);
}

/* The dialect's answer to a failed call, before any reply byte was sent. */
static void reply_failure(srv_ctx *ctx, const zjuchat_error *err, zjuchat_call *call)
{
    srv_failure f;
    ctx->dialect->upstream_failure(err, call, &f);
    if (!f.body) {
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
        return;
    }
    if (ctx->req)
        srv_http_retry_after(ctx->req, f.retry_after_s);
    srv_ctx_reply_json(ctx, f.status, f.body, f.len);
    free(f.body);
}

static void finish_plain(relay *r, zjuchat_call *call, const zjuchat_error *err,
                         const zjuchat_response *resp)
{
    srv_ctx *ctx = r->ctx;
    if (err->code != ZJUCHAT_OK) {
        reply_failure(ctx, err, call);
        return;
    }
    size_t len = 0;
    const char *body = zjuchat_response_body(resp, &len);
    long p, q, t;
    if (zjuchat_response_usage(resp, &p, &q, &t) == 0) {
        note_usage(&ctx->acc, p, q, t);
    } else if (r->flags & SRV_RELAY_COUNT) {
        size_t a = 0, b = 0;
        zjuchat_response_content(resp, &a);
        zjuchat_response_reasoning(resp, &b);
        r->content_bytes = a + b;
    }
    srv_ctx_reply_json(ctx, 200, body, len);
}

static void on_done(zjuchat_call *call, const zjuchat_error *err,
                    const zjuchat_response *resp, void *arg)
{
    relay *r = arg;
    srv_ctx *ctx = r->ctx;
    zjuchat_call_stats st;
    zjuchat_call_get_stats(call, &st);
    zjuchat_error shutdown_err;
    if (r->abort_reason && err->code == ZJUCHAT_ERR_CANCELLED) {
        shutdown_err = *err;
        shutdown_err.code = ZJUCHAT_ERR_NETWORK; /* answered as 503 */
        snprintf(shutdown_err.message, sizeof shutdown_err.message, "%s",
                 r->abort_reason);
        err = &shutdown_err;
    }
    ctx->acc.ttfb_ms = st.first_byte_ms;
    ctx->acc.retries = st.retries;
    ctx->acc.upstream_cancelled = err->code == ZJUCHAT_ERR_CANCELLED || r->abort_reason;
    const srv_shared *sh = srv_shared_get();
    if (r->gauged && sh)
        srv_metrics_stream(sh->metrics, sh->slot, -1);
    stop_timers(r);
    if (ctx->req) {
        if (r->started)
            finish_stream(r, err, st.saw_done);
        else
            finish_plain(r, call, err, resp);
        if (err->code != ZJUCHAT_OK && ctx->w->cfg->debug)
            srv_log("debug: upstream call failed: %s (%s): %s",
                    zjuchat_strerror(err->code), zjuchat_detail_name(err->detail),
                    err->message);
    }
    estimate_usage(r);
    ctx->handler_data = NULL;
    ctx->on_gone = NULL;
    ctx->on_drained = NULL;
    ctx->abort = NULL;
    relay_free(r);
    srv_ctx_finish(ctx);
}

int srv_relay_start(srv_ctx *ctx, const char *path, const char *body, size_t len,
                    unsigned flags)
{
    srv_worker *w = ctx->w;
    /* The access token's models= (the handler named the model in the access
     * record, the default one included). Here, because every upstream call
     * passes here and only the handler knows the model. */
    if (ctx->token && !srv_token_allows_model(ctx->token, ctx->acc.model)) {
        char msg[sizeof ctx->acc.model + 64];
        snprintf(msg, sizeof msg, "this access token may not use the model \"%s\"",
                 ctx->acc.model);
        srv_ctx_error(ctx, 403, msg, "model_not_allowed", -1);
        return SRV_ANSWERED;
    }
    if (!w->client) {
        srv_ctx_error(ctx, 500, "ZJU_API_KEY is not set on the server", "no_api_key", -1);
        return SRV_ANSWERED;
    }
    relay *r = calloc(1, sizeof *r);
    if (!r) {
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
        return SRV_ANSWERED;
    }
    r->ctx = ctx;
    r->stream = (flags & SRV_RELAY_STREAM) != 0;
    r->flags = flags;
    r->prompt_bytes = len;
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    static const zjuchat_callbacks cb = {on_accepted, on_chunk, on_done};
    unsigned call_flags =
        r->stream ? ZJUCHAT_CALL_STREAM | ctx->dialect->stream_flags : 0;
    zjuchat_error err;
    memset(&err, 0, sizeof err);
    r->call =
        zjuchat_call_start_raw(w->client, path, body, len, call_flags, &cb, r, &err);
    if (!r->call) {
        relay_free(r);
        reply_failure(ctx, &err, NULL);
        return SRV_ANSWERED;
    }
    ctx->handler_data = r;
    ctx->on_gone = on_client_gone;
    ctx->on_drained = on_client_drained;
    ctx->abort = on_abort;
    srv_ctx_watch(ctx, OUT_HIGH_WATER);
    return SRV_LATER;
}
