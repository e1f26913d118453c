/*
 * quota.c - rate limits and metrics for one request (quota.h).
 */
#include "quota.h"
#include "pipeline.h"
#include "routes.h"
#include "shared.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>

/* The client address (IP_RPM, IP_TPM) and the access token (its rpm, tpm,
 * tpd, streams; key "tok:<name>", the same for every worker and reload). */
void srv_quota_token_key(const char *name, char *out, size_t cap)
{
    srv_limits_key(out, cap, "tok:", name, "");
}

int srv_quota_rules(srv_ctx *ctx)
{
    const srv_config *cfg = ctx->w->cfg;
    srv_limit_ask *ask = &ctx->limits;
    ask->n = 0;
    srv_limit_rule *r = &ask->rule[ask->n];
    if ((cfg->ip_rpm > 0 || cfg->ip_tpm > 0) &&
        srv_limits_ip_key(ctx->acc.addr, r->key, sizeof r->key) == 0) {
        r->rpm = cfg->ip_rpm;
        r->tpm = cfg->ip_tpm;
        ask->n++;
    }
    const srv_token *t = ctx->token;
    if (t && (t->rpm > 0 || t->tpm > 0 || t->tpd > 0 || t->streams > 0)) {
        r = &ask->rule[ask->n++];
        srv_quota_token_key(t->name, r->key, sizeof r->key);
        r->rpm = t->rpm;
        r->tpm = t->tpm;
        r->tpd = t->tpd;
        r->streams = t->streams;
    }
    return ask->n;
}

int srv_quota_counts_tokens(const srv_ctx *ctx)
{
    for (int i = 0; i < ctx->limits.n; i++)
        if (ctx->limits.rule[i].tpm > 0 || ctx->limits.rule[i].tpd > 0)
            return 1;
    return 0;
}

static const char *limit_text(const char *limit)
{
    if (strcmp(limit, "rpm") == 0)
        return "requests per minute";
    if (strcmp(limit, "tpm") == 0)
        return "tokens per minute";
    if (strcmp(limit, "tpd") == 0)
        return "tokens per day";
    return "requests at once";
}

void srv_quota_refuse(srv_ctx *ctx, const srv_limit_verdict *v)
{
    if (v->unavailable) {
        /* the limits cannot be checked and the operator chose to refuse
         * (REDIS_FAILURE=closed) */
        srv_ctx_error(ctx, 503, "rate limits are unavailable; retry later",
                      "limits_unavailable", v->retry_after_s);
        return;
    }
    const char *who = strncmp(ctx->limits.rule[v->rule].key, "ip:", 3) == 0
                          ? "this address"
                          : "this access token";
    char msg[200];
    snprintf(msg, sizeof msg, "rate limit reached: %ld %s for %s; retry after %ld s",
             v->value, limit_text(v->limit), who, v->retry_after_s);
    ctx->limited_by = v->limit;
    srv_ctx_error(ctx, 429, msg, "rate_limited", v->retry_after_s);
}

void srv_quota_finish(srv_ctx *ctx)
{
    const srv_shared *sh = srv_shared_get();
    if (!sh)
        return;
    srv_access *a = &ctx->acc;
    if (ctx->limits.n > 0 && sh->limiter &&
        srv_limit_ask_needs_done(&ctx->limits, a->total_tokens))
        srv_limiter_done(sh->limiter, &ctx->limits, a->total_tokens);
    struct timeval now;
    gettimeofday(&now, NULL);
    srv_metrics_request m = {
        .route = ctx->route ? srv_routes_index(ctx->route) : -1,
        .status = a->status,
        .duration_us = (long)(now.tv_sec - a->start.tv_sec) * 1000000L +
                       (long)(now.tv_usec - a->start.tv_usec),
        .ttfb_ms = a->ttfb_ms,
        .ttft_ms = a->ttft_ms,
        .retries = a->retries,
        .cancelled = a->upstream_cancelled,
        .limit = ctx->limited_by,
        .token = a->token_name,
        .model = a->model,
        .prompt_tokens = a->prompt_tokens,
        .completion_tokens = a->completion_tokens,
    };
    srv_metrics_record(sh->metrics, &m);
}
