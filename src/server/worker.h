/*
 * worker.h - one worker process: an event_base, an evhttp front on its own
 * SO_REUSEPORT listening socket (opened by the supervisor, listeners.c), and
 * one zjuchat_client for the upstream.
 */
#ifndef SRV_WORKER_H
#define SRV_WORKER_H

#include "config.h"

struct event_base;
struct evhttp;
struct evhttp_bound_socket;
struct evhttp_connection;
struct evconnlistener;
struct event;
struct zjuchat_client;
struct chat_ctx;
struct srv_conntrack;

typedef struct srv_worker {
    const srv_config *cfg;
    int listen_fd; /* from the supervisor; the listener owns it once made */
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct evconnlistener *listener;
    struct zjuchat_client *client; /* NULL when ZJU_API_KEY is unset */
    long pending;                  /* requests whose reply is not finished */
    long calls;                    /* upstream calls in flight */
    int draining;
    struct chat_ctx *chats; /* relays in progress (chat.c's list) */
    struct event *drain_timer;
    struct event *accept_retry;
    struct event *sig_term, *sig_int;
    struct srv_conntrack *conns; /* whole-request deadlines */
} srv_worker;

/* Run a worker on the listening socket listen_fd until drained (the drain
 * closes listen_fd). Returns the process exit code: 0 after a drain, 2 when
 * it could not start. */
int srv_worker_run(const srv_config *cfg, int listen_fd);

/* A request counted in `pending` will never complete normally (its client
 * left); forget it, and end the drain if it was the last. */
void srv_worker_request_gone(srv_worker *w);

/* Count evcon's request as gone if the connection dies before its reply is
 * written (evhttp then never calls the completion callback). Used for every
 * request; a relay replaces it while it owns the request, then restores it. */
void srv_worker_watch_close(srv_worker *w, struct evhttp_connection *evcon);

#endif
