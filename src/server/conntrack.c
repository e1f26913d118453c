/*
 * conntrack.c - a whole-request deadline for client connections.
 *
 * evhttp's own timeout restarts with every byte, so a client sending one
 * byte per second would hold its connection for hours (slowloris). libevent
 * 2.1 has no hook for "a connection was accepted" or "it was freed", so:
 *   - we create each connection's bufferevent (evhttp_set_bevcb) and keep a
 *     reference to it, which keeps it alive after evhttp frees it;
 *     bufferevent_free clears its callbacks, which is how we tell a dead
 *     connection. The bufferevent owns its socket (BEV_OPT_CLOSE_ON_FREE):
 *     evhttp then only shuts it down, and the descriptor is closed when the
 *     last reference goes, after the bufferevent deleted its events. Had
 *     evhttp closed it while our reference kept the bufferevent's read event
 *     registered, the next connection accepted on the same descriptor number
 *     would inherit libevent's stale "already in epoll" state and never be
 *     polled: a Connection: close or HTTP/1.0 request whose body needed a
 *     second read hung (docs/FAULTS.md, "front");
 *   - a connection whose reply was just written is checked again right after
 *     evhttp is done with it (a deferred event), so a closed connection's
 *     descriptor goes at once, not at the next sweep;
 *   - a dead connection is closed lingering, as nginx does: evhttp has shut
 *     down our sending side, and we read and discard what the client still
 *     sends until it closes (LINGER_TIMEOUT_MS of silence, LINGER_TOTAL_MS in
 *     all). Closing a socket with unread input sends a reset, which destroys
 *     the reply the client has not read yet: a 413 for a body it is still
 *     sending arrived as "connection reset" / "broken pipe";
 *   - its fd is learned right after the accept (a deferred event in the same
 *     loop turn, before any byte can be read), giving an fd-indexed table
 *     that maps a request back to its connection;
 *   - a connection has a deadline while evhttp reads a request from it:
 *     from the accept, and again from the end of each reply (keep-alive);
 *     the request handler clears it;
 *   - once a second a sweep frees dead entries and shuts down the socket of
 *     every connection past its deadline; evhttp then sees the end of input
 *     and frees the connection itself.
 */
#include "conntrack.h"
#include "accesslog.h"
#include "worker.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

/* nginx's lingering_timeout and lingering_time */
#define LINGER_TIMEOUT_MS 5000
#define LINGER_TOTAL_MS 30000

typedef struct conn_entry {
    struct bufferevent *bev;
    evutil_socket_t fd; /* -1 until registered */
    long deadline_ms;   /* 0: not reading a request */
    long linger_end_ms; /* evhttp is done with it; discarding input until then */
    struct srv_conntrack *ct;
    struct conn_entry *prev, *next;
} conn_entry;

struct srv_conntrack {
    struct event_base *base;
    long timeout_ms;
    conn_entry *all;
    conn_entry **by_fd; /* by_fd[fd]: the live connection on fd, or NULL */
    size_t nfd;
    conn_entry **fresh; /* created, fd not yet known */
    size_t nfresh, capfresh;
    struct event *register_ev;
    struct event *sweep_ev;
    struct event *reap_ev; /* drops entries of connections closed after a reply */
    conn_entry **reap;     /* entries to check, NULL where already gone */
    size_t nreap, capreap;
    long closed; /* connections cut at their deadline */
};

static long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000;
}

static void unlink_entry(srv_conntrack *ct, conn_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        ct->all = e->next;
    if (e->next)
        e->next->prev = e->prev;
    if (e->fd >= 0 && (size_t)e->fd < ct->nfd && ct->by_fd[e->fd] == e)
        ct->by_fd[e->fd] = NULL;
    for (size_t i = 0; i < ct->nfresh; i++)
        if (ct->fresh[i] == e)
            ct->fresh[i] = NULL;
    for (size_t i = 0; i < ct->nreap; i++)
        if (ct->reap[i] == e)
            ct->reap[i] = NULL;
    bufferevent_decref(e->bev); /* the last reference closes the socket */
    free(e);
}

