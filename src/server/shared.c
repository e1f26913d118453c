/*
 * shared.c - the shared region of one server, set up before the fork
 * (shared.h).
 */
#include "shared.h"
#include "limits_redis.h"
#include "proxies.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static srv_shared shared;
static int ready;

int srv_shared_setup(const srv_config *cfg, char *err, size_t errlen)
{
    /* Loopback by default: metrics say who calls how much; a scraper
     * elsewhere gets METRICS_ALLOW or METRICS_TOKEN. */
    const char *allow = cfg->metrics_allow ? cfg->metrics_allow : "127.0.0.0/8, ::1";
    if (srv_cidrs_parse("METRICS_ALLOW", allow, &shared.metrics_allow, err, errlen) < 0)
        return -1;
    shared.metrics_token = cfg->metrics_token;
    int workers = cfg->workers > 0 ? cfg->workers : 1;
    size_t lim = srv_limits_shm_size((size_t)cfg->limits_keys, workers);
    size_t met = srv_metrics_size(workers);
    if (srv_shm_map(&shared.shm, srv_shm_piece(lim) + srv_shm_piece(met)) < 0) {
        snprintf(err, errlen, "cannot map %zu bytes of shared memory (LIMITS_KEYS=%ld)",
                 srv_shm_piece(lim) + srv_shm_piece(met), cfg->limits_keys);
        srv_proxies_free(shared.metrics_allow);
        memset(&shared, 0, sizeof shared);
        return -1;
    }
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
    shared.limits = srv_limits_shm_init(srv_shm_carve(&shared.shm, lim),
                                        (size_t)cfg->limits_keys, workers, seed);
    shared.metrics = srv_metrics_init(srv_shm_carve(&shared.shm, met), workers);
    if (!shared.limits || !shared.metrics) {
        snprintf(err, errlen, "cannot set up the shared memory's locks");
        srv_proxies_free(shared.metrics_allow);
        srv_shm_unmap(&shared.shm);
        memset(&shared, 0, sizeof shared);
        return -1;
    }
    shared.slot = -1;
    ready = 1;
    return 0;
}

void srv_shared_attach(int slot)
{
    if (!ready)
        return;
    shared.slot = slot;
    shared.limiter = srv_limits_shm_attach(shared.limits, slot);
    srv_metrics_attach(shared.metrics, slot);
}

static srv_limiter *redis_limiter;

int srv_shared_use_loop(struct event_base *base, const srv_config *cfg)
{
    if (!ready || !cfg->redis.url)
        return 0;
    redis_limiter = srv_limits_redis_new(base, &cfg->redis);
    if (!redis_limiter)
        return -1;
    shared.limiter = redis_limiter;
    return 0;
}

void srv_shared_leave_loop(void)
{
    if (!redis_limiter)
        return;
    srv_limiter *l = redis_limiter;
    redis_limiter = NULL;
    srv_limits_redis_free(l); /* admits waiting on it are answered now */
    shared.limiter = NULL;    /* the requests that end later count nowhere */
}

const srv_shared *srv_shared_get(void)
{
    return ready ? &shared : NULL;
}
