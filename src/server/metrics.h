/*
 * metrics.h - the server's metrics, kept in the shared region (shm.h) so
 * that GET /metrics shows the same numbers whichever worker answers, in
 * Prometheus's text format (version 0.0.4).
 *
 * Memory is fixed when the region is laid out: the label sets are bounded
 * by construction. route comes from the route table ("unmatched" for the
 * rest), status is 100..599, limit one of four; token names and models are
 * taken as they come up to a cap each (METRICS_MAX_TOKENS, _MODELS below),
 * then counted as "other".
 *
 * Recording takes no lock: every number is a 64-bit counter changed with
 * an atomic add (a worker killed in the middle loses at most its own
 * increment). Only the first sight of a new token name or model takes the
 * region's robust mutex, to add it to its list.
 */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

#include <stddef.h>

#define METRICS_MAX_TOKENS 256 /* distinct token names, then "other" */
#define METRICS_MAX_MODELS 64  /* distinct models, then "other" */

typedef struct srv_metrics srv_metrics;

/* What the log phase knows of one request. */
typedef struct srv_metrics_request {
    int route;         /* index in the route table, -1: no route */
    int status;        /* 499: the client left before the reply ended */
    long duration_us;  /* request complete to the log phase */
    long ttfb_ms;      /* upstream time to first byte, -1 unknown */
    long ttft_ms;      /* upstream time to first token (a stream), -1 unknown */
    long retries;      /* upstream attempts beyond the first */
    int cancelled;     /* the upstream call was cancelled (client gone, drain) */
    const char *limit; /* the rate limit that refused it ("rpm"...), or NULL */
    const char *token; /* access token name, "" for none */
    const char *model; /* "" for none */
    long prompt_tokens, completion_tokens; /* -1 unknown */
} srv_metrics_request;

/* Bytes of shared memory for the registry of `workers` workers. */
size_t srv_metrics_size(int workers);
/* Lay the registry out in mem (zeroed, shared) before the workers fork. */
srv_metrics *srv_metrics_init(void *mem, int workers);
/* Worker `slot` (re)starts: the streams a dead one had are gone. */
void srv_metrics_attach(srv_metrics *m, int slot);

void srv_metrics_record(srv_metrics *m, const srv_metrics_request *r);
/* A streamed reply began / ended on worker `slot`. */
void srv_metrics_stream(srv_metrics *m, int slot, int delta);

/* Numbers that live elsewhere, read when the text is made. */
typedef struct srv_metrics_extra {
    int have_limits;
    size_t limit_keys, limit_capacity;
    unsigned long long limit_evicted, lock_recovered;
} srv_metrics_extra;

/* The exposition text, a new string (free()) of *len bytes; NULL on OOM. */
char *srv_metrics_render(srv_metrics *m, const srv_metrics_extra *extra, size_t *len);

/* Label value escaping of the text format (\\, \", \n), into out; invalid
 * UTF-8 bytes become '?'. For the tests. */
void srv_metrics_escape(const char *in, char *out, size_t cap);

#endif
