/*
 * shared.h - what the workers of one server share: the region (shm.h) with
 * the rate limiter's table (ratelimit.h) and the metrics registry (metrics.h),
 * and the metrics' access rule (METRICS_ALLOW, METRICS_TOKEN). The
 * supervisor sets it up once before it forks; each worker attaches to it as
 * its slot right after the fork. A process that never set it up (a fuzz
 * harness driving one worker) has none: no limits, no metrics.
 */
#ifndef SRV_SHARED_H
#define SRV_SHARED_H

#include "config.h"
#include "ratelimit.h"
#include "metrics.h"
#include "shm.h"

struct srv_proxies;

typedef struct srv_shared {
    srv_shm shm;
    srv_limits_shm *limits; /* the table, in shm */
    srv_limiter *limiter;   /* this worker's limiter on it; NULL before attach */
    srv_metrics *metrics;   /* in shm */
    struct srv_proxies *metrics_allow; /* NULL: no address */
    const char *metrics_token;         /* cfg's, NULL: none */
    int slot;                          /* this worker's index; -1 in the supervisor */
} srv_shared;

/* Before the fork: map and lay out the region for cfg (workers, LIMITS_KEYS)
 * and parse METRICS_ALLOW. 0, or -1 with a message. What it makes lives as
 * long as the process. */
int srv_shared_setup(const srv_config *cfg, char *err, size_t errlen);

/* In worker `slot`, right after the fork: its limiter, and what a dead
 * predecessor in that slot held (streams places, in-flight gauge) given
 * back. */
void srv_shared_attach(int slot);

/* In a worker whose loop is base: with REDIS_URL, the limiter across
 * instances (limits_redis.h) takes the shared memory's place. 0, or -1
 * when it cannot be made. leave frees it (before base goes). */
struct event_base;
int srv_shared_use_loop(struct event_base *base, const srv_config *cfg);
void srv_shared_leave_loop(void);

/* NULL when srv_shared_setup never ran in this process's family. */
const srv_shared *srv_shared_get(void);

#endif
