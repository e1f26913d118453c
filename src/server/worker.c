/*
 * worker.c - one worker process: its own event loop, the HTTP front
 * (front.c) on its own SO_REUSEPORT socket from the supervisor (the kernel
 * spreads connections over the workers), which hands each request to the
 * pipeline (pipeline.c: route, identify, admit, handle, log), the
 * graceful drain on SIGTERM/SIGINT: stop accepting, let replies in
 * progress finish up to DRAIN_TIMEOUT, then close whatever is left, and the
 * access tokens' reload on SIGHUP.
 */
#include "worker.h"
#include "accesslog.h"
#include "front.h"
#include "models.h"
#include "pipeline.h"
#include "shared.h"

#include <event2/event.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zjuchat.h>

static void maybe_finish_drain(srv_worker *w)
{
    if (w->draining && srv_front_open_requests(w->front) <= 0)
        event_base_loopexit(w->base, NULL);
}

/* The front wrote a reply, or lost its client: the drain may be over. */
static void on_request_done(void *arg)
{
    maybe_finish_drain(arg);
}

long srv_worker_pending(const srv_worker *w)
{
    return srv_front_open_requests(w->front);
}

#define DRAIN_FLUSH_S 2 /* after the deadline, time for the last bytes to go out */

static void on_drain_flush_timeout(evutil_socket_t fd, short what, void *arg)
{
    srv_worker *w = arg;
    srv_log("drain: %ld reply(ies) still unsent %ds after the deadline; closing them",
            srv_worker_pending(w), DRAIN_FLUSH_S);
    event_base_loopexit(w->base, NULL);
}

/* The deadline passed: end every relay properly (an error event and the
 * terminating chunk for streams, 503 for the others), then leave once those
 * replies are written, or DRAIN_FLUSH_S later for clients that do not read. */
static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    srv_worker *w = arg;
    srv_log("drain deadline reached with %ld request(s) unfinished; ending them",
            srv_worker_pending(w));
    srv_pipeline_abort_all(w, "server is shutting down");
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
    srv_front_drain(w->front); /* closes the listening socket and idle connections */
    srv_log("worker draining: %ld request(s) in progress, deadline %lds",
            srv_worker_pending(w), w->cfg->drain_timeout_s);
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

/* SIGHUP (forwarded by the supervisor): read ACCESS_TOKENS_FILE again. The
 * new table serves the requests that come next; those in flight keep the
 * table they were identified with (their own reference). A bad file
 * changes nothing. */
static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    srv_worker *w = arg;
    const char *path = w->cfg->access_tokens_file;
    if (!path)
        return;
    char err[512];
    srv_tokens *fresh = NULL;
    if (srv_tokens_load(path, &fresh, err, sizeof err) < 0) {
        srv_log("%s; keeping the %zu tokens loaded before", err,
                srv_tokens_count(w->tokens));
        return;
    }
    srv_tokens_unref(w->tokens);
    w->tokens = fresh;
    srv_log("access tokens: %zu loaded from %s", srv_tokens_count(fresh), path);
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

int srv_worker_setup(srv_worker *w)
{
    const srv_config *cfg = w->cfg;
    w->base = event_base_new();
    if (!w->base)
        return -1;
    if (srv_shared_use_loop(w->base, cfg) < 0) {
        srv_log("cannot set up the Redis rate limiter");
        return -1;
    }
    if (make_client(w) < 0)
        return -1;
    if (!(w->models = srv_models_new(w)))
        return -1;
    srv_front_limits lim = {cfg->max_headers, cfg->max_body, cfg->request_timeout_s};
    w->front =
        srv_front_new(w->base, &lim, srv_pipeline_request, srv_pipeline_front_error, w);
    if (!w->front)
        return -1;
    srv_front_on_request_done(w->front, on_request_done);
    w->sig_term = evsignal_new(w->base, SIGTERM, on_signal, w);
    w->sig_int = evsignal_new(w->base, SIGINT, on_signal, w);
    w->sig_hup = evsignal_new(w->base, SIGHUP, on_reload, w);
    if (!w->sig_term || !w->sig_int || !w->sig_hup)
        return -1;
    event_add(w->sig_term, NULL);
    event_add(w->sig_int, NULL);
    event_add(w->sig_hup, NULL);
    /* The supervisor forks workers with SIGHUP blocked, so that a reload
     * sent before this handler existed waits (pending) instead of killing
     * the worker or being lost; it is delivered here. */
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigprocmask(SIG_UNBLOCK, &hup, NULL);
    if (srv_front_listen(w->front, w->listen_fd) < 0) {
        srv_log("cannot accept on the listening socket: %s",
                evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        return -1;
    }
    return 0;
}

void srv_worker_teardown(srv_worker *w)
{
    /* Closing the connections first: relays still running see on_gone and
     * cancel their upstream calls before the client goes. */
    srv_front_free(w->front);
    if (w->client)
        zjuchat_client_free(w->client); /* ends the model list's fetch, if any */
    srv_models_free(w->models);
    srv_shared_leave_loop(); /* after the relays: their ends still count */
    if (w->drain_timer)
        event_free(w->drain_timer);
    if (w->sig_term)
        event_free(w->sig_term);
    if (w->sig_int)
        event_free(w->sig_int);
    if (w->sig_hup)
        event_free(w->sig_hup);
    srv_tokens_unref(w->tokens);
    w->tokens = NULL;
    if (w->base)
        event_base_free(w->base);
}

int srv_worker_run(const srv_config *cfg, int listen_fd, srv_tokens *tokens)
{
    srv_worker w;
    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    w.listen_fd = listen_fd;
    w.tokens = tokens;
    signal(SIGPIPE, SIG_IGN);
    int rc = 0;
    if (srv_worker_setup(&w) < 0) {
        rc = 2;
    } else {
        event_base_dispatch(w.base);
        srv_log("worker exiting");
    }
    srv_worker_teardown(&w);
    return rc;
}
