/*
 * pipeline.c - the phases every request goes through (pipeline.h): route,
 * identify, admit, handle, log. Handlers see a request only after the
 * phases before them let it through, and never write the access line
 * themselves, so what the access issue adds (tokens, limits, usage,
 * metrics) goes into identify, admit and log without touching a route.
 */
#include "pipeline.h"
#include "dialect.h"
#include "front.h"
#include "http_util.h"
#include "quota.h"
#include "routes.h"
#include "shared.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The access record holds what tokens.h allows: a whole name, and a model
 * field longer than any allowed model (relay.c compares them). */
_Static_assert(sizeof(((srv_access *)0)->token_name) == SRV_TOKEN_NAME_MAX + 1,
               "srv_access.token_name fits a token's name");
_Static_assert(sizeof(((srv_access *)0)->model) > SRV_TOKEN_MODEL_MAX + 1,
               "a model cut to fit srv_access.model cannot equal an allowed one");

/* ---- the context ---- */

/* Contexts finished, kept for the next requests (up to SPARE_MAX, as many
 * as usually run at once): a context is over a kilobyte, which malloc
 * serves from its slower bins (a tenth of the pipeline's own cost). A
 * worker process is single-threaded. Not under ASan, which should see a
 * context used after its end. */
#if defined(__SANITIZE_ADDRESS__)
#define SPARE_MAX 0
#else
#define SPARE_MAX 16
#endif
static srv_ctx *spares; /* linked by next */
static int n_spares;

static srv_ctx *ctx_new(srv_worker *w, srv_request *req)
{
    srv_ctx *ctx = spares;
    if (ctx) {
        spares = ctx->next;
        n_spares--;
        memset(ctx, 0, sizeof *ctx);
    } else if (!(ctx = calloc(1, sizeof *ctx))) {
        return NULL;
    }
    ctx->w = w;
    ctx->req = req;
    ctx->dialect = &srv_dialect_seed;
    return ctx;
}

static void ctx_unlink(srv_ctx *ctx)
{
    srv_worker *w = ctx->w;
    if (ctx->prev)
        ctx->prev->next = ctx->next;
    else if (w->kept == ctx)
        w->kept = ctx->next;
    if (ctx->next)
        ctx->next->prev = ctx->prev;
    ctx->prev = ctx->next = NULL;
}

/* Phase "log", and the end of the context. */
void srv_ctx_finish(srv_ctx *ctx)
{
    srv_quota_finish(ctx);
    srv_access_write(&ctx->acc);
    if (ctx->admitted)
        ctx->w->calls--;
    srv_tokens_unref(ctx->tokens); /* ctx->token is gone with it */
    ctx_unlink(ctx);
    if (n_spares < SPARE_MAX) {
        ctx->next = spares;
        spares = ctx;
        n_spares++;
    } else {
        free(ctx);
    }
}

int srv_ctx_counts_usage(const srv_ctx *ctx)
{
    return ctx->token != NULL || srv_quota_counts_tokens(ctx);
}

void srv_ctx_error(srv_ctx *ctx, int status, const char *message, const char *code,
                   long retry_after_s)
{
    ctx->acc.status = status;
    if (!ctx->req)
        return;
    srv_http_retry_after(ctx->req, retry_after_s);
    char *body = ctx->dialect->error_body(status, message,
                                          code ? code : srv_dialect_status_code(status));
    static const char oom[] = "{\"error\": \"out of memory\"}";
    srv_ctx_reply_json(ctx, status, body ? body : oom,
                       body ? strlen(body) : sizeof oom - 1);
    free(body);
}

void srv_ctx_reply_json(srv_ctx *ctx, int status, const char *body, size_t len)
{
    ctx->acc.status = status;
    ctx->acc.bytes = len;
    if (!ctx->req)
        return;
    srv_http_common_headers(ctx->req, ctx->w->cfg);
    srv_req_add_header(ctx->req, "Content-Type", "application/json");
    srv_req_reply(ctx->req, status, body, len);
}

