/*
 * Connection bookkeeping of the mock: counts accepted, open and client-closed
 * connections, notices a client that leaves before the answer starts (evhttp
 * does not read the socket then), and lets faults close a connection with a FIN
 * or a RST.
 */
#include "mock.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent_ssl.h>

/*
 * evhttp offers no hook once a connection object exists, only this factory of
 * its bufferevent. The connection object is created right after, in the same
 * accept callback, so the record is adopted from an event activated now: it
 * runs before the loop polls again, hence before any I/O on that connection.
 */
struct bufferevent *mock_conn_bevcb(struct event_base *base, void *arg)
{
    struct bufferevent *bev;
    struct mock_conn *c;
    if (mock.ssl_ctx) {
        SSL *ssl = SSL_new(mock.ssl_ctx);
        if (!ssl)
            return NULL;
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev)
        return NULL;
    mock.stats.connections_accepted++;
    mock.stats.connections_open++;
    c = calloc(1, sizeof(*c));
    if (!c)
        return bev; /* served, just not tracked */
    c->bev = bev;
    c->fd = -1;
    c->next = mock.pending;
    mock.pending = c;
    event_active(mock.adopt_ev, EV_TIMEOUT, 1);
    return bev;
}

static void conn_closed(struct evhttp_connection *evcon, void *arg)
{
    struct mock_conn *c = arg;
    struct mock_req *m = c->cur;
    if (mock.stats.connections_open > 0)
        mock.stats.connections_open--;
    if (m) {
        if (!m->self_close) {
            mock.stats.connections_closed_by_client++;
            mock.stats.last_close_ms = mock_now_ms();
        }
        /* evhttp detaches an unfinished request on a client close (then it is
         * ours to free); otherwise it frees the request with the connection. */
        if (!m->replied && evhttp_request_get_connection(m->req) == NULL)
            evhttp_request_free(m->req);
        mock_req_free(m);
    }
    if (c->fd >= 0 && c->fd < mock.nconns && mock.conns[c->fd] == c)
        mock.conns[c->fd] = NULL;
    free(c);
}

void mock_conn_adopt(evutil_socket_t fd, short what, void *arg)
{
    while (mock.pending) {
        struct mock_conn *c = mock.pending;
        void *cbarg = NULL;
        mock.pending = c->next;
        c->next = NULL;
        bufferevent_getcb(c->bev, NULL, NULL, NULL, &cbarg);
        c->evcon = cbarg;
        c->fd = (int)bufferevent_getfd(c->bev);
        if (!c->evcon || c->fd < 0 || c->fd >= mock.nconns) {
            free(c); /* cannot happen with libevent 2.1; stay safe */
            continue;
        }
        mock.conns[c->fd] = c;
        evhttp_connection_set_closecb(c->evcon, conn_closed, c);
        /* As nginx does for kept-alive connections (tcp_nodelay on): over
         * TLS a reply's head and body are two records, two writes, and with
         * Nagle the second waited for the client's delayed ACK, 40 ms on
         * every non-stream answer after the first. */
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
}

struct mock_conn *mock_conn_of(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev;
    evutil_socket_t fd;
    if (!evcon || !(bev = evhttp_connection_get_bufferevent(evcon)))
        return NULL;
    fd = bufferevent_getfd(bev);
    if (fd < 0 || fd >= mock.nconns || !mock.conns[fd] || mock.conns[fd]->evcon != evcon)
        return NULL;
    return mock.conns[fd];
}

void mock_conn_close(struct mock_req *m, int how)
{
    struct mock_conn *c = m->conn;
    m->self_close = 1;
    if (how == MOCK_CLOSE_RST) {
        /* evhttp shuts the socket down for writing (FIN) before the close; to
         * make the peer see a reset and nothing else, close it here first with
         * a zero linger and leave evhttp a bufferevent without a socket. */
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        if (!mock.ssl_ctx) {
            bufferevent_setfd(c->bev, -1);
            close(c->fd);
        }
    }
    evhttp_connection_free(c->evcon); /* runs conn_closed: frees m and c */
}

static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mock_req *m = arg;
    unsigned char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    /* A TLS client says goodbye with an alert record (type 21) before its FIN. */
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) ||
        (n == 1 && mock.ssl_ctx && b == 21)) {
        mock.stats.connections_closed_by_client++;
        mock.stats.last_close_ms = mock_now_ms();
        mock_conn_close(m, MOCK_CLOSE_FIN); /* counted above, not again */
        return;
    }
    if (n < 0) {
        event_add(m->watch, NULL);
        return;
    }
    /* The client sent more bytes (pipelining): stop watching, they stay queued. */
}

void mock_req_watch(struct mock_req *m, int on)
{
    if (!on) {
        if (m->watch)
            event_del(m->watch);
        return;
    }
    if (!m->conn)
        return;
    if (!m->watch)
        m->watch = event_new(mock.base, m->conn->fd, EV_READ, watch_cb, m);
    if (m->watch)
        event_add(m->watch, NULL);
}

void mock_req_free(struct mock_req *m)
{
    if (m->conn && m->conn->cur == m)
        m->conn->cur = NULL;
    if (m->counted_stream && mock.stats.streams_active > 0)
        mock.stats.streams_active--;
    if (m->timer)
        event_free(m->timer);
    if (m->watch)
        event_free(m->watch);
    if (m->body)
        evbuffer_free(m->body);
    if (m->pending)
        evbuffer_free(m->pending);
    free(m->model_json);
    free(m->auth);
    free(m);
}
