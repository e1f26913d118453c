/*
 * chat.c - POST /api/chat. Checks the body and builds the upstream's
 * (chat_body.c), starts an evented upstream call and relays its answer:
 *   - non-stream: the upstream's JSON body, byte for byte;
 *   - stream: each upstream event as "data: <its JSON bytes>\n\n", started as
 *     soon as the upstream accepted the request, with ": ping" comments
 *     during silences, pausing the upstream while the client's output
 *     buffer is above a high-water mark.
 * The front (front.c) reads the client's socket all along and tells us when
 * the client leaves (on_gone), in any phase: the upstream call is cancelled
 * at once.
 */
#include "chat.h"
#include "chat_body.h"
#include "front.h"
#include "http_util.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <zjuchat.h>

/* Above this many bytes waiting for a client, the upstream is paused. */
#define OUT_HIGH_WATER (64 * 1024)
/* A streaming client that accepts no byte for this long is dropped. */
#define STREAM_WRITE_TIMEOUT_S 120
#define STATUS_CLIENT_GONE 499 /* nginx's convention, for the access log */

typedef struct chat_ctx {
    srv_worker *w;
    struct chat_ctx *prev, *next; /* w->chats */
    const char *abort_reason;     /* set by srv_chat_abort_all */
    srv_request *req;             /* NULL once the client is gone */
    zjuchat_call *call;
    int stream;
    int started; /* stream reply headers sent */
    int paused;
    struct event *ping;       /* heartbeat timer */
    struct timeval last_send; /* loop time of the last chunk, for the heartbeat */
    struct event *flush;      /* sends c->out once the current burst is queued */
    struct evbuffer *out;
    srv_access acc;
} chat_ctx;

static void stop_timers(chat_ctx *c)
{
    if (c->ping) {
        event_free(c->ping);
        c->ping = NULL;
    }
    if (c->flush) {
        event_free(c->flush);
        c->flush = NULL;
    }
}

static void ctx_free(chat_ctx *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (c->w->chats == c)
        c->w->chats = c->next;
    if (c->next)
        c->next->prev = c->prev;
    stop_timers(c);
    if (c->out)
        evbuffer_free(c->out);
    c->w->calls--;
    free(c);
}

/* The client left before the reply ended: the request is gone with its
 * connection; cancel the upstream call (on_done then only logs and frees). */
static void on_gone(srv_request *req, void *arg)
{
    chat_ctx *c = arg;
    c->req = NULL;
    stop_timers(c);
    c->acc.status = STATUS_CLIENT_GONE;
    zjuchat_call_cancel(c->call);
}

static size_t ctx_outlen(chat_ctx *c)
{
    return c->req ? srv_req_output_pending(c->req) : 0;
}

/* The client caught up: resume the upstream. */
static void on_drained(srv_request *req, void *arg)
{
    chat_ctx *c = arg;
    if (c->paused && c->req) {
        c->paused = 0;
        if (c->w->cfg->debug)
            srv_log("debug: client caught up, resuming upstream");
        zjuchat_call_resume(c->call);
    }
}

/* Arm the heartbeat to fire heartbeat_ms after the last chunk. Re-arming it
 * on every chunk cost a timer-heap update per relayed event; instead the
 * timer fires on schedule and re-arms itself for the rest of the period when
 * chunks went out meanwhile (see on_ping). */
static void arm_ping_in(chat_ctx *c, long ms)
{
    if (!c->ping)
        return;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(c->ping, &tv);
}

static long ms_since_send(chat_ctx *c)
{
    struct timeval now, since;
    event_base_gettimeofday_cached(c->w->base, &now);
    timersub(&now, &c->last_send, &since);
    return since.tv_sec * 1000L + since.tv_usec / 1000;
}

static void arm_ping(chat_ctx *c)
{
    long left = c->w->cfg->heartbeat_ms - ms_since_send(c);
    arm_ping_in(c, left < 1 ? 1 : left);
}

/* Send what is in c->out as one piece of the reply; pause the upstream
 * above high water. */
static void send_out(chat_ctx *c)
{
    c->acc.bytes += evbuffer_get_length(c->out);
    srv_req_write_buffer(c->req, c->out);
    event_base_gettimeofday_cached(c->w->base, &c->last_send);
    if (!c->paused && ctx_outlen(c) > OUT_HIGH_WATER) {
        c->paused = 1;
        if (c->w->cfg->debug)
            srv_log("debug: client behind by %zu bytes, pausing upstream", ctx_outlen(c));
        zjuchat_call_pause(c->call);
    }
}

