/*
 * quota.h - the pipeline's steps for the rate limits and the metrics
 * (pipeline.c calls them; the limiter and the registry are in shared.h):
 * which limits a request counts on, its 429, and the log phase's accounts.
 */
#ifndef SRV_QUOTA_H
#define SRV_QUOTA_H

#include "ratelimit.h"

typedef struct srv_ctx srv_ctx;

/* The rate limiter's key of an access token ("tok:<name>": the same for
 * every worker, instance and reload). */
void srv_quota_token_key(const char *name, char *out, size_t cap);

/* Fill ctx->limits with the rules the request counts on; their number. */
int srv_quota_rules(srv_ctx *ctx);

/* 1 when a limit of the request counts tokens (tpm, tpd): its usage must
 * be known, a stream's too. */
int srv_quota_counts_tokens(const srv_ctx *ctx);

/* Answer a request the rate limiter refused: 429 with Retry-After, in the
 * route's shape (the upstream is never called). */
void srv_quota_refuse(srv_ctx *ctx, const srv_limit_verdict *v);

/* The log phase: the reply's tokens counted on the rate limits (the usage
 * is known only now, a stream's at its end), places given back, and the
 * request recorded in the metrics. */
void srv_quota_finish(srv_ctx *ctx);

#endif