/* ---- the close watch ---- */

static void on_gone(srv_request *req, void *arg)
{
    srv_ctx *ctx = arg;
    ctx->req = NULL;
    if (ctx->on_gone)
        ctx->on_gone(ctx);
}

static void on_drained(srv_request *req, void *arg)
{
    srv_ctx *ctx = arg;
    if (ctx->on_drained && ctx->req)
        ctx->on_drained(ctx);
}

void srv_ctx_watch(srv_ctx *ctx, size_t high_water)
{
    if (ctx->req)
        srv_req_watch(ctx->req, on_gone, on_drained, high_water, ctx);
}

void srv_pipeline_abort_all(srv_worker *w, const char *reason)
{
    srv_ctx *ctx = w->kept;
    while (ctx) {
        srv_ctx *next = ctx->next; /* abort may finish (free) ctx */
        if (ctx->abort)
            ctx->abort(ctx, reason);
        ctx = next;
    }
}

/* ---- the phases ---- */

/* The error shape for a path: its routes', or OpenAI's anywhere under /v1
 * (an SDK reads the message of a 404 there), else the seed's. */
static const srv_dialect *dialect_of_path(const char *path)
{
    const srv_route *route = srv_routes_find(NULL, path);
    if (route)
        return route->dialect;
    return strncmp(path, "/v1/", 4) == 0 ? &srv_dialect_openai : &srv_dialect_seed;
}

/* 404, or 405 with the path's methods in Allow (RFC 9110). */
static void no_route(srv_ctx *ctx, const char *path)
{
    char allow[64];
    if (srv_routes_allow(path, allow, sizeof allow)) {
        srv_req_add_header(ctx->req, "Allow", allow);
        srv_ctx_error(ctx, 405, "method not allowed", NULL, -1);
    } else {
        srv_ctx_error(ctx, 404, "not found", NULL, -1);
    }
}

/* 401 in the route's shape. The message never quotes what was sent. */
static void unauthorized(srv_ctx *ctx, const char *challenge, const char *message,
                         const char *code)
{
    srv_req_add_header(ctx->req, "WWW-Authenticate", challenge);
    srv_ctx_error(ctx, 401, message, code, -1);
}

/* Who is calling. The client address was resolved through TRUSTED_PROXIES
 * when the access record began. With ACCESS_TOKENS_FILE set, an API route
 * (SRV_ROUTE_AUTH: not /healthz, not a CORS preflight, which browsers send
 * without credentials) needs a known token: the request then carries its
 * entry (name, models, limits) and holds the table until it ends. */
static int identify(srv_ctx *ctx)
{
    srv_worker *w = ctx->w;
    if (!w->tokens || !(ctx->route->flags & SRV_ROUTE_AUTH))
        return 0;
    /* joined: two Authorization headers are refused, not one picked */
    char *value = srv_req_header_joined(ctx->req, "Authorization");
    const char *token = NULL;
    size_t len = 0;
    int rc = srv_tokens_bearer(value, &token, &len);
    const srv_token *e = rc == 1 ? srv_tokens_find(w->tokens, token, len) : NULL;
    free(value);
    if (rc == 0) {
        unauthorized(ctx, "Bearer",
                     "an access token is required: send Authorization: Bearer <token>",
                     "missing_access_token");
        return -1;
    }
    if (!e) {
        /* malformed or unknown alike: nothing tells a guess apart */
        unauthorized(ctx, "Bearer error=\"invalid_token\"",
                     "the access token is not valid (want Authorization: Bearer "
                     "<token>)",
                     "invalid_access_token");
        return -1;
    }
    ctx->tokens = srv_tokens_ref(w->tokens);
    ctx->token = e;
    srv_copy_text(ctx->acc.token_name, sizeof ctx->acc.token_name, e->name);
    return 0;
}

