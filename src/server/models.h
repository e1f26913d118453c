/*
 * models.h - the worker's model list for GET /v1/models and
 * GET /v1/models/{id} (the handlers are in routes.h): the upstream's list
 * (GET {base}/models) fetched on the worker's event loop and kept for
 * MODELS_CACHE_TTL seconds, or the configured list (MODELS) when the
 * upstream has none, fails, or no ZJU_API_KEY is set. One per worker: the
 * workers share nothing, so each fetches once per TTL.
 */
#ifndef SRV_MODELS_H
#define SRV_MODELS_H

struct srv_worker;
typedef struct srv_models srv_models;

/* The list of worker w (w->cfg, w->client, w->base are read when needed).
 * NULL when out of memory. */
srv_models *srv_models_new(struct srv_worker *w);

/* Free it. Clients still waiting must be gone (the front is freed first)
 * and the fetch ended (the upstream client is freed first: its call ends
 * with on_done CANCELLED, which only records the failure). */
void srv_models_free(srv_models *m);

#endif
