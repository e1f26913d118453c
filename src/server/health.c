/*
 * health.c - GET/HEAD /healthz for load balancers and the CORS preflight
 * every API path answers.
 */
#include "dialect.h"
#include "front.h"
#include "http_util.h"
#include "routes.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

int srv_handle_health(srv_ctx *ctx)
{
    srv_worker *w = ctx->w;
    char body[160];
    int n =
        snprintf(body, sizeof body,
                 "{\"status\": \"%s\", \"pid\": %ld, \"calls\": %ld, \"key_set\": %s}",
                 w->draining ? "draining" : "ok", (long)getpid(), w->calls,
                 w->client ? "true" : "false");
    /* a draining worker says so with 503 so load balancers move away */
    srv_ctx_reply_json(ctx, w->draining ? 503 : 200, body, (size_t)n);
    return SRV_ANSWERED;
}

int srv_handle_preflight(srv_ctx *ctx)
{
    ctx->acc.status = srv_http_preflight(ctx->req, ctx->w->cfg);
    return SRV_ANSWERED;
}
