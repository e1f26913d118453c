/*
 * metrics.c - the registry in shared memory and its text exposition
 * (metrics.h). Histograms keep one counter per bucket (not cumulative, so
 * one observation is one add) and the sum in microseconds (an integer, so
 * an atomic add); the text is cumulative and in seconds, as Prometheus wants.
 */
#include "metrics.h"
#include "pipeline.h"
#include "routes.h"
#include "shm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATUS_MIN 100
#define STATUS_N 500 /* 100..599 */
#define NAME_MAX_LEN 65
#define MODEL_MAX_LEN 128

/* Seconds: fast cached answers to reasoning models that think for minutes. */
static const double bucket_s[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                  2.5,   5,    10,    30,   60,  120,  300};
#define NB (sizeof bucket_s / sizeof bucket_s[0])

static const char *const limit_names[] = {"rpm", "tpm", "tpd", "streams"};
#define NLIMITS (sizeof limit_names / sizeof limit_names[0])

typedef struct hist {
    uint64_t bucket[NB + 1]; /* the last one: above every bound (+Inf) */
    uint64_t sum_us;
} hist;

/* Per route, route index + 1 (0: unmatched). */
typedef struct route_metrics {
    uint64_t status[STATUS_N];
    hist duration, ttfb, ttft;
} route_metrics;

struct srv_metrics {
    srv_shm_mutex lock; /* adding a token name or a model; nothing else */
    int workers;
    size_t routes; /* table routes + 1 */
    uint64_t client_disconnects, upstream_cancellations, upstream_retries;
    uint64_t rate_limited[NLIMITS];
    uint32_t n_tokens, n_models; /* published with release: entries below are whole */
    char token_name[METRICS_MAX_TOKENS][NAME_MAX_LEN];
    char model_name[METRICS_MAX_MODELS][MODEL_MAX_LEN];
    /* [token][model][prompt, completion]; index MAX: "other" */
    uint64_t tokens[METRICS_MAX_TOKENS + 1][METRICS_MAX_MODELS + 1][2];
    /* requests that named a model (the upstream routes), [token][model] */
    uint64_t requests[METRICS_MAX_TOKENS + 1][METRICS_MAX_MODELS + 1];
    size_t streams_off, routes_off; /* from the start of the registry */
};

static void add(uint64_t *c, uint64_t n)
{
    __atomic_fetch_add(c, n, __ATOMIC_RELAXED);
}

static uint64_t get(const uint64_t *c)
{
    return __atomic_load_n(c, __ATOMIC_RELAXED);
}

static int64_t *streams_of(srv_metrics *m)
{
    return (int64_t *)((unsigned char *)m + m->streams_off);
}

static route_metrics *routes_of(srv_metrics *m)
{
    return (route_metrics *)((unsigned char *)m + m->routes_off);
}

static size_t align64(size_t n)
{
    return (n + 63) / 64 * 64;
}

size_t srv_metrics_size(int workers)
{
    return align64(sizeof(srv_metrics)) + align64((size_t)workers * sizeof(int64_t)) +
           (srv_routes_count() + 1) * sizeof(route_metrics);
}

srv_metrics *srv_metrics_init(void *mem, int workers)
{
    srv_metrics *m = mem;
    if (!m || workers < 1 || srv_shm_lock_init(&m->lock) < 0)
        return NULL;
    m->workers = workers;
    m->routes = srv_routes_count() + 1;
    m->streams_off = align64(sizeof(srv_metrics));
    m->routes_off = m->streams_off + align64((size_t)workers * sizeof(int64_t));
    return m;
}

void srv_metrics_attach(srv_metrics *m, int slot)
{
    if (slot >= 0 && slot < m->workers)
        __atomic_store_n(&streams_of(m)[slot], 0, __ATOMIC_RELAXED);
}

void srv_metrics_stream(srv_metrics *m, int slot, int delta)
{
    if (slot >= 0 && slot < m->workers)
        __atomic_fetch_add(&streams_of(m)[slot], delta, __ATOMIC_RELAXED);
}

static void observe(hist *h, long us)
{
    if (us < 0)
        return;
    size_t i = 0;
    while (i < NB && (double)us > bucket_s[i] * 1e6)
        i++;
    add(&h->bucket[i], 1);
    add(&h->sum_us, (uint64_t)us);
}

