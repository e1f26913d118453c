/*
 * listeners.c - the server's listening sockets (see listeners.h).
 *
 * Workers used to bind their own SO_REUSEPORT sockets. Linux lets any
 * process of the same user join a SO_REUSEPORT group, so a second server
 * started on a port in use joined the first one's group without a word and
 * the kernel alternated connections between two configurations. Now:
 *  1. a startup lock per port (an abstract unix socket: released by the
 *     kernel when its holder dies, and scoped to the network namespace like
 *     the port itself) makes servers starting at the same instant take turns;
 *  2. a plain bind without SO_REUSEPORT proves the address free: it fails
 *     with EADDRINUSE while anything listens there, a server of ours too;
 *  3. only then the n SO_REUSEPORT sockets are bound and put in the listen
 *     state, before the lock is released; from then on, step 2 fails for
 *     anyone else.
 * The supervisor keeps the sockets and hands each worker its own, so a
 * crashed worker's replacement gets the same socket back (connections
 * queued meanwhile wait for it) and the port is never bound again.
 */
#include "listeners.h"
#include "accesslog.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096
#define LOCK_WAIT_MS 5000 /* another server's startup takes milliseconds */
#define LOCK_POLL_MS 10

void srv_listen_addr_str(const srv_config *cfg, char *buf, size_t cap)
{
    if (strchr(cfg->host, ':'))
        snprintf(buf, cap, "[%s]:%d", cfg->host, cfg->port);
    else
        snprintf(buf, cap, "%s:%d", cfg->host, cfg->port);
}

void srv_listeners_close(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

/* Step 1: the startup lock of `port`, waiting while another server holds
 * it. Returns its descriptor (close() releases it), or -1 with errno. */
static int lock_port(int port)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    /* sun_path[0] == '\0': an abstract name, no file to clean up */
    int len = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1,
                       "zju-chat-server/startup/port/%d", port);
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + len);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    for (int waited = 0;; waited += LOCK_POLL_MS) {
        if (bind(fd, (struct sockaddr *)&sa, sl) == 0)
            return fd;
        if (errno != EADDRINUSE || waited >= LOCK_WAIT_MS)
            break;
        struct timespec ts = {0, LOCK_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

/* A bound TCP socket, SO_REUSEADDR (a restart must not wait for TIME_WAIT
 * connections of the previous run) and SO_REUSEPORT when asked. -1 with
 * errno on failure. */
static int bound_socket(const struct sockaddr *addr, socklen_t len, int reuseport)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
        bind(fd, addr, len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

int srv_listeners_open(srv_config *cfg, int *fds, int n)
{
    for (int i = 0; i < n; i++)
        fds[i] = -1;
    char why[200], where[300];
    struct addrinfo *ai = srv_config_bind_addr(cfg, why, sizeof why);
    if (!ai) {
        srv_log("%s", why);
        return -1;
    }
    struct sockaddr_storage addr;
    socklen_t len = ai->ai_addrlen;
    memcpy(&addr, ai->ai_addr, len);
    freeaddrinfo(ai);
    srv_listen_addr_str(cfg, where, sizeof where);

    int lock = -1, e = 0;
    /* Port 0 needs neither step 1 nor 2: for it the kernel picks a port that
     * no listener holds (SO_REUSEPORT or not), and nobody else knows it. */
    if (cfg->port != 0) {
        lock = lock_port(cfg->port);
        if (lock < 0) {
            e = errno;
            srv_log("cannot listen on %s: %s", where,
                    e == EADDRINUSE ? "another server kept starting on this port"
                                    : strerror(e));
            return -1;
        }
        int probe = bound_socket((struct sockaddr *)&addr, len, 0);
        if (probe < 0)
            goto fail;
        close(probe);
    }
    for (int i = 0; i < n; i++) {
        fds[i] = bound_socket((struct sockaddr *)&addr, len, 1);
        if (fds[i] < 0 || listen(fds[i], LISTEN_BACKLOG) < 0)
            goto fail;
        if (i == 0 && cfg->port == 0) { /* the others join the chosen port */
            len = sizeof addr;
            if (getsockname(fds[0], (struct sockaddr *)&addr, &len) < 0)
                goto fail;
            cfg->port = port_of(&addr);
        }
    }
    if (lock >= 0)
        close(lock);
    return 0;
fail:
    e = errno;
    srv_log("cannot listen on %s: %s", where, strerror(e));
    srv_listeners_close(fds, n);
    if (lock >= 0)
        close(lock);
    return -1;
}
