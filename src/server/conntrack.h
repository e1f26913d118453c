/*
 * conntrack.h - whole-request deadline for client connections (REQUEST_TIMEOUT
 * counted from the accept, or from the end of the previous reply, to the
 * end of the request), which evhttp's per-byte inactivity timeout is not.
 */
#ifndef SRV_CONNTRACK_H
#define SRV_CONNTRACK_H

struct event_base;
struct evhttp;
struct evhttp_request;

typedef struct srv_conntrack srv_conntrack;

/* Install on `http` (takes over its bufferevent callback). NULL on OOM. */
srv_conntrack *srv_conntrack_new(struct event_base *base, struct evhttp *http,
                                 long timeout_s);
/* After evhttp_free: releases the connection references it still holds. */
void srv_conntrack_free(srv_conntrack *ct);
/* The request handler got req: its connection is no longer reading. */
void srv_conntrack_request_received(srv_conntrack *ct, struct evhttp_request *req);
/* req's reply is written: the connection reads its next request. */
void srv_conntrack_reply_done(srv_conntrack *ct, struct evhttp_request *req);
/* Connections cut at their deadline so far. */
long srv_conntrack_closed(const srv_conntrack *ct);

#endif