/* Bytes of s that are whole UTF-8 characters are kept; any other byte
 * becomes '?' (a label value must be UTF-8). */
static void utf8_copy(const char *in, char *out, size_t cap)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0;
    while (*p && o + 1 < cap) {
        size_t n = *p < 0x80         ? 1
                   : (*p >> 5) == 6  ? 2
                   : (*p >> 4) == 14 ? 3
                   : (*p >> 3) == 30 ? 4
                                     : 0;
        int ok = n > 0 && o + n < cap;
        for (size_t k = 1; ok && k < n; k++)
            ok = (p[k] & 0xc0) == 0x80;
        if (!ok) {
            out[o++] = '?';
            p++;
            continue;
        }
        memcpy(out + o, p, n);
        o += n;
        p += n;
    }
    out[o] = '\0';
}

/* The index of name in list (adding it when there is room), or cap for
 * "other". Readers scan without the lock up to the published count. */
static size_t intern_slow(srv_metrics *m, char *list, size_t width, uint32_t *count,
                          size_t cap, const char *raw, char *name)
{
    utf8_copy(raw, name, width < MODEL_MAX_LEN ? width : MODEL_MAX_LEN);
    uint32_t n = __atomic_load_n(count, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(list + i * width, name) == 0)
            return i;
    if (n >= cap || srv_shm_lock(&m->lock) < 0)
        return cap;
    size_t found = cap;
    n = __atomic_load_n(count, __ATOMIC_ACQUIRE); /* others may have added */
    for (uint32_t i = 0; i < n && found == cap; i++)
        if (strcmp(list + i * width, name) == 0)
            found = i;
    if (found == cap && n < cap) {
        /* written whole before it is published: a death here leaves it out */
        snprintf(list + n * width, width, "%s", name);
        __atomic_store_n(count, n + 1, __ATOMIC_RELEASE);
        found = n;
    }
    srv_shm_unlock(&m->lock);
    return found;
}

/* The last name a process looked up in a list, and where it was: requests
 * mostly name the model and token the one before named, and the copy and
 * the scan cost more than the rest of the record. A hit must still be the
 * list's entry (a list at the same address may be a new one). */
typedef struct intern_memo {
    const char *list;
    size_t index;
    char raw[MODEL_MAX_LEN], name[MODEL_MAX_LEN];
} intern_memo;

static size_t intern(srv_metrics *m, char *list, size_t width, uint32_t *count,
                     size_t cap, const char *raw, intern_memo *memo)
{
    if (memo->list == list && memo->index < __atomic_load_n(count, __ATOMIC_ACQUIRE) &&
        strcmp(memo->raw, raw) == 0 &&
        strcmp(list + memo->index * width, memo->name) == 0)
        return memo->index;
    char name[MODEL_MAX_LEN];
    size_t i = intern_slow(m, list, width, count, cap, raw, name);
    size_t raw_len = strlen(raw);
    if (i < cap && raw_len < sizeof memo->raw) { /* "other" may be for now only */
        memo->list = list;
        memo->index = i;
        memcpy(memo->raw, raw, raw_len + 1);
        memcpy(memo->name, name, sizeof memo->name);
    }
    return i;
}

void srv_metrics_record(srv_metrics *m, const srv_metrics_request *r)
{
    size_t ri =
        r->route >= 0 && (size_t)r->route + 1 < m->routes ? (size_t)r->route + 1 : 0;
    route_metrics *rm = &routes_of(m)[ri];
    if (r->status >= STATUS_MIN && r->status < STATUS_MIN + STATUS_N)
        add(&rm->status[r->status - STATUS_MIN], 1);
    observe(&rm->duration, r->duration_us);
    if (r->ttfb_ms >= 0)
        observe(&rm->ttfb, r->ttfb_ms * 1000);
    if (r->ttft_ms >= 0)
        observe(&rm->ttft, r->ttft_ms * 1000);
    if (r->status == 499)
        add(&m->client_disconnects, 1);
    if (r->cancelled)
        add(&m->upstream_cancellations, 1);
    if (r->retries > 0)
        add(&m->upstream_retries, (uint64_t)r->retries);
    for (size_t i = 0; r->limit && i < NLIMITS; i++)
        if (strcmp(r->limit, limit_names[i]) == 0)
            add(&m->rate_limited[i], 1);
    int tokens = r->prompt_tokens > 0 || r->completion_tokens > 0;
    if (tokens || (r->model && *r->model)) {
        static intern_memo token_memo, model_memo;
        size_t t = intern(m, &m->token_name[0][0], NAME_MAX_LEN, &m->n_tokens,
                          METRICS_MAX_TOKENS, r->token ? r->token : "", &token_memo);
        size_t mo = intern(m, &m->model_name[0][0], MODEL_MAX_LEN, &m->n_models,
                           METRICS_MAX_MODELS, r->model ? r->model : "", &model_memo);
        if (r->model && *r->model)
            add(&m->requests[t][mo], 1);
        if (r->prompt_tokens > 0)
            add(&m->tokens[t][mo][0], (uint64_t)r->prompt_tokens);
        if (r->completion_tokens > 0)
            add(&m->tokens[t][mo][1], (uint64_t)r->completion_tokens);
    }
}

