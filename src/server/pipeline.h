/*
 * pipeline.h - one request's way through the server, and the context that
 * carries it. Every request the front hands over goes through the same
 * phases, in this order (pipeline.c):
 *
 *   route     {method, path} -> a route of the table (routes.c); 404 / 405
 *   identify  who is calling: the client address (TRUSTED_PROXIES) and, on
 *             an API route when ACCESS_TOKENS_FILE is set, the access token
 *             (tokens.h): 401 without a known one
 *   admit     may it run now: capacity of upstream routes (MAX_CONNECTIONS),
 *             then the rate limits (ratelimit.h; their verdict may come later);
 *             refused in the route's error shape
 *   handle    the route's handler: answers at once or keeps the context
 *             (a relay) and finishes it later
 *   log       the access line, the tokens counted on the rate limits, the
 *             metrics (metrics.h), then the context is freed
 *
 * Ownership: the pipeline owns each srv_ctx from the request until
 * srv_ctx_finish. A handler that returns SRV_LATER owns the right to call
 * srv_ctx_finish exactly once. The context owns the client request's close
 * watch: nothing else calls srv_req_watch; a handler that keeps the request
 * sets ctx->on_gone / ctx->on_drained. ctx->req is NULL once the client has
 * gone (the front freed the request).
 */
#ifndef SRV_PIPELINE_H
#define SRV_PIPELINE_H

#include "accesslog.h"
#include "ratelimit.h"
#include "tokens.h"
#include "worker.h"

struct srv_request;
struct srv_dialect;
typedef struct srv_ctx srv_ctx;

/* The access log's status for a client that left before its reply ended
 * (nginx's convention). */
#define SRV_STATUS_CLIENT_GONE 499

/* What a handler returns. */
#define SRV_ANSWERED 0 /* replied already; the pipeline logs and frees */
#define SRV_LATER 1    /* kept: the handler calls srv_ctx_finish when done */

typedef int (*srv_handler)(srv_ctx *ctx);

/* Route flags */
#define SRV_ROUTE_UPSTREAM 0x1u /* calls the upstream: counts against MAX_CONNECTIONS */
#define SRV_ROUTE_PREFIX 0x2u   /* path is a prefix ("/v1/models/" + an id) */
#define SRV_ROUTE_AUTH 0x4u     /* an API route: needs an access token when set */

typedef struct srv_route {
    const char *method;
    const char *path;
    srv_handler handle;
    const struct srv_dialect *dialect; /* error shape and framing of the route */
    unsigned flags;
} srv_route;

struct srv_ctx {
    srv_worker *w;
    struct srv_request *req; /* NULL once the client has gone */
    const srv_route *route;
    const struct srv_dialect *dialect; /* the route's, or the seed's for 404 */
    srv_access acc;
    int admitted; /* holds one of the worker's MAX_CONNECTIONS places */
    /* The caller's access token entry (its name, models and limits), NULL
     * when tokens are off or the route needs none; the table it lives in is
     * held (a reference) until srv_ctx_finish, across reloads. */
    const srv_token *token;
    srv_tokens *tokens;
    /* The close watch (see above). on_gone runs once, with ctx->req already
     * NULL; on_drained when a held-back output fell below half its mark. */
    void (*on_gone)(srv_ctx *ctx);
    void (*on_drained)(srv_ctx *ctx);
    /* Ends the handler's work at the drain deadline (relays: an error event
     * or a 503 carrying `reason`); NULL for handlers that answer at once. */
    void (*abort)(srv_ctx *ctx, const char *reason);
    void *handler_data;   /* the handler's own state */
    srv_ctx *prev, *next; /* the worker's contexts kept by handlers */
    /* The rate limits it counts on (limits.n 0: none), the limit that
     * refused it (429) or NULL, and whether it waits kept for the verdict. */
    srv_limit_ask limits;
    const char *limited_by;
    int waiting;
};

/* Hand a request from the front to the pipeline (front.h's srv_request_cb). */
void srv_pipeline_request(struct srv_request *req, void *worker);
/* A request the front refused itself (front.h's srv_error_cb). */
void srv_pipeline_front_error(struct srv_request *req, int status, const char *msg,
                              void *worker);

/* Watch the client while a handler holds the request: output above
 * high_water is reported drained below half of it. */
void srv_ctx_watch(srv_ctx *ctx, size_t high_water);

/* Answer with an error in the route's shape (common headers, Retry-After
 * when retry_after_s >= 0); code may be NULL. Records the status. */
void srv_ctx_error(srv_ctx *ctx, int status, const char *message, const char *code,
                   long retry_after_s);
/* Answer with a JSON body in full. Records status and length. */
void srv_ctx_reply_json(srv_ctx *ctx, int status, const char *body, size_t len);

/* 1 when this request's tokens are counted (it carries an access token,
 * whose limits and usage need them, or a tpm limit such as IP_TPM counts
 * on it): the relay then asks a stream's upstream for usage and estimates
 * when none comes (relay.h). Otherwise bodies go upstream unchanged. */
int srv_ctx_counts_usage(const srv_ctx *ctx);

/* The handler is done with a context it kept (SRV_LATER): log phase, free. */
void srv_ctx_finish(srv_ctx *ctx);

/* Call ctx->abort on every context a handler keeps (the drain deadline). */
void srv_pipeline_abort_all(srv_worker *w, const char *reason);

#endif
