/*
 * worker.c - one worker process: its own event loop, evhttp front on its
 * own SO_REUSEPORT socket from the supervisor (the kernel spreads
 * connections over the workers),
 * the request router, /healthz, and the graceful drain on SIGTERM/SIGINT:
 * stop accepting, let replies in progress finish up to DRAIN_TIMEOUT, then
 * close whatever is left. Every "pitfall N" in this file is numbered as in
 * docs/STACK.md.
 */
#include "worker.h"
#include "accesslog.h"
#include "chat.h"
#include "conntrack.h"
#include "http_util.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zjuchat.h>

#define ACCEPT_RETRY_MS 200

static void maybe_finish_drain(srv_worker *w)
{
    if (w->draining && w->pending <= 0)
        event_base_loopexit(w->base, NULL);
}

void srv_worker_request_gone(srv_worker *w)
{
    w->pending--;
    maybe_finish_drain(w);
}

static void on_conn_closed(struct evhttp_connection *evcon, void *arg)
{
    srv_worker_request_gone(arg);
}

void srv_worker_watch_close(srv_worker *w, struct evhttp_connection *evcon)
{
    if (evcon)
        evhttp_connection_set_closecb(evcon, on_conn_closed, w);
}

/* evhttp wrote the last byte of a reply (pitfall 5: only now is it safe to
 * leave the loop without losing it). */
static void on_request_complete(struct evhttp_request *req, void *arg)
{
    srv_worker *w = arg;
    /* Counted here: a later close of this connection is no lost reply. */
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), NULL, NULL);
    srv_conntrack_reply_done(w->conns, req);
    w->pending--;
    maybe_finish_drain(w);
}

static void send_json(struct evhttp_request *req, srv_worker *w, int status,
                      const char *json, srv_access *acc)
{
    struct evbuffer *b = evbuffer_new();
    srv_http_common_headers(req, w->cfg);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    if (b)
        evbuffer_add(b, json, strlen(json));
    evhttp_send_reply(req, status, srv_http_reason(status), b);
    acc->bytes = b ? strlen(json) : 0;
    acc->status = status;
    if (b)
        evbuffer_free(b);
}

static void handle_health(struct evhttp_request *req, srv_worker *w, srv_access *acc)
{
    char body[160];
    snprintf(body, sizeof body,
             "{\"status\": \"%s\", \"pid\": %ld, \"calls\": %ld, \"key_set\": %s}",
             w->draining ? "draining" : "ok", (long)getpid(), w->calls,
             w->client ? "true" : "false");
    /* a draining worker says so with 503 so load balancers move away */
    send_json(req, w, w->draining ? 503 : 200, body, acc);
}

/* Path of the request URI without the query string, into buf. */
static void request_path(struct evhttp_request *req, char *buf, size_t cap)
{
    const char *uri = evhttp_request_get_uri(req);
    size_t n = 0;
    while (uri && uri[n] && uri[n] != '?' && uri[n] != '#' && n + 1 < cap)
        n++;
    memcpy(buf, uri ? uri : "", n);
    buf[n] = '\0';
}

static void on_request(struct evhttp_request *req, void *arg)
{
    srv_worker *w = arg;
    srv_access acc;
    srv_access_begin(&acc, req);
    srv_conntrack_request_received(w->conns, req);
    w->pending++;
    srv_worker_watch_close(w, evhttp_request_get_connection(req));
    evhttp_request_set_on_complete_cb(req, on_request_complete, w);
    if (w->draining) /* tell keep-alive clients to go elsewhere */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");

    char path[256];
    request_path(req, path, sizeof path);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (strcmp(path, "/api/chat") == 0) {
        if (cmd == EVHTTP_REQ_OPTIONS) {
            acc.status = srv_http_preflight(req, w->cfg);
        } else if (cmd == EVHTTP_REQ_POST) {
            if (srv_chat_handle(w, req, &acc))
                return; /* the relay logs when it is done */
        } else {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                              "POST, OPTIONS");
            srv_http_send_json_error(req, w->cfg, 405, "method not allowed", -1,
                                     &acc.bytes);
            acc.status = 405;
        }
    } else if (strcmp(path, "/healthz") == 0 &&
               (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD)) {
        handle_health(req, w, &acc);
    } else {
        srv_http_send_json_error(req, w->cfg, 404, "not found", -1, &acc.bytes);
        acc.status = 404;
    }
    srv_access_write(&acc);
}

