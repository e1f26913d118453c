/*
 * curl_sock.c - libcurl's sockets as libevent events: what libcurl asks to
 * watch (CURLMOPT_SOCKETFUNCTION) registered on the client's event_base,
 * readiness handed back to curl_multi_socket_action, and kept-alive sockets
 * left registered ("parked") between transfers. Its own file because the
 * parking has pitfalls of its own: which sockets may be parked, and a
 * registration must never outlive its descriptor.
 */
#include "curl_ev.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One libcurl socket as libevent sees it. libcurl drops a kept-alive
 * socket from its interest list at the end of every transfer and asks for it
 * again at the start of the next: two epoll_ctl calls per request for
 * nothing. So a dropped socket that was only being read stays registered,
 * "parked"; the next request's interest costs no system call. Found by fd
 * (libcurl forgets its per-socket pointer on removal); freed when libcurl
 * closes the socket, through the close callback. */
struct zjuchat__sock {
    struct event *ev;
    struct zjuchat__shard *shard;
    short kind;   /* what ev is registered for; 0 when not registered */
    int parked;   /* libcurl has no interest; ev may still be registered */
    int parkable; /* a connection socket: libcurl closes it through
                     zjuchat__sock_close_cb, which drops the registration first */
};

static struct zjuchat__sock *sock_lookup(zjuchat_client *client, curl_socket_t fd)
{
    return fd >= 0 && fd < client->socks_cap ? client->socks[fd] : NULL;
}

static void sock_drop(zjuchat_client *client, curl_socket_t fd)
{
    struct zjuchat__sock *sc = sock_lookup(client, fd);
    if (!sc)
        return;
    event_free(sc->ev);
    free(sc);
    client->socks[fd] = NULL;
}

static int sock_slot(zjuchat_client *client, curl_socket_t fd)
{
    if (fd < client->socks_cap)
        return 0;
    int cap = client->socks_cap ? client->socks_cap : 64;
    while (cap <= fd)
        cap *= 2;
    struct zjuchat__sock **grown = realloc(client->socks, (size_t)cap * sizeof *grown);
    if (!grown)
        return -1;
    memset(grown + client->socks_cap, 0,
           (size_t)(cap - client->socks_cap) * sizeof *grown);
    client->socks = grown;
    client->socks_cap = cap;
    return 0;
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct zjuchat__sock *sc = arg;
    struct zjuchat__shard *shard = sc->shard;
    if (sc->parked) {
        /* An idle keep-alive socket became readable: the upstream closed it
         * (or sent junk). libcurl finds out when it next looks at it; until
         * then stop the level-triggered wake-ups. */
        event_del(sc->ev);
        sc->kind = 0;
        return;
    }
    int flags = ((what & EV_READ) ? CURL_CSELECT_IN : 0) |
                ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    zjuchat__curl_enter(shard);
    curl_multi_socket_action(shard->multi, fd, flags, &running); /* may free sc */
    zjuchat__curl_leave(shard->client);
}

int zjuchat__sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    struct zjuchat__shard *shard = userp;
    zjuchat_client *client = shard->client;
    struct zjuchat__sock *sc = sock_lookup(client, s);
    if (what == CURL_POLL_REMOVE) {
        if (!sc)
            return 0;
        /* Only sockets libcurl opened through zjuchat__sock_open_cb may stay
         * registered: the others (the threaded resolver's socketpair) are
         * closed by libcurl without a callback, and a registration left on
         * a closed descriptor makes libevent skip the next socket that gets
         * its number (the server's next client was never read). */
        if (sc->parkable && sc->kind == (EV_PERSIST | EV_READ)) {
            sc->parked = 1; /* see struct zjuchat__sock */
            return 0;
        }
        sock_drop(client, s);
        return 0;
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                 ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (!sc) {
        if (sock_slot(client, s))
            return -1;
        sc = calloc(1, sizeof *sc);
        if (!sc)
            return -1;
        sc->ev = event_new(client->base, s, kind, on_socket_event, sc);
        if (!sc->ev) {
            free(sc);
            return -1;
        }
        client->socks[s] = sc;
    } else if (sc->kind == kind && sc->shard == shard) {
        sc->parked = 0; /* still registered as wanted: nothing to tell epoll */
        return 0;
    } else {
        event_del(sc->ev);
        event_assign(sc->ev, client->base, s, kind, on_socket_event, sc);
    }
    sc->shard = shard;
    sc->parked = 0;
    sc->kind = kind;
    event_add(sc->ev, NULL);
    return 0;
}

/* libcurl opens its connection sockets here (CURLOPT_OPENSOCKETFUNCTION):
 * noted as parkable, since their close comes through zjuchat__sock_close_cb. */
curl_socket_t zjuchat__sock_open_cb(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *addr)
{
    zjuchat_client *client = clientp;
    curl_socket_t fd = socket(addr->family, addr->socktype, addr->protocol);
    if (fd == CURL_SOCKET_BAD)
        return fd;
    struct zjuchat__sock *sc = NULL;
    if (sock_slot(client, fd) == 0 && (sc = calloc(1, sizeof *sc)) != NULL) {
        sc->ev = event_new(client->base, fd, 0, on_socket_event, sc);
        if (!sc->ev) {
            free(sc);
            sc = NULL;
        }
    }
    if (!sc) { /* unparkable is only slower: carry on without */
        return fd;
    }
    sock_drop(client, fd); /* a stale entry for a number reused behind our back */
    sc->parkable = 1;
    client->socks[fd] = sc;
    return fd;
}

/* libcurl closes its sockets here (CURLOPT_CLOSESOCKETFUNCTION): the event
 * goes before the descriptor, so that a parked registration never outlives
 * it and lands on a new socket that reuses the number. */
int zjuchat__sock_close_cb(void *clientp, curl_socket_t fd)
{
    sock_drop(clientp, fd);
    return close(fd);
}

void zjuchat__socks_free(zjuchat_client *client)
{
    for (int fd = 0; fd < client->socks_cap; fd++)
        sock_drop(client, fd);
    free(client->socks);
    client->socks = NULL;
    client->socks_cap = 0;
}