static void on_ping(evutil_socket_t fd, short what, void *arg)
{
    chat_ctx *c = arg;
    if (!c->req)
        return;
    if (ms_since_send(c) < c->w->cfg->heartbeat_ms) {
        arm_ping(c); /* chunks went out meanwhile: wait out the rest */
        return;
    }
    if (ctx_outlen(c) > 0) { /* the client is still behind: no need */
        arm_ping_in(c, c->w->cfg->heartbeat_ms);
        return;
    }
    evbuffer_add(c->out, ": ping\n\n", 8);
    send_out(c);
    arm_ping(c);
}

/* Events that arrive in one upstream read leave as one HTTP chunk: fewer
 * chunk headers and writes, no added latency (same loop iteration). */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    chat_ctx *c = arg;
    if (c->req && evbuffer_get_length(c->out) > 0)
        send_out(c);
}

static void on_accepted(zjuchat_call *call, void *arg)
{
    chat_ctx *c = arg;
    if (!c->stream || !c->req)
        return;
    srv_http_common_headers(c->req, c->w->cfg);
    srv_req_add_header(c->req, "Content-Type", "text/event-stream");
    srv_req_add_header(c->req, "Cache-Control", "no-cache");
    srv_req_add_header(c->req, "X-Accel-Buffering", "no");
    srv_req_start(c->req, 200);
    c->started = 1;
    c->acc.status = 200;
    /* A quiet stream is fine; a client that takes no byte for this long is
     * dropped (on_gone). */
    srv_req_set_write_timeout(c->req, STREAM_WRITE_TIMEOUT_S);
    c->flush = event_new(c->w->base, -1, 0, on_flush, c);
    if (c->w->cfg->heartbeat_ms > 0) {
        c->ping = evtimer_new(c->w->base, on_ping, c);
        event_base_gettimeofday_cached(c->w->base, &c->last_send);
        arm_ping(c);
    }
}

static int on_chunk(zjuchat_call *call, const zjuchat_chunk *chunk, void *arg)
{
    chat_ctx *c = arg;
    if (!c->req || !c->started)
        return ZJUCHAT_STOP;
    size_t len;
    const char *data = zjuchat_chunk_data(chunk, &len);
    long p, q, t;
    if (zjuchat_chunk_usage(chunk, &p, &q, &t) == 0) {
        c->acc.prompt_tokens = p;
        c->acc.completion_tokens = q;
        c->acc.total_tokens = t;
    }
    evbuffer_add(c->out, "data: ", 6);
    evbuffer_add(c->out, data, len);
    evbuffer_add(c->out, "\n\n", 2);
    if (!c->flush) {
        send_out(c);
    } else if (!c->paused &&
               ctx_outlen(c) + evbuffer_get_length(c->out) > OUT_HIGH_WATER) {
        send_out(c); /* pauses the upstream */
    } else if (!event_pending(c->flush, EV_TIMEOUT, NULL)) {
        event_active(c->flush, EV_TIMEOUT, 1);
    }
    return 0;
}

/* HTTP status for an upstream failure before anything was sent. */
static int error_status(const zjuchat_error *e, long *retry_after_s)
{
    *retry_after_s = -1;
    switch (e->code) {
    case ZJUCHAT_ERR_NETWORK:
        return 503;
    case ZJUCHAT_ERR_TIMEOUT:
        return 504;
    case ZJUCHAT_ERR_API:
        if (e->http_status == 429) {
            if (e->retry_after_ms >= 0)
                *retry_after_s = (e->retry_after_ms + 999) / 1000;
            return 429;
        }
        return 500;
    case ZJUCHAT_ERR_PROTOCOL:
        return 502; /* the upstream answered, but not something we can relay */
    default:
        return 500;
    }
}

static const char *error_text(const zjuchat_error *e)
{
    return e->message[0] ? e->message : zjuchat_strerror(e->code);
}

static void finish_stream(chat_ctx *c, const zjuchat_error *err)
{
    if (err->code != ZJUCHAT_OK) {
        char *j = srv_http_error_json(error_text(err));
        evbuffer_add(c->out, "data: ", 6);
        evbuffer_add(c->out, j ? j : "{\"error\": \"out of memory\"}",
                     j ? strlen(j) : 26);
        evbuffer_add(c->out, "\n\n", 2);
        free(j);
    }
    if (evbuffer_get_length(c->out) > 0) {
        c->acc.bytes += evbuffer_get_length(c->out);
        srv_req_write_buffer(c->req, c->out);
    }
    srv_req_end(c->req);
}

