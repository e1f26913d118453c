/*
 * rawupstream.h - helpers for C tests that play a hand-written upstream on
 * a loopback socket (a thread that answers with scripted bytes), where the
 * mock cannot misbehave the way a test needs. Header-only, like mockproc.h.
 */
#ifndef ZJUCHAT_TEST_RAWUPSTREAM_H
#define ZJUCHAT_TEST_RAWUPSTREAM_H

#include <stdlib.h>
#include <string.h>
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

#endif
