/*
 * routes.c - the route table. A path is matched exactly unless the route is
 * a prefix (SRV_ROUTE_PREFIX: "/v1/models/" followed by a model id). The
 * 405's Allow header is derived from the table, so it cannot drift from it.
 */
#include "routes.h"
#include "dialect.h"

#include <stdio.h>
#include <string.h>

#define SEED (&srv_dialect_seed)
#define OPENAI (&srv_dialect_openai)
#define UP SRV_ROUTE_UPSTREAM
#define AUTH SRV_ROUTE_AUTH /* every API route; not /healthz, not preflights */

static const srv_route table[] = {
    {"POST", "/api/chat", srv_handle_api_chat, SEED, UP | AUTH},
    {"OPTIONS", "/api/chat", srv_handle_preflight, SEED, 0},
    {"POST", "/v1/chat/completions", srv_handle_chat_completions, OPENAI, UP | AUTH},
    {"OPTIONS", "/v1/chat/completions", srv_handle_preflight, OPENAI, 0},
    {"POST", "/v1/embeddings", srv_handle_embeddings, OPENAI, UP | AUTH},
    {"OPTIONS", "/v1/embeddings", srv_handle_preflight, OPENAI, 0},
    /* not UP: one fetch per worker serves them all (models.c) */
    {"GET", "/v1/models", srv_handle_models, OPENAI, AUTH},
    {"HEAD", "/v1/models", srv_handle_models, OPENAI, AUTH},
    {"OPTIONS", "/v1/models", srv_handle_preflight, OPENAI, 0},
    {"GET", "/v1/models/", srv_handle_model, OPENAI, SRV_ROUTE_PREFIX | AUTH},
    {"HEAD", "/v1/models/", srv_handle_model, OPENAI, SRV_ROUTE_PREFIX | AUTH},
    {"OPTIONS", "/v1/models/", srv_handle_preflight, OPENAI, SRV_ROUTE_PREFIX},
    {"GET", "/v1/usage", srv_handle_usage, OPENAI, AUTH},
    {"OPTIONS", "/v1/usage", srv_handle_preflight, OPENAI, 0},
    {"GET", "/healthz", srv_handle_health, SEED, 0},
    {"HEAD", "/healthz", srv_handle_health, SEED, 0},
    /* METRICS_ALLOW or METRICS_TOKEN decide, in the handler (metrics_route.c) */
    {"GET", "/metrics", srv_handle_metrics, SEED, 0},
    /* the chat page (static.c): index.html at /, the rest under /assets/ */
    {"GET", "/", srv_handle_static, SEED, 0},
    {"HEAD", "/", srv_handle_static, SEED, 0},
    {"GET", "/assets/", srv_handle_static, SEED, SRV_ROUTE_PREFIX},
    {"HEAD", "/assets/", srv_handle_static, SEED, SRV_ROUTE_PREFIX},
};

static int path_matches(const srv_route *r, const char *path)
{
    if (!(r->flags & SRV_ROUTE_PREFIX))
        return strcmp(r->path, path) == 0;
    size_t n = strlen(r->path);
    /* the prefix and something after it */
    return strncmp(r->path, path, n) == 0 && path[n] != '\0';
}

const srv_route *srv_routes_find(const char *method, const char *path)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (path_matches(&table[i], path) &&
            (!method || strcmp(table[i].method, method) == 0))
            return &table[i];
    return NULL;
}

int srv_routes_allow(const char *path, char *allow, size_t size)
{
    size_t n = 0;
    allow[0] = '\0';
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (!path_matches(&table[i], path))
            continue;
        int w = snprintf(allow + n, size - n, "%s%s", n ? ", " : "", table[i].method);
        if (w < 0 || (size_t)w >= size - n)
            break;
        n += (size_t)w;
    }
    return n > 0;
}

size_t srv_routes_count(void)
{
    return sizeof table / sizeof table[0];
}

const srv_route *srv_routes_at(size_t i)
{
    return &table[i];
}

int srv_routes_index(const srv_route *route)
{
    return (int)(route - table);
}
