/*
 * models.c - OpenAI's GET /v1/models and GET /v1/models/{id} on the gateway,
 * from the worker's model list (models.h):
 *
 *   - the upstream's list (GET {base}/models), fetched on the worker's event
 *     loop with zjuchat_models_start, never blocking it, and kept for
 *     MODELS_CACHE_TTL seconds. Requests that come while a fetch runs wait
 *     for that fetch (one upstream request however many clients ask); a
 *     waiting client that leaves is only taken off the list. An upstream
 *     list that is already OpenAI's shape goes out byte for byte; entries
 *     missing "object", "created" or "owned_by" get them filled in;
 *   - the configured list (MODELS, else the default model, the models the
 *     original client named and the default embedding model) when the
 *     upstream's list is empty, when no ZJU_API_KEY is set (the quick start
 *     without an upstream: the list needs no call), and when the fetch
 *     fails and no earlier list of the upstream is at hand;
 *   - a failed fetch (network, timeout, error status, not a list) is not
 *     retried by every request: its answer, the upstream's last good list or
 *     the configured one, is kept for NEGATIVE_TTL_S (at most the TTL) and
 *     the failure logged once per fetch. The last good list is served in
 *     preference to the configured one, since an upstream that is briefly
 *     down still has the models it listed a moment ago.
 *
 * The fetch is not counted against MAX_CONNECTIONS: a worker runs at most
 * one, the descriptor reserve MAX_CONNECTIONS leaves covers it, and a list
 * request must not be refused because chats fill the worker.
 *
 * The id of /v1/models/{id} is the rest of the path, '/' included (vLLM's
 * ids look like "Qwen/Qwen2.5-7B"), percent-decoded once: the openai SDKs
 * send "a/b" as "a%2Fb" and keep ':' and '@' as they are; '+' stays '+' (a
 * path, not a form); a '%' not followed by two hex digits stays as it is.
 */
#include "models.h"
#include "dialect.h"
#include "front.h"
#include "routes.h"
#include "tokens.h"

#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zjuchat.h>

/* How long a failed fetch's answer is kept (capped by MODELS_CACHE_TTL). */
#define NEGATIVE_TTL_S 10
#define OWNED_BY "zju"

/* The models the original client named (docs: the upstream's notes). */
static const char *const known_models[] = {
    "deepseek-r1-671b",
    "deepseek-v3-671b",
    "deepseek-r1-distill-qwen",
    "qwen2.5-instruct",
    "QwQ-32B",
    "llava-onevision-qwen2-7b-ov",
    "bge-m3",
    "bge-reranker-v2-m3",
};

/* A list as served: its entries, and the body of GET /v1/models. */
typedef struct model_list {
    json_t *data; /* array of model objects; NULL: no list */
    char *body;
    size_t len;
} model_list;

typedef struct waiter {
    srv_models *m;
    srv_ctx *ctx;
    char *id; /* GET /v1/models/{id}'s id; NULL: the list */
    struct waiter *prev, *next;
} waiter;

struct srv_models {
    srv_worker *w;
    long created; /* "created" of entries that have none: the worker's start */
    model_list configured;
    model_list upstream; /* the upstream's last good list */
    long fresh_until_ms; /* no fetch before this (monotonic clock) */
    zjuchat_call *fetch; /* the one in flight, NULL when none */
    waiter *waiters;     /* clients waiting for it */
};

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- lists ---- */

static void list_clear(model_list *l)
{
    json_decref(l->data);
    free(l->body);
    memset(l, 0, sizeof *l);
}

/* Make data (taken) the list; its body is raw[0..len) when given (the
 * upstream's own bytes), else data serialised. -1 when out of memory. */
static int list_set(model_list *l, json_t *data, const char *raw, size_t len)
{
    char *body = NULL;
    if (raw) {
        if ((body = malloc(len + 1))) {
            memcpy(body, raw, len);
            body[len] = '\0';
        }
    } else {
        json_t *o = json_pack("{s:s, s:O}", "object", "list", "data", data);
        body = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        len = body ? strlen(body) : 0;
    }
    if (!body) {
        json_decref(data);
        return -1;
    }
    list_clear(l);
    l->data = data;
    l->body = body;
    l->len = len;
    return 0;
}