#define DRAIN_FLUSH_S 2 /* after the deadline, time for the last bytes to go out */

static void on_drain_flush_timeout(evutil_socket_t fd, short what, void *arg)
{
    srv_worker *w = arg;
    srv_log("drain: %ld reply(ies) still unsent %ds after the deadline; closing them",
            w->pending, DRAIN_FLUSH_S);
    event_base_loopexit(w->base, NULL);
}

/* The deadline passed: end every relay properly (an error event and the
 * terminating chunk for streams, 503 for the others), then leave once those
 * replies are written, or DRAIN_FLUSH_S later for clients that do not read. */
static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    srv_worker *w = arg;
    srv_log("drain deadline reached with %ld request(s) unfinished; ending them",
            w->pending);
    srv_chat_abort_all(w, "server is shutting down");
    struct timeval tv = {DRAIN_FLUSH_S, 0};
    event_assign(w->drain_timer, w->base, -1, 0, on_drain_flush_timeout, w);
    event_add(w->drain_timer, &tv);
    maybe_finish_drain(w);
}

static void begin_drain(srv_worker *w)
{
    if (w->draining)
        return;
    w->draining = 1;
    if (w->bound) {
        evhttp_del_accept_socket(w->http, w->bound); /* frees the listener */
        w->bound = NULL;
        w->listener = NULL;
    }
    srv_log("worker draining: %ld request(s) in progress, deadline %lds", w->pending,
            w->cfg->drain_timeout_s);
    struct timeval tv = {w->cfg->drain_timeout_s, 0};
    w->drain_timer = evtimer_new(w->base, on_drain_timeout, w);
    if (w->drain_timer)
        event_add(w->drain_timer, &tv);
    maybe_finish_drain(w);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    begin_drain(arg);
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    srv_worker *w = arg;
    if (w->listener)
        evconnlistener_enable(w->listener);
}

/* The worker of this process. evhttp_bind_listener makes the listener's
 * callback argument its own struct evhttp, so the accept-error callback
 * cannot get the worker from its argument. */
static srv_worker *this_worker;

/* pitfall 6: out of descriptors, accept() fails at once on every loop turn;
 * pause accepting for a moment instead of spinning. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    srv_worker *w = this_worker;
    srv_log("accept failed: %s; pausing accepts for %dms",
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()), ACCEPT_RETRY_MS);
    evconnlistener_disable(l);
    struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
    event_add(w->accept_retry, &tv);
}

/* The supervisor's socket, already listening (backlog 0: no listen()
 * again). CLOSE_ON_FREE: the drain's evhttp_del_accept_socket closes it. */
