/*
 * rawupstream.h - helpers for C tests that play a hand-written upstream on
 * a loopback socket (a thread that answers with scripted bytes), where the
 * mock cannot misbehave the way a test needs. Header-only, like mockproc.h.
 */
#ifndef ZJUCHAT_TEST_RAWUPSTREAM_H
#define ZJUCHAT_TEST_RAWUPSTREAM_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000;
}

/* Reads one request (head and Content-Length body, up to 64 KB) from fd. */
static inline void read_request(int fd)
{
    char req[65536];
    size_t got = 0;
    long want = -1;
    while (got < sizeof req - 1) {
        ssize_t r = read(fd, req + got, sizeof req - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        req[got] = '\0';
        char *end = strstr(req, "\r\n\r\n");
        if (!end)
            continue;
        char *cl = strcasestr(req, "content-length:");
        want = (end - req) + 4 + (cl ? atol(cl + 15) : 0);
        if ((long)got >= want)
            break;
    }
}

/* A listening loopback socket on an ephemeral port (its number to *port),
 * or -1. */
static inline int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* An upstream that answers the i-th connection's request with replies[i],
 * then closes that connection. served counts the answers written (atomic). */
struct scripted {
    int lfd, port;
    const char *const *replies;
    int n, served;
    pthread_t th;
};

static inline void *scripted_run(void *arg)
{
    struct scripted *u = arg;
    for (int i = 0; i < u->n; i++) {
        int fd = accept(u->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        read_request(fd);
        size_t len = strlen(u->replies[i]);
        if (write(fd, u->replies[i], len) == (ssize_t)len)
            __atomic_add_fetch(&u->served, 1, __ATOMIC_RELEASE);
        close(fd);
    }
    return NULL;
}

/* On the heap: a failed assertion leaves the test while the thread runs.
 * replies must outlive scripted_stop. NULL when no socket could be had. */
static inline struct scripted *scripted_start(const char *const *replies, int n)
{
    struct scripted *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->replies = replies;
    u->n = n;
    u->lfd = listen_loopback(&u->port);
    if (u->lfd < 0 || pthread_create(&u->th, NULL, scripted_run, u) != 0) {
        if (u->lfd >= 0)
            close(u->lfd);
        free(u);
        return NULL;
    }
    return u;
}

/* Waits until every reply was given, then frees u. */
static inline void scripted_stop(struct scripted *u)
{
    pthread_join(u->th, NULL);
    close(u->lfd);
    free(u);
}

#endif
