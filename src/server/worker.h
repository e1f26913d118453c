/*
 * worker.h - one worker process: an event_base, the HTTP front (front.h) on its own
 * SO_REUSEPORT listening socket (opened by the supervisor, listeners.c), and
 * one zjuchat_client for the upstream.
 */
#ifndef SRV_WORKER_H
#define SRV_WORKER_H

#include "config.h"
#include "tokens.h"

struct event_base;
struct event;
struct zjuchat_client;
struct srv_ctx;
struct srv_front;
struct srv_models;

typedef struct srv_worker {
    const srv_config *cfg;
    int listen_fd; /* from the supervisor; the front owns it once listening */
    struct event_base *base;
    struct srv_front *front;
    struct zjuchat_client *client; /* NULL when ZJU_API_KEY is unset */
    struct srv_models *models;     /* GET /v1/models's list (models.h) */
    long calls;                    /* upstream requests admitted, in flight */
    int draining;
    struct srv_ctx *kept; /* contexts kept by handlers (pipeline.c's list) */
    /* The access tokens (ACCESS_TOKENS_FILE) new requests are identified
     * with, one reference; NULL: no file set, the API is open. SIGHUP
     * reloads it (a bad file keeps this one). */
    srv_tokens *tokens;
    struct event *drain_timer;
    struct event *sig_term, *sig_int, *sig_hup;
} srv_worker;

/* Run a worker on the listening socket listen_fd until drained (the drain
 * closes listen_fd), with the access tokens table `tokens` (the worker takes
 * over this reference; NULL when ACCESS_TOKENS_FILE is unset). Returns the
 * process exit code: 0 after a drain, 2 when it could not start. */
int srv_worker_run(const srv_config *cfg, int listen_fd, srv_tokens *tokens);

/* The parts of srv_worker_run, for a harness that drives the loop itself
 * (fuzz/fuzz_http.c): setup fills w (cfg and listen_fd set by the caller)
 * and returns 0, or -1 after logging why; teardown frees what setup made,
 * also after a failed setup. */
int srv_worker_setup(srv_worker *w);
void srv_worker_teardown(srv_worker *w);

/* Requests whose reply is not yet written (the drain waits for none). */
long srv_worker_pending(const srv_worker *w);

#endif
