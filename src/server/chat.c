/*
 * chat.c - POST /api/chat. Validates the body (jansson), starts an evented
 * upstream call and relays its answer:
 *   - non-stream: the upstream's JSON body, byte for byte;
 *   - stream: each upstream event as "data: <its JSON bytes>\n\n", started as
 *     soon as the upstream accepted the request, with ": ping" comments
 *     during silences, pausing the upstream while the client's output
 *     buffer is above a high-water mark.
 * evhttp does not read a client's socket while we wait (docs/STACK.md
 * pitfall 1), so a read watcher on the socket notices a client that leaves in any
 * phase and cancels the upstream call at once. Every "pitfall N" in this file
 * is numbered as in docs/STACK.md.
 */
#include "chat.h"
#include "http_util.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
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
    struct evhttp_request *req;   /* NULL once the client is gone */
    struct evhttp_connection *evcon;
    zjuchat_call *call;
    int stream;
    int started; /* stream reply headers sent */
    int paused;
    int chunked;              /* the reply uses chunked encoding (HTTP/1.1 clients) */
    int direct;               /* chunks may be written to the socket directly */
    struct event *watch;      /* client socket readable: EOF or data */
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

static void ctx_stop_watchers(chat_ctx *c)
{
    if (c->watch) {
        event_free(c->watch);
        c->watch = NULL;
    }
    stop_timers(c);
}

static void ctx_free(chat_ctx *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (c->w->chats == c)
        c->w->chats = c->next;
    if (c->next)
        c->next->prev = c->prev;
    ctx_stop_watchers(c);
    if (c->out)
        evbuffer_free(c->out);
    c->w->calls--;
    free(c);
}

/* Ends the upstream call of a client that left. The request is gone with
 * its connection; on_done will see c->req == NULL and only log and free. */
static void client_gone(chat_ctx *c, int from_closecb)
{
    struct evhttp_request *req = c->req;
    if (!req)
        return;
    c->req = NULL;
    ctx_stop_watchers(c);
    c->acc.status = STATUS_CLIENT_GONE;
    if (from_closecb) {
        /* pitfall 2: evhttp detached the request it could not finish; it is
         * ours to free. If still attached, the connection frees it. */
        if (evhttp_request_get_connection(req) == NULL)
            evhttp_request_free(req);
    } else {
        evhttp_connection_set_closecb(c->evcon, NULL, NULL);
        evhttp_connection_free(c->evcon); /* frees req too */
    }
    c->evcon = NULL;
    srv_worker_request_gone(c->w);
    zjuchat_call_cancel(c->call); /* on_done runs, frees c */
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    client_gone(arg, 1);
}

/* The client's socket became readable while we own the request: either it
 * closed (recv 0 or an error) or it pipelined the next request. */
static void on_client_readable(evutil_socket_t fd, short what, void *arg)
{
    chat_ctx *c = arg;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
        /* Pipelined bytes: they stay for evhttp; stop watching so the
         * level-triggered event does not spin. A close will then be
         * noticed on the next write. */
        event_del(c->watch);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    client_gone(c, 0);
}

static struct bufferevent *ctx_bev(chat_ctx *c)
{
    return c->evcon ? evhttp_connection_get_bufferevent(c->evcon) : NULL;
}