/* ---- the text format ---- */

void srv_metrics_escape(const char *in, char *out, size_t cap)
{
    char clean[MODEL_MAX_LEN * 2];
    utf8_copy(in, clean, sizeof clean);
    size_t o = 0;
    for (const char *p = clean; *p && o + 3 < cap; p++) {
        if (*p == '\\' || *p == '"') {
            out[o++] = '\\';
            out[o++] = *p;
        } else if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The route label of route index ri (0: unmatched), escaped. */
static void route_label(size_t ri, char *out, size_t cap)
{
    if (ri == 0) {
        snprintf(out, cap, "route=\"unmatched\"");
        return;
    }
    const srv_route *r = srv_routes_at(ri - 1);
    char path[300], method[40];
    srv_metrics_escape(r->path, path, sizeof path);
    srv_metrics_escape(r->method, method, sizeof method);
    snprintf(out, cap, "route=\"%s%s\",method=\"%s\"", path,
             (r->flags & SRV_ROUTE_PREFIX) ? "*" : "", method);
}

static uint64_t hist_count(const hist *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i <= NB; i++)
        n += get(&h->bucket[i]);
    return n;
}

static void hist_series(FILE *f, const char *name, const char *labels, const hist *h)
{
    uint64_t cum = 0;
    for (size_t i = 0; i < NB; i++) {
        cum += get(&h->bucket[i]);
        fprintf(f, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, bucket_s[i],
                (unsigned long long)cum);
    }
    cum += get(&h->bucket[NB]);
    fprintf(f, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    fprintf(f, "%s_sum{%s} %.6f\n", name, labels, (double)get(&h->sum_us) / 1e6);
    fprintf(f, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
}

/* One histogram family over the routes (offset: which hist of a route);
 * a route without observations is left out, except upstream routes (so
 * the family always has series to show its buckets). */
static void hist_family(FILE *f, srv_metrics *m, const char *name, const char *help,
                        size_t offset)
{
    head(f, name, "histogram", help);
    for (size_t ri = 0; ri < m->routes; ri++) {
        const hist *h = (const hist *)((const unsigned char *)&routes_of(m)[ri] + offset);
        int upstream = ri > 0 && (srv_routes_at(ri - 1)->flags & SRV_ROUTE_UPSTREAM);
        if (!upstream && hist_count(h) == 0)
            continue;
        char labels[400];
        route_label(ri, labels, sizeof labels);
        hist_series(f, name, labels, h);
    }
}

static void counter(FILE *f, const char *name, const char *help, uint64_t v)
{
    head(f, name, "counter", help);
    fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

/* A family labelled by access token name and model (the interned names,
 * then "other"): requests, or tokens by type. */
static void token_model_family(FILE *f, srv_metrics *m, const char *name,
                               const char *help, int tokens)
{
    static const char *const type[] = {"prompt", "completion"};
    head(f, name, "counter", help);
    uint32_t nt = __atomic_load_n(&m->n_tokens, __ATOMIC_ACQUIRE);
    uint32_t nm = __atomic_load_n(&m->n_models, __ATOMIC_ACQUIRE);
    for (size_t t = 0; t <= METRICS_MAX_TOKENS; t++) {
        if (t >= nt && t != METRICS_MAX_TOKENS)
            continue;
        char tok[NAME_MAX_LEN * 2];
        srv_metrics_escape(t == METRICS_MAX_TOKENS ? "other" : m->token_name[t], tok,
                           sizeof tok);
        for (size_t mo = 0; mo <= METRICS_MAX_MODELS; mo++) {
            if (mo >= nm && mo != METRICS_MAX_MODELS)
                continue;
            char model[MODEL_MAX_LEN * 2];
            srv_metrics_escape(mo == METRICS_MAX_MODELS ? "other" : m->model_name[mo],
                               model, sizeof model);
            for (int k = 0; k < (tokens ? 2 : 1); k++) {
                uint64_t v = get(tokens ? &m->tokens[t][mo][k] : &m->requests[t][mo]);
                if (!v)
                    continue;
                fprintf(f, "%s{token=\"%s\",model=\"%s\"", name, tok, model);
                if (tokens)
                    fprintf(f, ",type=\"%s\"", type[k]);
                fprintf(f, "} %llu\n", (unsigned long long)v);
            }
        }
    }
}

char *srv_metrics_render(srv_metrics *m, const srv_metrics_extra *extra, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return NULL;
    head(f, "zju_http_requests_total", "counter",
         "Requests answered, by route, method and status (499: the client left first).");
    for (size_t ri = 0; ri < m->routes; ri++) {
        char labels[400];
        route_label(ri, labels, sizeof labels);
        for (int s = 0; s < STATUS_N; s++) {
            uint64_t v = get(&routes_of(m)[ri].status[s]);
            if (v)
                fprintf(f, "zju_http_requests_total{%s,status=\"%d\"} %llu\n", labels,
                        s + STATUS_MIN, (unsigned long long)v);
        }
    }
    hist_family(f, m, "zju_http_request_duration_seconds",
                "Time from the complete request to the end of its reply.",
                offsetof(route_metrics, duration));
    hist_family(f, m, "zju_upstream_ttfb_seconds",
                "Upstream time to first byte: from the call's start to its status line.",
                offsetof(route_metrics, ttfb));
    hist_family(f, m, "zju_upstream_ttft_seconds",
                "Upstream time to first token of a stream: from the call's start to the "
                "first content or reasoning delta.",
                offsetof(route_metrics, ttft));
    head(f, "zju_streams_in_flight", "gauge", "Streamed replies in progress.");
    int64_t streams = 0;
    for (int i = 0; i < m->workers; i++)
        streams += __atomic_load_n(&streams_of(m)[i], __ATOMIC_RELAXED);
    fprintf(f, "zju_streams_in_flight %lld\n", (long long)(streams > 0 ? streams : 0));
    counter(f, "zju_client_disconnects_total",
            "Clients that left before their reply ended.", get(&m->client_disconnects));
    counter(f, "zju_upstream_cancellations_total",
            "Upstream calls cancelled before their end (client gone, shutdown).",
            get(&m->upstream_cancellations));
    counter(f, "zju_upstream_retries_total", "Upstream attempts beyond the first.",
            get(&m->upstream_retries));
    head(f, "zju_rate_limited_total", "counter",
         "Requests refused by a rate limit (429), by the limit that refused them.");
    for (size_t i = 0; i < NLIMITS; i++)
        fprintf(f, "zju_rate_limited_total{limit=\"%s\"} %llu\n", limit_names[i],
                (unsigned long long)get(&m->rate_limited[i]));
    token_model_family(f, m, "zju_model_requests_total",
                       "Requests that named a model, by access token name and model.", 0);
    token_model_family(
        f, m, "zju_tokens_total",
        "Tokens the upstream reported (usage), by access token name, model and "
        "type.",
        1);
    if (extra && extra->have_limits) {
        head(f, "zju_ratelimit_keys", "gauge",
             "Rate limit keys in the table (clients, tokens; an idle one stays until "
             "its place is needed).");
        fprintf(f, "zju_ratelimit_keys %zu\n", extra->limit_keys);
        head(f, "zju_ratelimit_keys_capacity", "gauge",
             "Rate limit keys the shared table holds (LIMITS_KEYS).");
        fprintf(f, "zju_ratelimit_keys_capacity %zu\n", extra->limit_capacity);
        counter(f, "zju_ratelimit_evictions_total",
                "Rate limit keys dropped while still counting: the table is too small.",
                extra->limit_evicted);
        counter(f, "zju_shared_lock_recoveries_total",
                "Times a worker took over the limiter's lock from a worker that died "
                "holding it.",
                extra->lock_recovered);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}