static const model_list *current(const srv_models *m)
{
    return m->upstream.data ? &m->upstream : &m->configured;
}

static int has_id(json_t *data, const char *id)
{
    size_t i;
    json_t *e;
    json_array_foreach(data, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "id")), id) == 0)
            return 1;
    }
    return 0;
}

/* Append OpenAI's model object for id unless data has it. -1 on OOM. */
static int add_model(json_t *data, const char *id, long created)
{
    if (has_id(data, id))
        return 0;
    json_t *o = json_pack("{s:s, s:s, s:I, s:s}", "id", id, "object", "model", "created",
                          (json_int_t)created, "owned_by", OWNED_BY);
    return o ? json_array_append_new(data, o) : -1;
}

static int build_configured(srv_models *m)
{
    const srv_config *cfg = m->w->cfg;
    json_t *data = json_array();
    int rc = data ? 0 : -1;
    if (cfg->models) { /* "a, b": ids have no spaces (config.c) */
        char *copy = strdup(cfg->models), *save = NULL;
        rc = copy ? 0 : -1;
        for (char *id = copy ? strtok_r(copy, ", ", &save) : NULL; id && rc == 0;
             id = strtok_r(NULL, ", ", &save))
            rc = add_model(data, id, m->created);
        free(copy);
    } else if (rc == 0) {
        rc = add_model(data,
                       cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL,
                       m->created);
        for (size_t i = 0; rc == 0 && i < sizeof known_models / sizeof known_models[0];
             i++)
            rc = add_model(data, known_models[i], m->created);
        if (rc == 0)
            rc = add_model(data, cfg->default_embedding_model, m->created);
    }
    if (rc < 0) {
        json_decref(data);
        return -1;
    }
    return list_set(&m->configured, data, NULL, 0);
}

static int is_string(json_t *v, const char *want)
{
    return json_is_string(v) && strcmp(json_string_value(v), want) == 0;
}

/*
 * The upstream's answer as entries to serve (*out, new): 1 with *as_is when
 * its bytes can go out as they are (an OpenAI list whose every entry is
 * complete), 0 when it lists no model, -1 when it is not a list (or out of
 * memory). Entries without a string id are dropped; the others get what
 * OpenAI's model object has and they lack.
 */
static int upstream_entries(json_t *root, long created, json_t **out, int *as_is)
{
    json_t *data = json_object_get(root, "data");
    json_t *kept = json_is_array(data) ? json_array() : NULL;
    if (!kept)
        return -1;
    *as_is = is_string(json_object_get(root, "object"), "list");
    size_t i;
    json_t *e;
    json_array_foreach(data, i, e)
    {
        json_t *id = json_object_get(e, "id");
        if (!json_is_string(id) || json_string_length(id) == 0 ||
            strlen(json_string_value(id)) != json_string_length(id)) {
            *as_is = 0;
            continue;
        }
        json_t *cr = json_object_get(e, "created");
        json_t *owner = json_object_get(e, "owned_by");
        json_t *entry = e;
        if (!is_string(json_object_get(e, "object"), "model") || !json_is_integer(cr) ||
            !json_is_string(owner)) {
            *as_is = 0;
            entry = json_copy(e); /* shallow: only top-level members change */
            if (!entry ||
                json_object_set_new(entry, "object", json_string("model")) < 0 ||
                (!json_is_integer(cr) &&
                 json_object_set_new(entry, "created", json_integer(created)) < 0) ||
                (!json_is_string(owner) &&
                 json_object_set_new(entry, "owned_by", json_string(OWNED_BY)) < 0)) {
                json_decref(entry);
                json_decref(kept);
                return -1;
            }
        } else {
            json_incref(entry);
        }
        if (json_array_append_new(kept, entry) < 0) {
            json_decref(kept);
            return -1;
        }
    }
    if (json_array_size(kept) == 0) {
        json_decref(kept);
        return 0;
    }
    *out = kept;
    return 1;
}