static int entry_alive(conn_entry *e)
{
    if (e->linger_end_ms)
        return 0;
    bufferevent_data_cb rd = NULL, wr = NULL;
    bufferevent_event_cb ev = NULL;
    void *arg = NULL;
    bufferevent_getcb(e->bev, &rd, &wr, &ev, &arg);
    return rd != NULL || ev != NULL;
}

static void on_linger_read(struct bufferevent *bev, void *arg)
{
    conn_entry *e = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (now_ms() >= e->linger_end_ms)
        unlink_entry(e->ct, e);
}

static void on_linger_event(struct bufferevent *bev, short what, void *arg)
{
    conn_entry *e = arg; /* end of input, an error, or LINGER_TIMEOUT_MS of silence */
    unlink_entry(e->ct, e);
}

/* evhttp freed the connection: discard what the client still sends, then
 * close (see the top of the file). */
static void start_linger(srv_conntrack *ct, conn_entry *e)
{
    struct bufferevent *bev = e->bev;
    if (bufferevent_getfd(bev) < 0) {
        unlink_entry(ct, e);
        return;
    }
    e->linger_end_ms = now_ms() + LINGER_TOTAL_MS;
    e->deadline_ms = 0;
    struct timeval t = {LINGER_TIMEOUT_MS / 1000, (LINGER_TIMEOUT_MS % 1000) * 1000};
    bufferevent_disable(bev, EV_WRITE);
    bufferevent_setcb(bev, on_linger_read, NULL, on_linger_event, e);
    bufferevent_set_timeouts(bev, &t, NULL);
    bufferevent_enable(bev, EV_READ);
    on_linger_read(bev, e); /* what evhttp left in the input buffer */
}

/* Runs in the loop turn of the accept, after evhttp set the fd. */
static void on_register(evutil_socket_t fd_unused, short what, void *arg)
{
    srv_conntrack *ct = arg;
    for (size_t i = 0; i < ct->nfresh; i++) {
        conn_entry *e = ct->fresh[i];
        if (!e)
            continue;
        evutil_socket_t fd = bufferevent_getfd(e->bev);
        if (fd < 0 || (size_t)fd >= ct->nfd)
            continue; /* untracked: evhttp's inactivity timeout still applies */
        conn_entry *old = ct->by_fd[fd];
        if (old && old != e)
            old->fd = -1; /* its fd was closed and reused: it is dead */
        e->fd = fd;
        ct->by_fd[fd] = e;
    }
    ct->nfresh = 0;
}

static void on_sweep(evutil_socket_t fd_unused, short what, void *arg)
{
    srv_conntrack *ct = arg;
    long now = now_ms();
    conn_entry *e = ct->all;
    while (e) {
        conn_entry *next = e->next;
        if (e->linger_end_ms) {
            if (now >= e->linger_end_ms)
                unlink_entry(ct, e);
        } else if (!entry_alive(e)) {
            start_linger(ct, e);
        } else if (e->deadline_ms && now >= e->deadline_ms && e->fd >= 0) {
            /* evhttp sees end of input and frees the connection. */
            srv_log("connection fd %d sent no complete request within REQUEST_TIMEOUT; "
                    "closing it",
                    (int)e->fd);
            shutdown(e->fd, SHUT_RDWR);
            e->deadline_ms = 0;
            ct->closed++;
        }
        e = next;
    }
}

/* Runs after evhttp finished the reply that scheduled it: a connection it
 * closed is dead by now. */
static void on_reap(evutil_socket_t fd_unused, short what, void *arg)
{
    srv_conntrack *ct = arg;
    for (size_t i = 0; i < ct->nreap; i++) {
        conn_entry *e = ct->reap[i];
        if (e && !e->linger_end_ms && !entry_alive(e))
            start_linger(ct, e);
    }
    ct->nreap = 0;
}

