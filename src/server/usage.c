/*
 * usage.c - GET /v1/usage: the calling access token's limits and what is
 * left of them now, from the rate limiter (shared memory, or Redis across
 * instances). The route needs a token (SRV_ROUTE_AUTH); without
 * ACCESS_TOKENS_FILE there is nobody to report on: 404 that says so.
 *
 *   {"object": "usage", "token": "alice",
 *    "limits":    {"rpm": 60, "tpm": 100000, "tpd": null, "streams": 2},
 *    "used":      {"rpm": 3, "tpm": 1200, "tpd": 1200, "streams": 1},
 *    "remaining": {"rpm": 57, "tpm": 98800, "tpd": null, "streams": 1}}
 *
 * null: no such limit. "used" counts over the same sliding windows the
 * limits use (the last 60 s, the last 24 h); it is null when the limiter
 * cannot tell (Redis unreachable), and a token without limits reports its
 * use all the same when the limiter has it (else zeros).
 */
#include "front.h"
#include "pipeline.h"
#include "quota.h"
#include "ratelimit.h"
#include "routes.h"
#include "shared.h"
#include "tokens.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct usage_wait {
    srv_ctx *ctx;
    int answered_now; /* the limiter answered inside the call */
    srv_limit_usage u;
} usage_wait;

static json_t *limit_or_null(long v)
{
    return v > 0 ? json_integer(v) : json_null();
}

static json_t *left_or_null(long limit, long used)
{
    return limit > 0 ? json_integer(limit > used ? limit - used : 0) : json_null();
}

static void reply(srv_ctx *ctx, const srv_limit_usage *u)
{
    const srv_token *t = ctx->token;
    json_t *used = json_null(), *left = json_null();
    if (u && u->known) {
        used = json_pack("{s:I, s:I, s:I, s:I}", "rpm", (json_int_t)u->requests_minute,
                         "tpm", (json_int_t)u->tokens_minute, "tpd",
                         (json_int_t)u->tokens_day, "streams", (json_int_t)u->streams);
        left = json_pack("{s:o, s:o, s:o, s:o}", "rpm",
                         left_or_null(t->rpm, u->requests_minute), "tpm",
                         left_or_null(t->tpm, u->tokens_minute), "tpd",
                         left_or_null(t->tpd, u->tokens_day), "streams",
                         left_or_null(t->streams, u->streams));
    }
    json_t *o =
        json_pack("{s:s, s:s, s:{s:o, s:o, s:o, s:o}, s:o, s:o}", "object", "usage",
                  "token", t->name, "limits", "rpm", limit_or_null(t->rpm), "tpm",
                  limit_or_null(t->tpm), "tpd", limit_or_null(t->tpd), "streams",
                  limit_or_null(t->streams), "used", used, "remaining", left);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!body) {
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
        return;
    }
    srv_ctx_reply_json(ctx, 200, body, strlen(body));
    free(body);
}

static void on_usage(void *arg, const srv_limit_usage *u)
{
    usage_wait *uw = arg;
    if (uw->answered_now >= 0) { /* inside the call: the handler replies */
        uw->u = *u;
        uw->answered_now = 1;
        return;
    }
    srv_ctx *ctx = uw->ctx;
    ctx->handler_data = NULL;
    if (ctx->req)
        reply(ctx, u);
    free(uw);
    srv_ctx_finish(ctx);
}

int srv_handle_usage(srv_ctx *ctx)
{
    if (!ctx->token) {
        srv_ctx_error(ctx, 404,
                      "usage is reported per access token; this server has no "
                      "ACCESS_TOKENS_FILE",
                      "not_found", -1);
        return SRV_ANSWERED;
    }
    const srv_shared *sh = srv_shared_get();
    srv_limiter *l = sh ? sh->limiter : NULL;
    if (!l || !l->ops->usage) {
        reply(ctx, NULL);
        return SRV_ANSWERED;
    }
    usage_wait *uw = calloc(1, sizeof *uw);
    if (!uw) {
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
        return SRV_ANSWERED;
    }
    uw->ctx = ctx;
    char key[SRV_LIMIT_KEY_MAX];
    srv_quota_token_key(ctx->token->name, key, sizeof key);
    if (l->ops->usage(l, key, on_usage, uw) == SRV_LIMIT_ANSWERED) {
        reply(ctx, uw->answered_now == 1 ? &uw->u : NULL);
        free(uw);
        return SRV_ANSWERED;
    }
    uw->answered_now = -1; /* from now on on_usage answers and finishes */
    ctx->handler_data = uw;
    srv_ctx_watch(ctx, SIZE_MAX);
    return SRV_LATER;
}
