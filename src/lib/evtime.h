/*
 * evtime.h - the transport's two millisecond helpers: time elapsed since a
 * CLOCK_MONOTONIC stamp, and arming a libevent timer. Several files of the
 * transport need them (call.c, reply.c, retry.c, curl_ev.c); inline so that
 * the idle timer's re-arm on every upstream read costs what it did when they
 * were static in one file.
 */
#ifndef ZJUCHAT_EVTIME_H
#define ZJUCHAT_EVTIME_H

#include <event2/event.h>
#include <time.h>

static inline long zjuchat__ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)((now.tv_sec - t0->tv_sec) * 1000 +
                  (now.tv_nsec - t0->tv_nsec) / 1000000);
}

static inline void zjuchat__add_timer_ms(struct event *ev, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

#endif