static struct bufferevent *make_bev(struct event_base *base, void *arg)
{
    srv_conntrack *ct = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        return NULL;
    conn_entry *e = calloc(1, sizeof *e);
    if (!e)
        return bev; /* served, just without the whole-request deadline */
    if (ct->nfresh == ct->capfresh) {
        size_t cap = ct->capfresh ? ct->capfresh * 2 : 64;
        conn_entry **nf = realloc(ct->fresh, cap * sizeof *nf);
        if (!nf) {
            free(e);
            return bev;
        }
        ct->fresh = nf;
        ct->capfresh = cap;
    }
    bufferevent_incref(bev);
    e->bev = bev;
    e->ct = ct;
    e->fd = -1;
    e->deadline_ms = now_ms() + ct->timeout_ms;
    e->next = ct->all;
    if (ct->all)
        ct->all->prev = e;
    ct->all = e;
    ct->fresh[ct->nfresh++] = e;
    event_active(ct->register_ev, EV_TIMEOUT, 0);
    return bev;
}

srv_conntrack *srv_conntrack_new(struct event_base *base, struct evhttp *http,
                                 long timeout_s)
{
    srv_conntrack *ct = calloc(1, sizeof *ct);
    if (!ct)
        return NULL;
    struct rlimit rl;
    ct->nfd = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                  ? (size_t)rl.rlim_cur
                  : 65536;
    if (ct->nfd > (1u << 20))
        ct->nfd = 1u << 20;
    ct->base = base;
    ct->timeout_ms = timeout_s * 1000;
    ct->by_fd = calloc(ct->nfd, sizeof *ct->by_fd);
    ct->register_ev = event_new(base, -1, 0, on_register, ct);
    ct->sweep_ev = event_new(base, -1, EV_PERSIST, on_sweep, ct);
    ct->reap_ev = event_new(base, -1, 0, on_reap, ct);
    if (!ct->by_fd || !ct->register_ev || !ct->sweep_ev || !ct->reap_ev) {
        srv_conntrack_free(ct);
        return NULL;
    }
    struct timeval second = {1, 0};
    event_add(ct->sweep_ev, &second);
    evhttp_set_bevcb(http, make_bev, ct);
    return ct;
}

void srv_conntrack_free(srv_conntrack *ct)
{
    if (!ct)
        return;
    while (ct->all)
        unlink_entry(ct, ct->all);
    if (ct->register_ev)
        event_free(ct->register_ev);
    if (ct->sweep_ev)
        event_free(ct->sweep_ev);
    if (ct->reap_ev)
        event_free(ct->reap_ev);
    free(ct->reap);
    free(ct->fresh);
    free(ct->by_fd);
    free(ct);
}

static conn_entry *entry_of(srv_conntrack *ct, struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (!ct || fd < 0 || (size_t)fd >= ct->nfd)
        return NULL;
    conn_entry *e = ct->by_fd[fd];
    return e && e->bev == bev ? e : NULL;
}

void srv_conntrack_request_received(srv_conntrack *ct, struct evhttp_request *req)
{
    conn_entry *e = entry_of(ct, req);
    if (e)
        e->deadline_ms = 0;
}

void srv_conntrack_reply_done(srv_conntrack *ct, struct evhttp_request *req)
{
    conn_entry *e = entry_of(ct, req);
    if (!e)
        return;
    e->deadline_ms = now_ms() + ct->timeout_ms;
    /* evhttp frees a connection that ends here right after this returns;
     * look again once it has (a miss only waits for the sweep). */
    if (ct->nreap == ct->capreap) {
        size_t cap = ct->capreap ? ct->capreap * 2 : 64;
        conn_entry **nr = realloc(ct->reap, cap * sizeof *nr);
        if (!nr)
            return;
        ct->reap = nr;
        ct->capreap = cap;
    }
    ct->reap[ct->nreap++] = e;
    event_active(ct->reap_ev, EV_TIMEOUT, 0);
}

long srv_conntrack_closed(const srv_conntrack *ct)
{
    return ct ? ct->closed : 0;
}