/* A context kept past srv_pipeline_request: listed for the drain. */
static void keep(srv_ctx *ctx)
{
    srv_worker *w = ctx->w;
    ctx->next = w->kept;
    if (w->kept)
        w->kept->prev = ctx;
    w->kept = ctx;
}

/* Phase "handle"; a kept context is the handler's to finish. */
static void handle(srv_ctx *ctx)
{
    if (ctx->route->handle(ctx) == SRV_LATER)
        keep(ctx);
    else
        srv_ctx_finish(ctx);
}

/* The rate limiter's verdict: at once (inside srv_limiter_admit) or later,
 * when the context waited kept (and its client may have gone). */
static void on_verdict(void *arg, const srv_limit_verdict *v)
{
    srv_ctx *ctx = arg;
    if (ctx->waiting) {
        ctx->waiting = 0;
        ctx_unlink(ctx);
    }
    if (!v->allowed)
        ctx->limits.n = 0; /* counted nowhere: nothing to give back */
    if (!ctx->req) {
        srv_ctx_finish(ctx);
    } else if (!v->allowed) {
        srv_quota_refuse(ctx, v);
        srv_ctx_finish(ctx);
    } else {
        handle(ctx);
    }
}

/* May the request run now? Upstream routes hold one of the worker's
 * MAX_CONNECTIONS places from here to the log phase (a 503 counts on no
 * rate limit), then ask the rate limiter. Returns 0: handle it now; -1:
 * answered, finish it; 1: the verdict (on_verdict) goes on with it. */
static int admit(srv_ctx *ctx)
{
    srv_worker *w = ctx->w;
    if (!(ctx->route->flags & SRV_ROUTE_UPSTREAM))
        return 0;
    if (w->calls >= w->cfg->max_connections) {
        srv_ctx_error(ctx, 503, "server busy, retry later", "server_busy", 1);
        return -1;
    }
    w->calls++;
    ctx->admitted = 1;
    const srv_shared *sh = srv_shared_get();
    if (!sh || !sh->limiter || srv_quota_rules(ctx) == 0)
        return 0;
    if (srv_limiter_admit(sh->limiter, &ctx->limits, on_verdict, ctx) ==
        SRV_LIMIT_PENDING) {
        /* A limiter across the network answers later: the context waits
         * kept, its client watched (ctx->req NULL if it leaves). */
        ctx->waiting = 1;
        keep(ctx);
        srv_ctx_watch(ctx, SIZE_MAX);
    }
    return 1;
}

void srv_pipeline_request(srv_request *req, void *arg)
{
    srv_worker *w = arg;
    srv_ctx *ctx = ctx_new(w, req);
    if (!ctx) {
        srv_http_send_json_error(req, w->cfg, 500, "out of memory", -1, NULL);
        return;
    }
    srv_access_begin(&ctx->acc, req);
    const char *path = srv_req_path(req);
    ctx->route = srv_routes_find(srv_req_method(req), path);
    if (!ctx->route) {
        ctx->dialect = dialect_of_path(path);
        no_route(ctx, path);
    } else {
        ctx->dialect = ctx->route->dialect;
        int rc = identify(ctx) == 0 ? admit(ctx) : -1;
        if (rc == 0)
            handle(ctx);
        if (rc >= 0)
            return; /* handled, or in the rate limiter's hands */
    }
    srv_ctx_finish(ctx);
}

void srv_pipeline_front_error(srv_request *req, int status, const char *msg, void *arg)
{
    srv_worker *w = arg;
    srv_ctx *ctx = ctx_new(w, req);
    if (!ctx) {
        srv_http_send_json_error(req, w->cfg, status, msg, -1, NULL);
        return;
    }
    srv_access_begin(&ctx->acc, req);
    /* The front refused it before routing; the path says whose shape fits. */
    ctx->dialect = dialect_of_path(srv_req_path(req));
    srv_ctx_error(ctx, status, msg, NULL, -1);
    srv_ctx_finish(ctx);
}