static void finish_plain(chat_ctx *c, const zjuchat_error *err,
                         const zjuchat_response *resp)
{
    if (err->code != ZJUCHAT_OK) {
        long ra;
        int st = error_status(err, &ra);
        c->acc.status = st;
        srv_http_send_json_error(c->req, c->w->cfg, st, error_text(err), ra,
                                 &c->acc.bytes);
        return;
    }
    size_t len = 0;
    const char *body = zjuchat_response_body(resp, &len);
    long p, q, t;
    if (zjuchat_response_usage(resp, &p, &q, &t) == 0) {
        c->acc.prompt_tokens = p;
        c->acc.completion_tokens = q;
        c->acc.total_tokens = t;
    }
    srv_http_common_headers(c->req, c->w->cfg);
    srv_req_add_header(c->req, "Content-Type", "application/json");
    c->acc.status = 200;
    c->acc.bytes = len;
    srv_req_reply(c->req, 200, body, len);
}

static void on_done(zjuchat_call *call, const zjuchat_error *err,
                    const zjuchat_response *resp, void *arg)
{
    chat_ctx *c = arg;
    zjuchat_call_stats st;
    zjuchat_call_get_stats(call, &st);
    zjuchat_error shutdown_err;
    if (c->abort_reason && err->code == ZJUCHAT_ERR_CANCELLED) {
        shutdown_err = *err;
        shutdown_err.code = ZJUCHAT_ERR_NETWORK; /* answered as 503 */
        snprintf(shutdown_err.message, sizeof shutdown_err.message, "%s",
                 c->abort_reason);
        err = &shutdown_err;
    }
    c->acc.ttfb_ms = st.first_byte_ms;
    stop_timers(c);
    if (c->req) {
        if (c->started)
            finish_stream(c, err);
        else
            finish_plain(c, err, resp);
        if (err->code != ZJUCHAT_OK && c->w->cfg->debug)
            srv_log("debug: upstream call failed: %s (%s): %s",
                    zjuchat_strerror(err->code), zjuchat_detail_name(err->detail),
                    error_text(err));
    }
    srv_access_write(&c->acc);
    ctx_free(c);
}

/* Start the upstream call; 0 on success (c owns the request), else an HTTP
 * status and message. */
static int start_call(chat_ctx *c, const srv_chat_body *b, const char **msg,
                      zjuchat_error *err)
{
    static const zjuchat_callbacks cb = {on_accepted, on_chunk, on_done};
    memset(err, 0, sizeof *err);
    c->call = zjuchat_call_start_raw(c->w->client, "chat/completions", b->upstream,
                                     b->upstream_len, c->stream ? ZJUCHAT_CALL_STREAM : 0,
                                     &cb, c, err);
    if (!c->call) {
        *msg = error_text(err);
        return err->code == ZJUCHAT_ERR_INVALID ? 400 : 500;
    }
    return 0;
}

int srv_chat_handle(srv_worker *w, srv_request *req, srv_access *acc)
{
    const srv_config *cfg = w->cfg;
    srv_chat_body b;
    long retry_after = -1;
    size_t blen;
    const char *body = srv_req_body(req, &blen);
    int status =
        srv_chat_body_parse(srv_req_header(req, "Content-Type"), body, blen, cfg, &b);
    const char *msg = b.msg;
    int stream = b.stream;
    chat_ctx *c = NULL;
    zjuchat_error err;
    if (status == 0) {
        snprintf(acc->model, sizeof acc->model, "%s", b.model);
        acc->stream = stream;
        if (!w->client) {
            status = 500;
            msg = "ZJU_API_KEY is not set on the server";
        } else if (w->calls >= cfg->max_connections) {
            status = 503;
            msg = "server busy, retry later";
            retry_after = 1;
        }
    }
    if (status == 0) {
        c = calloc(1, sizeof *c);
        if (c)
            c->out = evbuffer_new();
        if (!c || !c->out) {
            free(c);
            c = NULL;
            status = 500;
            msg = "out of memory";
        }
    }
    if (status == 0) {
        c->w = w;
        c->req = req;
        c->stream = stream;
        c->acc = *acc;
        w->calls++;
        c->next = w->chats;
        if (w->chats)
            w->chats->prev = c;
        w->chats = c;
        srv_req_watch(req, on_gone, on_drained, OUT_HIGH_WATER, c);
        status = start_call(c, &b, &msg, &err);
        if (status != 0) {
            /* msg may point into err, which lives on this stack frame */
            srv_http_send_json_error(req, cfg, status, msg, -1, &acc->bytes);
            acc->status = status;
            ctx_free(c);
            srv_chat_body_free(&b);
            return 0;
        }
    }
    if (status != 0) {
        srv_http_send_json_error(req, cfg, status, msg, retry_after, &acc->bytes);
        acc->status = status;
        srv_chat_body_free(&b);
        return 0;
    }
    srv_chat_body_free(&b);
    return 1;
}

void srv_chat_abort_all(srv_worker *w, const char *reason)
{
    chat_ctx *c = w->chats;
    while (c) {
        chat_ctx *next = c->next; /* on_done frees c */
        c->abort_reason = reason;
        zjuchat_call_cancel(c->call);
        c = next;
    }
}