static int bind_listener(srv_worker *w)
{
    w->listener =
        evconnlistener_new(w->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE, 0, w->listen_fd);
    if (!w->listener) {
        srv_log("cannot accept on the listening socket: %s",
                evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    evconnlistener_set_error_cb(w->listener, on_accept_error);
    w->bound = evhttp_bind_listener(w->http, w->listener);
    if (!w->bound) {
        evconnlistener_free(w->listener);
        w->listener = NULL;
        return -1;
    }
    return 0;
}

static int make_client(srv_worker *w)
{
    const srv_config *cfg = w->cfg;
    if (!cfg->api_key)
        return 0; /* every /api/chat answers 500; upstream is never called */
    zjuchat_error err;
    w->client = zjuchat_client_new(cfg->api_key, cfg->base_url, &err);
    if (!w->client) {
        srv_log("cannot create the upstream client: %s", err.message);
        return -1;
    }
    if (cfg->ca_file &&
        zjuchat_client_set_ca_file(w->client, cfg->ca_file) != ZJUCHAT_OK) {
        srv_log("cannot use ZJU_CA_FILE");
        return -1;
    }
    long ms[] = {cfg->connect_ms, cfg->first_byte_ms, cfg->idle_ms, cfg->total_ms};
    zjuchat_timeout which[] = {ZJUCHAT_TIMEOUT_OPT_CONNECT,
                               ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE, ZJUCHAT_TIMEOUT_OPT_IDLE,
                               ZJUCHAT_TIMEOUT_OPT_TOTAL};
    for (int i = 0; i < 4; i++)
        if (ms[i] >= 0 && zjuchat_client_set_timeout(w->client, which[i], ms[i]) != 0) {
            srv_log("invalid upstream timeout setting");
            return -1;
        }
    if (cfg->retry_budget_ms >= 0 &&
        zjuchat_client_set_retry_budget(w->client, cfg->retry_budget_ms) != ZJUCHAT_OK) {
        srv_log("invalid ZJU_RETRY_BUDGET_MS");
        return -1;
    }
    if (zjuchat_client_use_event_base(w->client, w->base) != ZJUCHAT_OK) {
        srv_log("cannot bind the upstream client to the event loop");
        return -1;
    }
    return 0;
}

static int setup(srv_worker *w)
{
    const srv_config *cfg = w->cfg;
    this_worker = w;
    w->base = event_base_new();
    if (!w->base)
        return -1;
    if (make_client(w) < 0)
        return -1;
    w->http = evhttp_new(w->base);
    if (!w->http)
        return -1;
    /* pitfall 6: nothing is limited by default. The evhttp body cap is a
     * hard ceiling above MAX_BODY_BYTES so that moderately oversized bodies
     * still get our JSON 413 rather than evhttp's HTML one. */
    size_t hard = cfg->max_body > SIZE_MAX / 4 ? SIZE_MAX : cfg->max_body * 4 + 65536;
    evhttp_set_max_body_size(w->http, (ev_ssize_t)(hard > INT64_MAX ? INT64_MAX : hard));
    evhttp_set_max_headers_size(w->http, (ev_ssize_t)cfg->max_headers);
    evhttp_set_timeout(w->http, (int)cfg->request_timeout_s);
    evhttp_set_allowed_methods(
        w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS |
                     EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(w->http, on_request, w);
    w->conns = srv_conntrack_new(w->base, w->http, cfg->request_timeout_s);
    if (!w->conns)
        return -1;
    w->accept_retry = evtimer_new(w->base, on_accept_retry, w);
    w->sig_term = evsignal_new(w->base, SIGTERM, on_signal, w);
    w->sig_int = evsignal_new(w->base, SIGINT, on_signal, w);
    if (!w->accept_retry || !w->sig_term || !w->sig_int)
        return -1;
    event_add(w->sig_term, NULL);
    event_add(w->sig_int, NULL);
    return bind_listener(w);
}

static void teardown(srv_worker *w)
{
    /* evhttp_free closes every connection; relays still running see their
     * close callback and cancel their calls before the client goes. */
    if (w->http)
        evhttp_free(w->http);
    srv_conntrack_free(w->conns); /* after evhttp_free: drops the last bev refs */
    if (w->client)
        zjuchat_client_free(w->client);
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->accept_retry)
        event_free(w->accept_retry);
    if (w->sig_term)
        event_free(w->sig_term);
    if (w->sig_int)
        event_free(w->sig_int);
    if (w->base)
        event_base_free(w->base);
}

int srv_worker_run(const srv_config *cfg, int listen_fd)
{
    srv_worker w;
    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    w.listen_fd = listen_fd;
    signal(SIGPIPE, SIG_IGN);
    int rc = 0;
    if (setup(&w) < 0) {
        rc = 2;
    } else {
        event_base_dispatch(w.base);
        srv_log("worker exiting");
    }
    teardown(&w);
    return rc;
}
