/*
 * ratelimit.h - rate limits: requests per minute (rpm), tokens per minute
 * (tpm), tokens per day (tpd) and requests in flight (streams), counted per
 * key ("ip:<address>" for IP_RPM / IP_TPM, "tok:<name>" for an access
 * token's limits) and shared by every worker of the server.
 *
 * The windows are sliding, in fixed slots: a minute is the current second
 * and the 59 before it, a day the current quarter hour and the 95 before it.
 * A request admitted in second s counts against rpm until s + 60 exactly;
 * tokens count from the moment the reply is known (its usage) for the same
 * span. So "rpm=10" admits 10 requests in any 60 s however fast they come,
 * and Retry-After is the true wait: the time until enough slots leave the
 * window for one more request to fit (rounded up to a second). tpm and tpd
 * admit while the tokens in the window are below the limit: the request
 * that crosses it runs (its size is known only at its end), the next waits.
 * A refused request counts for nothing. README "Rate limits" says the same
 * for users.
 *
 * The interface (srv_limiter) is a verdict callback, so that a limiter
 * shared over the network (Redis, across instances) can answer later from
 * the event loop; the shared-memory one (srv_limits_shm_*) answers at once.
 */
#ifndef SRV_RATELIMIT_H
#define SRV_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#define SRV_LIMIT_KEY_MAX 80 /* "tok:" + a 64-byte name, "ip:" + an address */
#define SRV_LIMIT_RULES 2    /* keys one request counts on (address, token) */

typedef struct srv_limit_rule {
    char key[SRV_LIMIT_KEY_MAX];
    long rpm, tpm, tpd, streams; /* 0: no such limit */
    int held;                    /* admitted: holds a streams place */
} srv_limit_rule;

/* The rules one request is counted on; all of them admit it or none. */
typedef struct srv_limit_ask {
    int n;
    srv_limit_rule rule[SRV_LIMIT_RULES];
} srv_limit_ask;

typedef struct srv_limit_verdict {
    int allowed;
    /* refused: */
    long retry_after_s; /* >= 1: whole seconds until it would be admitted */
    const char *limit;  /* "rpm", "tpm", "tpd" or "streams" */
    long value;         /* that limit's value */
    int rule;           /* index of the rule that refused */
    /* refused because the limiter cannot decide (Redis unreachable with
     * REDIS_FAILURE=closed): 503, not 429; limit "unavailable" */
    int unavailable;
} srv_limit_verdict;

typedef void (*srv_limit_verdict_cb)(void *arg, const srv_limit_verdict *v);

#define SRV_LIMIT_ANSWERED 0 /* cb ran inside srv_limiter_admit */
#define SRV_LIMIT_PENDING 1  /* cb runs later, from the worker's event loop */

/* What a key has used in its windows now (GET /v1/usage). */
typedef struct srv_limit_usage {
    int known;            /* 0: the limiter could not say (unreachable) */
    long requests_minute; /* requests in the last 60 s */
    long tokens_minute;   /* tokens in the last 60 s */
    long tokens_day;      /* tokens in the last 24 h */
    long streams;         /* requests in flight holding a place */
} srv_limit_usage;

typedef void (*srv_limit_usage_cb)(void *arg, const srv_limit_usage *u);

typedef struct srv_limiter srv_limiter;
typedef struct srv_limiter_ops {
    /* May the request counted on `ask` run now? Allowed: each rule's key
     * counts one request, and a rule with a streams limit holds one place
     * (rule.held set in *ask) until done. The verdict goes to cb exactly
     * once, now or later (see above). */
    int (*admit)(srv_limiter *l, srv_limit_ask *ask, srv_limit_verdict_cb cb, void *arg);
    /* The admitted request has ended: its tokens (usage.total_tokens, -1
     * unknown) count on the rules with tpm or tpd, held places are given
     * back. */
    void (*done)(srv_limiter *l, const srv_limit_ask *ask, long total_tokens);
    /* What `key` has used, to cb exactly once, now (SRV_LIMIT_ANSWERED) or
     * later (SRV_LIMIT_PENDING); counts nothing. NULL: a limiter that
     * cannot tell (the caller answers without it). */
    int (*usage)(srv_limiter *l, const char *key, srv_limit_usage_cb cb, void *arg);
} srv_limiter_ops;

struct srv_limiter {
    const srv_limiter_ops *ops;
};

static inline int srv_limiter_admit(srv_limiter *l, srv_limit_ask *ask,
                                    srv_limit_verdict_cb cb, void *arg)
{
    return l->ops->admit(l, ask, cb, arg);
}

static inline void srv_limiter_done(srv_limiter *l, const srv_limit_ask *ask,
                                    long total_tokens)
{
    l->ops->done(l, ask, total_tokens);
}

/* 1 when the done step has anything to do (so the caller can skip it). */
int srv_limit_ask_needs_done(const srv_limit_ask *ask, long total_tokens);

/*
 * The key of a client address (canonical text, as srv_access.addr): "ip:"
 * and the address; an IPv6 address by its /64 ("ip:2001:db8:1:2::/64"),
 * the block one host or one customer gets, which it could otherwise walk
 * through to escape its limit. Returns 0, or -1 when addr is not an
 * address.
 */
int srv_limits_ip_key(const char *addr, char *out, size_t cap);

/* prefix, text and suffix joined into out, cut to cap - 1 bytes as snprintf
 * cuts, always terminated: a rule's key. */
void srv_limits_key(char *out, size_t cap, const char *prefix, const char *text,
                    const char *suffix);

/* ---- the shared-memory limiter: one server's workers ---- */

typedef struct srv_limits_shm srv_limits_shm;

/* Bytes of shared memory for a table of `keys` keys and `workers` workers. */
size_t srv_limits_shm_size(size_t keys, int workers);

/* Lay the table out in mem (srv_limits_shm_size bytes, zeroed, shared)
 * before the workers fork. seed keys the hash (random: clients cannot aim
 * many addresses at one set). NULL on failure. */
srv_limits_shm *srv_limits_shm_init(void *mem, size_t keys, int workers, uint64_t seed);

/* This process's limiter on the table, as worker `slot` (0..workers-1).
 * Gives back the streams places the slot held: a worker that died held
 * them for requests that are gone. The handle is static: one per process. */
srv_limiter *srv_limits_shm_attach(srv_limits_shm *t, int slot);

/* The same steps with an explicit clock (monotonic milliseconds), for the
 * unit tests; the limiter's ops call them with CLOCK_MONOTONIC. */
void srv_limits_shm_admit_at(srv_limits_shm *t, int slot, srv_limit_ask *ask,
                             int64_t now_ms, srv_limit_verdict *v);
void srv_limits_shm_done_at(srv_limits_shm *t, int slot, const srv_limit_ask *ask,
                            long total_tokens, int64_t now_ms);
void srv_limits_shm_release_slot(srv_limits_shm *t, int slot);
void srv_limits_shm_usage_at(srv_limits_shm *t, const char *key, int64_t now_ms,
                             srv_limit_usage *out);

typedef struct srv_limits_stats {
    size_t keys;        /* keys in the table (an idle one stays until reused) */
    size_t capacity;    /* keys the table holds */
    uint64_t evicted;   /* keys dropped while still counting (table full) */
    uint64_t recovered; /* locks taken over from a worker that died */
} srv_limits_stats;
void srv_limits_shm_stats(srv_limits_shm *t, srv_limits_stats *out);

#endif
