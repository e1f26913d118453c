/*
 * limits_redis.h - the rate limiter shared by several server instances
 * through Redis (REDIS_URL): the same srv_limiter (ratelimit.h) and the same
 * semantics as the shared-memory one, the counts kept in Redis and updated
 * by Lua scripts (limits_redis_lua.c), one round trip per admit and one per
 * done, on an asynchronous hiredis connection on the worker's event loop.
 *
 * While Redis cannot be reached (down, refusing, too slow: no reply within
 * REDIS_TIMEOUT_MS), no request waits on it: each gets the failure verdict
 * at once, REDIS_FAILURE=open lets it through counted nowhere, closed
 * refuses it (503, code limits_unavailable). The connection comes back by
 * itself (a timer, with backoff), and the limits with it.
 */
#ifndef SRV_LIMITS_REDIS_H
#define SRV_LIMITS_REDIS_H

#include "config.h"
#include "ratelimit.h"

struct event_base;

/* This worker's limiter on Redis, connecting from base's loop (it answers
 * admits while the first connection is made: they wait for it, up to the
 * timeout). NULL when out of memory. */
srv_limiter *srv_limits_redis_new(struct event_base *base, const srv_redis_config *rc);

/* Close the connection: admits still waiting get the failure verdict. */
void srv_limits_redis_free(srv_limiter *l);

/* The scripts (limits_redis_lua.c), for the unit tests too. */
extern const char srv_redis_admit_lua[];
extern const char srv_redis_update_lua[];
extern const char srv_redis_usage_lua[];

#endif