static size_t ctx_outlen(chat_ctx *c)
{
    struct bufferevent *bev = ctx_bev(c);
    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

static void on_drained(struct evhttp_connection *evcon, void *arg)
{
    chat_ctx *c = arg;
    if (c->paused && c->req && ctx_outlen(c) < OUT_HIGH_WATER / 2) {
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

/* "%zx\r\n" without the printf machinery: once per relayed chunk. */
static int chunk_head(char *out, size_t n)
{
    char digits[2 * sizeof n];
    int k = 0, len = 0;
    do {
        digits[k++] = "0123456789abcdef"[n & 15];
        n >>= 4;
    } while (n);
    while (k)
        out[len++] = digits[--k];
    out[len++] = '\r';
    out[len++] = '\n';
    return len;
}

/*
 * Write one HTTP chunk straight to the socket when nothing is queued before
 * it. Going through the bufferevent costs two epoll_ctl calls per event (it
 * arms the write event, then disarms it once flushed); strace counted 0.9
 * epoll_ctl per relayed event. Whatever the socket does not take goes to the
 * bufferevent, in order, and is flushed by evhttp as usual (its on_drained
 * callback is set by the first chunk, which always takes the evhttp path).
 * Returns 0 when nothing was written (the caller uses the evhttp path).
 */
static int send_direct(chat_ctx *c, struct bufferevent *bev, size_t n)
{
    char head[24];
    int hl = chunk_head(head, n);
    struct iovec iov[10];
    struct evbuffer_iovec vec[8];
    int nvec = evbuffer_peek(c->out, -1, NULL, vec, 8);
    if (nvec < 1 || nvec > 8)
        return 0;
    iov[0].iov_base = head;
    iov[0].iov_len = (size_t)hl;
    for (int i = 0; i < nvec; i++) {
        iov[i + 1].iov_base = vec[i].iov_base;
        iov[i + 1].iov_len = vec[i].iov_len;
    }
    iov[nvec + 1].iov_base = (char *)"\r\n";
    iov[nvec + 1].iov_len = 2;
    ssize_t w = writev(bufferevent_getfd(bev), iov, nvec + 2);
    if (w <= 0)
        return 0; /* EAGAIN or an error: evhttp queues it or notices the error */
    size_t done = (size_t)w, total = (size_t)hl + n + 2;
    if (done < (size_t)hl) {
        bufferevent_write(bev, head + done, (size_t)hl - done);
        done = (size_t)hl;
    }
    if (done < (size_t)hl + n) {
        evbuffer_drain(c->out, done - (size_t)hl);
        bufferevent_write_buffer(bev, c->out);
        done = (size_t)hl + n;
    } else {
        evbuffer_drain(c->out, n);
    }
    if (done < total)
        bufferevent_write(bev, &"\r\n"[done - (size_t)hl - n], total - done);
    return 1;
}

/* Send what is in c->out as one chunk; pause upstream above high water. */
static void send_out(chat_ctx *c)
{
    size_t n = evbuffer_get_length(c->out);
    c->acc.bytes += n;
    struct bufferevent *bev = ctx_bev(c);
    if (!(c->direct && bev && evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
          send_direct(c, bev, n))) {
        evhttp_send_reply_chunk_with_cb(c->req, c->out, on_drained, c);
        /* From now on evhttp calls on_drained whenever its output empties. */
        c->direct = c->chunked;
    }
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
    struct evkeyvalq *h = evhttp_request_get_output_headers(c->req);
    srv_http_common_headers(c->req, c->w->cfg);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "X-Accel-Buffering", "no");
    evhttp_send_reply_start(c->req, 200, "OK");
    c->started = 1;
    const char *te = evhttp_find_header(h, "Transfer-Encoding");
    c->chunked = te && strcasecmp(te, "chunked") == 0;
    c->acc.status = 200;
    /* pitfall 4: a quiet stream must not die of the read timeout; keep a
     * write timeout so a client that stops reading is dropped eventually. */
    struct bufferevent *bev = ctx_bev(c);
    struct timeval wt = {STREAM_WRITE_TIMEOUT_S, 0};
    if (bev)
        bufferevent_set_timeouts(bev, NULL, &wt);
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

/* Put the keep-alive timeouts back once the stream is over (pitfall 4). */
static void restore_timeouts(chat_ctx *c)
{
    struct bufferevent *bev = ctx_bev(c);
    struct timeval t = {c->w->cfg->request_timeout_s, 0};
    if (bev)
        bufferevent_set_timeouts(bev, &t, &t);
}

static void finish_stream(chat_ctx *c, const zjuchat_error *err)
{
    if (err->code == ZJUCHAT_OK && evbuffer_get_length(c->out) > 0) {
        c->acc.bytes += evbuffer_get_length(c->out);
        evhttp_send_reply_chunk_with_cb(c->req, c->out, NULL, NULL);
    }
    if (err->code != ZJUCHAT_OK) {
        char *j = srv_http_error_json(error_text(err));
        evbuffer_add(c->out, "data: ", 6);
        evbuffer_add(c->out, j ? j : "{\"error\": \"out of memory\"}",
                     j ? strlen(j) : 26);
        evbuffer_add(c->out, "\n\n", 2);
        free(j);
        c->acc.bytes += evbuffer_get_length(c->out);
        evhttp_send_reply_chunk_with_cb(c->req, c->out, NULL, NULL);
    }
    restore_timeouts(c);
    evhttp_send_reply_end(c->req);
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
    evhttp_add_header(evhttp_request_get_output_headers(c->req), "Content-Type",
                      "application/json");
    evbuffer_add(c->out, body, len);
    c->acc.status = 200;
    c->acc.bytes = len;
    evhttp_send_reply(c->req, 200, "OK", c->out);
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
    /* The socket watch goes last (ctx_free): evhttp_send_reply* re-enables
     * reading on the same descriptor, so while the watch still holds read
     * interest the kernel sees no change; freeing it first cost an
     * epoll_ctl DEL and ADD per request. */
    stop_timers(c);
    if (c->req) {
        /* The request is ours until the reply is sent: from here on a close
         * is evhttp's business again (pitfall 2), and the worker's to count
         * if it comes before the reply is written. */
        srv_worker_watch_close(c->w, c->evcon);
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

/* Validation: a string member or absent/null. Returns 0, or -1 when the
 * member exists with another type. */
static int opt_string(json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    *out = json_string_value(v);
    return 0;
}

/* Parse and check the body. Returns 0 and fills the outputs (borrowed from
 * *root, which the caller frees), or an HTTP status with msg set. */
static int validate(struct evhttp_request *req, const srv_config *cfg, json_t **root,
                    const char **user, const char **model, const char **system,
                    int *stream, const char **msg)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    if (!srv_http_is_json_type(evhttp_find_header(in, "Content-Type"))) {
        *msg = "Content-Type must be application/json";
        return 415;
    }
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body);
    if (len > cfg->max_body) {
        *msg = "request body too large";
        return 413;
    }
    const char *bytes = (const char *)evbuffer_pullup(body, -1);
    json_error_t jerr;
    /* \u0000 is valid JSON: the texts keep it (their lengths go upstream). */
    *root = json_loadb(bytes ? bytes : "", len, JSON_ALLOW_NUL, &jerr);
    if (!*root) {
        /* Say where and why; one worker is one thread, so a static buffer
         * lives until the reply is built. */
        static char why[320];
        snprintf(why, sizeof why,
                 "request body is not valid JSON: %s (line %d, column %d)", jerr.text,
                 jerr.line, jerr.column);
        *msg = why;
        return 400;
    }
    if (!json_is_object(*root)) {
        *msg = "request body must be a JSON object";
        return 400;
    }
    json_t *u = json_object_get(*root, "user_content");
    if (!json_is_string(u) || json_string_length(u) == 0) {
        *msg = "user_content is required and must be a non-empty string";
        return 400;
    }
    *user = json_string_value(u);
    if (opt_string(*root, "model", model) < 0) {
        *msg = "model must be a string";
        return 400;
    }
    if (*model && strlen(*model) != json_string_length(json_object_get(*root, "model"))) {
        *msg = "model must not contain NUL"; /* no model id does */
        return 400;
    }
    if (opt_string(*root, "system_content", system) < 0) {
        *msg = "system_content must be a string";
        return 400;
    }
    json_t *s = json_object_get(*root, "stream");
    *stream = 0;
    /* Unlike model and system_content, a null stream is an error: the
     * contract wants a boolean whenever the member is present. */
    if (s) {
        if (!json_is_boolean(s)) {
            *msg = "stream must be a boolean";
            return 400;
        }
        *stream = json_is_true(s);
    }
    return 0;
}

/* A validated text's length: it may hold \u0000, so not strlen. 0 for an
 * absent or null member. */
static size_t text_length(json_t *root, const char *key)
{
    return json_string_length(json_object_get(root, key));
}

/* Start the upstream call; 0 on success (c owns the request), else an HTTP
 * status and message. */
static int start_call(chat_ctx *c, const char *model, const char *user, size_t user_len,
                      const char *system, size_t system_len, const char **msg,
                      zjuchat_error *err)
{
    zjuchat_request *r =
        zjuchat_request_new_simple_n(model, user, user_len, system, system_len);
    if (!r) {
        *msg = "out of memory";
        return 500;
    }
    static const zjuchat_callbacks cb = {on_accepted, on_chunk, on_done};
    memset(err, 0, sizeof *err);
    c->call = zjuchat_call_start(c->w->client, r, c->stream, &cb, c, err);
    zjuchat_request_free(r);
    if (!c->call) {
        *msg = error_text(err);
        return err->code == ZJUCHAT_ERR_INVALID ? 400 : 500;
    }
    return 0;
}

int srv_chat_handle(srv_worker *w, struct evhttp_request *req, srv_access *acc)
{
    const srv_config *cfg = w->cfg;
    json_t *root = NULL;
    const char *user = NULL, *model = NULL, *system = NULL, *msg = NULL;
    int stream = 0;
    long retry_after = -1;
    int status = validate(req, cfg, &root, &user, &model, &system, &stream, &msg);
    chat_ctx *c = NULL;
    zjuchat_error err;
    if (status == 0) {
        if (!model || !*model)
            model = cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL;
        snprintf(acc->model, sizeof acc->model, "%s", model);
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
        c->evcon = evhttp_request_get_connection(req);
        c->stream = stream;
        c->acc = *acc;
        w->calls++;
        c->next = w->chats;
        if (w->chats)
            w->chats->prev = c;
        w->chats = c;
        status = start_call(c, model, user, text_length(root, "user_content"), system,
                            text_length(root, "system_content"), &msg, &err);
        if (status != 0) {
            /* msg may point into err, which lives on this stack frame */
            srv_http_send_json_error(req, cfg, status, msg, -1, &acc->bytes);
            acc->status = status;
            ctx_free(c);
            json_decref(root);
            return 0;
        }
    }
    if (status != 0) {
        srv_http_send_json_error(req, cfg, status, msg, retry_after, &acc->bytes);
        acc->status = status;
        json_decref(root);
        return 0;
    }
    json_decref(root);
    evhttp_connection_set_closecb(c->evcon, on_conn_close, c);
    struct bufferevent *bev = ctx_bev(c);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd >= 0) {
        c->watch = event_new(w->base, fd, EV_READ | EV_PERSIST, on_client_readable, c);
        if (c->watch)
            event_add(c->watch, NULL);
    }
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
