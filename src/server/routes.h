/*
 * routes.h - the route table ({method, path} -> handler, dialect, flags) and
 * the handlers it names. The table itself is in routes.c; each handler
 * lives in the file of its API (health.c, api_chat.c, openai.c, models.c).
 */
#ifndef SRV_ROUTES_H
#define SRV_ROUTES_H

#include "pipeline.h"

#include <stddef.h>

/* The route for method and path, NULL when none. method NULL: any method
 * (to find the error shape of a path). */
const srv_route *srv_routes_find(const char *method, const char *path);

/* The methods the table has for path, comma-separated into allow; 0 when
 * the path is unknown (404), else 1 (405 with this Allow). */
int srv_routes_allow(const char *path, char *allow, size_t size);

/* The table by index (the metrics label their series with it). */
size_t srv_routes_count(void);
const srv_route *srv_routes_at(size_t i);
/* The index of a route of the table. */
int srv_routes_index(const srv_route *route);

/* Handlers (SRV_ANSWERED or SRV_LATER, see pipeline.h) */
int srv_handle_health(srv_ctx *ctx);
int srv_handle_preflight(srv_ctx *ctx);
int srv_handle_api_chat(srv_ctx *ctx);
int srv_handle_chat_completions(srv_ctx *ctx);
int srv_handle_embeddings(srv_ctx *ctx);
int srv_handle_usage(srv_ctx *ctx);
int srv_handle_models(srv_ctx *ctx); /* GET /v1/models */
int srv_handle_model(srv_ctx *ctx);  /* GET /v1/models/{id} */
/* GET /metrics (metrics_route.c) */
int srv_handle_metrics(srv_ctx *ctx);
/* GET/HEAD / and /assets/... (static.c) */
int srv_handle_static(srv_ctx *ctx);

#endif
