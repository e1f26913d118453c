/*
 * metrics_route.c - GET /metrics: the shared registry (metrics.h) in
 * Prometheus's text format, to addresses in METRICS_ALLOW (loopback by
 * default) or to a request with Authorization: Bearer <METRICS_TOKEN>;
 * 403 in the seed's error shape otherwise.
 *
 * The address is the socket's peer, never the one TRUSTED_PROXIES resolve
 * from X-Forwarded-For: behind a proxy on the same host every request comes
 * from loopback, and a forwarded address is whatever the client wrote
 * before the proxy appended its own. So a proxy that forwards /metrics
 * opens it to its own clients only if it runs inside METRICS_ALLOW, which
 * the operator decides; put the proxy elsewhere or use METRICS_TOKEN.
 */
#include "front.h"
#include "routes.h"
#include "shared.h"
#include "proxies.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* a == b in time that depends on b's length only (b: the secret) */
static int same_secret(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)((i < alen ? a[i] : 0) ^ b[i]);
    return diff == 0;
}

/* "Bearer <token>" with the scheme in any case (RFC 9110 11.1) */
static int bearer_matches(const char *value, const char *token)
{
    if (!value || !token || strncasecmp(value, "Bearer ", 7) != 0)
        return 0;
    const char *t = value + 7;
    while (*t == ' ')
        t++;
    size_t n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    return same_secret(t, n, token, strlen(token));
}

static void add_extra(const srv_shared *sh, srv_metrics_extra *x)
{
    memset(x, 0, sizeof *x);
    srv_limits_stats st;
    srv_limits_shm_stats(sh->limits, &st);
    x->have_limits = 1;
    x->limit_keys = st.keys;
    x->limit_capacity = st.capacity;
    x->limit_evicted = st.evicted;
    x->lock_recovered = st.recovered;
}

int srv_handle_metrics(srv_ctx *ctx)
{
    const srv_shared *sh = srv_shared_get();
    if (!sh) {
        srv_ctx_error(ctx, 404, "not found", NULL, -1);
        return SRV_ANSWERED;
    }
    if (!srv_proxies_trusts(sh->metrics_allow, srv_req_peer(ctx->req)) &&
        !bearer_matches(srv_req_header(ctx->req, "Authorization"), sh->metrics_token)) {
        srv_ctx_error(ctx, 403,
                      "metrics are served to METRICS_ALLOW addresses, or with "
                      "Authorization: Bearer <METRICS_TOKEN>",
                      NULL, -1);
        return SRV_ANSWERED;
    }
    srv_metrics_extra extra;
    add_extra(sh, &extra);
    size_t len = 0;
    char *body = srv_metrics_render(sh->metrics, &extra, &len);
    if (!body) {
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
        return SRV_ANSWERED;
    }
    ctx->acc.status = 200;
    ctx->acc.bytes = len;
    srv_req_add_header(ctx->req, "Content-Type",
                       "text/plain; version=0.0.4; charset=utf-8");
    srv_req_add_header(ctx->req, "Cache-Control", "no-store");
    srv_req_add_header(ctx->req, "X-Content-Type-Options", "nosniff");
    srv_req_reply(ctx->req, 200, body, len);
    free(body);
    return SRV_ANSWERED;
}