/* ---- answers ---- */

/* Bytes of s to quote, at most max, not ending inside a UTF-8 character
 * (a cut one would make the whole message invalid UTF-8). */
static int utf8_cut(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return (int)n;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return (int)max;
}

/* The list, or the entry for id (404 model_not_found when the list has
 * none), from list l. */
/* The caller's access token may use this model (models=); any without. */
static int visible(const srv_ctx *ctx, json_t *entry)
{
    return !ctx->token ||
           srv_token_allows_model(ctx->token,
                                  json_string_value(json_object_get(entry, "id")));
}

/* The list a token with a models= allow-list sees: its models only, in the
 * list's order (a client picks from what it may use). */
static void answer_filtered(srv_ctx *ctx, const model_list *l)
{
    json_t *data = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(l->data, i, e)
    {
        if (visible(ctx, e))
            json_array_append(data, e);
    }
    json_t *o = json_pack("{s:s, s:o}", "object", "list", "data", data);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body)
        srv_ctx_reply_json(ctx, 200, body, strlen(body));
    else
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
    free(body);
}

static void answer(srv_ctx *ctx, const model_list *l, const char *id)
{
    if (!id && ctx->token && ctx->token->models) {
        answer_filtered(ctx, l);
        return;
    }
    if (!id) {
        srv_ctx_reply_json(ctx, 200, l->body, l->len);
        return;
    }
    size_t i;
    json_t *e;
    json_array_foreach(l->data, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "id")), id) != 0 ||
            !visible(ctx, e))
            continue;
        char *body = json_dumps(e, JSON_COMPACT);
        if (body)
            srv_ctx_reply_json(ctx, 200, body, strlen(body));
        else
            srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
        free(body);
        return;
    }
    char msg[200];
    snprintf(msg, sizeof msg, "The model '%.*s' does not exist", utf8_cut(id, 120), id);
    srv_ctx_error(ctx, 404, msg, "model_not_found", -1);
}

static void waiter_unlink(waiter *wt)
{
    srv_models *m = wt->m;
    if (wt->prev)
        wt->prev->next = wt->next;
    else
        m->waiters = wt->next;
    if (wt->next)
        wt->next->prev = wt->prev;
    free(wt->id);
    free(wt);
}

/* Answer a waiting client from the list as it is now, and end its request. */
static void waiter_answer(waiter *wt)
{
    srv_ctx *ctx = wt->ctx;
    answer(ctx, current(wt->m), wt->id);
    waiter_unlink(wt);
    srv_ctx_finish(ctx);
}

/* The client left while waiting: it only leaves the list (the fetch goes
 * on and fills the cache for the next ones). */
static void waiter_gone(srv_ctx *ctx)
{
    ctx->acc.status = SRV_STATUS_CLIENT_GONE;
    waiter_unlink(ctx->handler_data);
    srv_ctx_finish(ctx);
}

/* The drain deadline: answer from what is at hand rather than wait on. */
static void waiter_abort(srv_ctx *ctx, const char *reason)
{
    waiter_answer(ctx->handler_data);
}

static int wait_for_fetch(srv_ctx *ctx, srv_models *m, const char *id)
{
    waiter *wt = calloc(1, sizeof *wt);
    if (!wt || (id && !(wt->id = strdup(id)))) {
        free(wt);
        answer(ctx, current(m), id); /* out of memory: what is at hand */
        return SRV_ANSWERED;
    }
    wt->m = m;
    wt->ctx = ctx;
    wt->next = m->waiters;
    if (m->waiters)
        m->waiters->prev = wt;
    m->waiters = wt;
    ctx->handler_data = wt;
    ctx->on_gone = waiter_gone;
    ctx->abort = waiter_abort;
    srv_ctx_watch(ctx, 0);
    return SRV_LATER;
}

/* ---- the fetch ---- */

/* Keep the answer at hand (the last good list, else the configured one) for
 * the negative TTL, and say why once. */
static void fetch_failed(srv_models *m, const char *why)
{
    long ttl = m->w->cfg->models_cache_ttl_s;
    long keep = ttl < NEGATIVE_TTL_S ? ttl : NEGATIVE_TTL_S;
    m->fresh_until_ms = now_ms() + keep * 1000;
    srv_log("models: the upstream's model list failed (%s); serving %s for %lds", why,
            m->upstream.data ? "its last good list" : "the configured list (MODELS)",
            keep);
}

static void on_fetched(zjuchat_call *call, const zjuchat_error *err,
                       const zjuchat_response *resp, void *arg)
{
    srv_models *m = arg;
    m->fetch = NULL;
    if (err->code == ZJUCHAT_OK) {
        size_t len = 0;
        const char *body = zjuchat_response_body(resp, &len);
        json_t *root = json_loadb(body ? body : "", len, 0, NULL);
        json_t *entries = NULL;
        int as_is = 0;
        int found = root ? upstream_entries(root, m->created, &entries, &as_is) : -1;
        json_decref(root);
        if (found > 0 && list_set(&m->upstream, entries, as_is ? body : NULL, len) == 0) {
            m->fresh_until_ms = now_ms() + m->w->cfg->models_cache_ttl_s * 1000;
        } else if (found == 0) {
            /* An answer, not a failure: the upstream has no list to give. */
            list_clear(&m->upstream);
            m->fresh_until_ms = now_ms() + m->w->cfg->models_cache_ttl_s * 1000;
            srv_log("models: the upstream lists no models; serving the configured list "
                    "(MODELS)");
        } else {
            fetch_failed(m,
                         found < 0 ? "its answer is not a model list" : "out of memory");
        }
    } else if (err->code != ZJUCHAT_ERR_CANCELLED) { /* cancelled: the worker ends */
        fetch_failed(m, err->message[0] ? err->message : zjuchat_strerror(err->code));
    }
    /* One at a time from the head: answering may end another's connection. */
    while (m->waiters)
        waiter_answer(m->waiters);
}

static int fetch_started(srv_models *m)
{
    if (m->fetch)
        return 1;
    zjuchat_callbacks cb = {0};
    cb.on_done = on_fetched;
    zjuchat_error err;
    m->fetch = zjuchat_models_start(m->w->client, &cb, m, &err);
    if (!m->fetch)
        fetch_failed(m, err.message);
    return m->fetch != NULL;
}

/* ---- the handlers ---- */

static int serve(srv_ctx *ctx, const char *id)
{
    srv_worker *w = ctx->w;
    srv_models *m = w->models;
    /* No key: the configured list, without a call (the quick start). */
    if (w->client && now_ms() >= m->fresh_until_ms && fetch_started(m))
        return wait_for_fetch(ctx, m, id);
    answer(ctx, current(m), id);
    return SRV_ANSWERED;
}

int srv_handle_models(srv_ctx *ctx)
{
    return serve(ctx, NULL);
}

int srv_handle_model(srv_ctx *ctx)
{
    const char *raw = srv_req_path(ctx->req) + strlen(ctx->route->path);
    size_t len = 0;
    char *id = evhttp_uridecode(raw, 0, &len);
    if (!id) {
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
        return SRV_ANSWERED;
    }
    snprintf(ctx->acc.model, sizeof ctx->acc.model, "%s", id);
    int rc;
    if (strlen(id) != len) { /* a %00: no model id has a NUL */
        srv_ctx_error(ctx, 404, "The model id contains a NUL byte and does not exist",
                      "model_not_found", -1);
        rc = SRV_ANSWERED;
    } else {
        rc = serve(ctx, id);
    }
    free(id);
    return rc;
}

/* ---- the worker's list ---- */

srv_models *srv_models_new(srv_worker *w)
{
    srv_models *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->w = w;
    m->created = (long)time(NULL);
    if (build_configured(m) < 0) {
        free(m);
        return NULL;
    }
    return m;
}

void srv_models_free(srv_models *m)
{
    if (!m)
        return;
    list_clear(&m->configured);
    list_clear(&m->upstream);
    free(m);
}
