/*
 * ratelimit.c - the shared-memory rate limiter (ratelimit.h): a fixed table of
 * keys in the region the supervisor mapped before forking (shm.h), guarded
 * by one robust process-shared mutex taken once to admit a request and once
 * at its end when it has tokens to count or a place to give back.
 *
 * The table is set-associative: a key's hash picks a set of WAYS entries,
 * and a new key takes a free entry of its set, else an idle one (nothing
 * counted, nothing in flight), else the least recently used. Memory stays
 * LIMITS_KEYS entries whatever the number of clients; a key dropped while
 * it still counted is counted in the stats (the table is too small then).
 */
#include "ratelimit.h"
#include "shm.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define WAYS 8
#define MIN_SLOTS 60 /* the minute: 60 slots of one second */
#define MIN_WIDTH_MS 1000
#define DAY_SLOTS 96 /* the day: 96 slots of a quarter hour */
#define DAY_WIDTH_MS (15 * 60 * 1000)
#define STREAMS_RETRY_MS 1000 /* a place frees when a request ends: unknown */

typedef struct ring {
    int64_t head;   /* absolute index (time / width) of the newest slot */
    uint64_t total; /* sum of the slots */
} ring;

typedef struct entry {
    uint64_t hash;      /* 0: free */
    int64_t last_ms;    /* last use, for the LRU choice */
    int64_t idle_at_ms; /* from then on nothing is counted any more */
    char key[SRV_LIMIT_KEY_MAX];
    ring req, tok_min, tok_day;
    uint32_t req_slot[MIN_SLOTS];
    uint32_t tok_min_slot[MIN_SLOTS];
    uint32_t tok_day_slot[DAY_SLOTS];
    uint32_t inflight[]; /* places held, per worker slot */
} entry;

struct srv_limits_shm {
    srv_shm_mutex lock;
    uint64_t seed;
    size_t nsets;
    size_t stride; /* bytes per entry: entry + inflight[workers] */
    int workers;
    uint64_t used; /* entries that hold a key (idle ones too) */
    uint64_t evicted, recovered;
    _Alignas(64) unsigned char entries[];
};

/* ---- windows ---- */

/* Move the window to slot index idx: slots that left it are emptied. */
static void ring_advance(ring *r, uint32_t *slot, int n, int64_t idx)
{
    if (idx <= r->head)
        return;
    if (idx - r->head >= n) {
        memset(slot, 0, (size_t)n * sizeof *slot);
        r->total = 0;
    } else {
        for (int64_t i = r->head + 1; i <= idx; i++) {
            r->total -= slot[i % n];
            slot[i % n] = 0;
        }
    }
    r->head = idx;
}

static void ring_add(ring *r, uint32_t *slot, int n, int64_t idx, uint64_t amount)
{
    ring_advance(r, slot, n, idx);
    uint64_t room = UINT32_MAX - slot[idx % n];
    if (amount > room)
        amount = room; /* a slot saturates rather than wraps */
    slot[idx % n] += (uint32_t)amount;
    r->total += amount;
}

/* Milliseconds from now until the window (advanced to now) holds less than
 * limit: its oldest slots leave one by one, slot b at (b + n) * width. */
static int64_t ring_wait(const ring *r, const uint32_t *slot, int n, int64_t width,
                         uint64_t limit, int64_t now_ms)
{
    uint64_t left = r->total;
    for (int64_t b = r->head - n + 1; b <= r->head; b++) {
        left -= slot[((b % n) + n) % n];
        if (left < limit)
            return (b + n) * width - now_ms;
    }
    return width; /* not reached: an empty window holds less than limit >= 1 */
}

/* ---- the table ---- */

static entry *entry_at(srv_limits_shm *t, size_t i)
{
    return (entry *)(t->entries + i * t->stride);
}

static uint64_t hash_key(const srv_limits_shm *t, const char *key)
{
    uint64_t h = 1469598103934665603ULL ^ t->seed; /* FNV-1a, seeded */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    h ^= h >> 29; /* the set index uses the low bits: mix the high ones in */
    return h ? h : 1;
}

static uint32_t inflight_sum(const srv_limits_shm *t, const entry *e)
{
    uint32_t n = 0;
    for (int i = 0; i < t->workers; i++)
        n += e->inflight[i];
    return n;
}

static int idle(const srv_limits_shm *t, const entry *e, int64_t now_ms)
{
    return e->idle_at_ms <= now_ms && inflight_sum(t, e) == 0;
}

/* The entry of key; with claim, a new one when it has none (never one of
 * keep[0..nkeep), the entries this request uses already). */
static entry *find(srv_limits_shm *t, const char *key, int64_t now_ms, int claim,
                   entry **keep, int nkeep)
{
    uint64_t h = hash_key(t, key);
    size_t set = (size_t)(h % t->nsets) * WAYS;
    for (int w = 0; w < WAYS; w++) {
        entry *e = entry_at(t, set + (size_t)w);
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    }
    if (!claim)
        return NULL;
    entry *free_e = NULL, *idle_e = NULL, *lru_free = NULL, *lru = NULL;
    for (int w = 0; w < WAYS; w++) {
        entry *e = entry_at(t, set + (size_t)w);
        int kept = 0;
        for (int k = 0; k < nkeep; k++)
            kept |= keep[k] == e;
        if (kept)
            continue;
        if (e->hash == 0) {
            free_e = e;
            break;
        }
        if (!idle_e && idle(t, e, now_ms))
            idle_e = e;
        if (inflight_sum(t, e) == 0 && (!lru_free || e->last_ms < lru_free->last_ms))
            lru_free = e;
        if (!lru || e->last_ms < lru->last_ms)
            lru = e;
    }
    entry *e = free_e ? free_e : idle_e ? idle_e : lru_free ? lru_free : lru;
    if (!e)
        return NULL;
    if (free_e)
        t->used++;
    else if (!idle_e)
        t->evicted++;
    e->hash = 0; /* free while it is rewritten (a death here leaves it free) */
    memset((unsigned char *)e + sizeof e->hash, 0, t->stride - sizeof e->hash);
    snprintf(e->key, sizeof e->key, "%s", key);
    e->last_ms = now_ms;
    e->hash = h;
    return e;
}

/* After a worker died holding the lock: every total from its slots again
 * (an update may have been cut between a slot and its total), and the
 * entries in use counted again. */
static void repair(srv_limits_shm *t)
{
    size_t n = t->nsets * WAYS;
    t->used = 0;
    for (size_t i = 0; i < n; i++) {
        entry *e = entry_at(t, i);
        if (e->hash == 0)
            continue;
        t->used++;
        ring *r[] = {&e->req, &e->tok_min, &e->tok_day};
        uint32_t *s[] = {e->req_slot, e->tok_min_slot, e->tok_day_slot};
        int len[] = {MIN_SLOTS, MIN_SLOTS, DAY_SLOTS};
        for (int k = 0; k < 3; k++) {
            r[k]->total = 0;
            for (int j = 0; j < len[k]; j++)
                r[k]->total += s[k][j];
        }
    }
}

/* 0 with the lock held, -1 when it cannot be taken. */
static int lock_table(srv_limits_shm *t)
{
    int rc = srv_shm_lock(&t->lock);
    if (rc == 1) {
        repair(t);
        t->recovered++;
    }
    return rc < 0 ? -1 : 0;
}

static void push_idle_at(entry *e, int64_t until_ms)
{
    if (until_ms > e->idle_at_ms)
        e->idle_at_ms = until_ms;
}

/* ---- admit and done ---- */

static void refuse(srv_limit_verdict *v, int rule, const char *limit, long value,
                   int64_t wait_ms)
{
    long s = (long)((wait_ms + 999) / 1000);
    if (s < 1)
        s = 1;
    /* several limits refuse: the request waits for the last of them */
    if (v->allowed || s > v->retry_after_s) {
        v->allowed = 0;
        v->retry_after_s = s;
        v->limit = limit;
        v->value = value;
        v->rule = rule;
    }
}

void srv_limits_shm_admit_at(srv_limits_shm *t, int slot, srv_limit_ask *ask,
                             int64_t now_ms, srv_limit_verdict *v)
{
    memset(v, 0, sizeof *v);
    v->allowed = 1;
    if (ask->n <= 0)
        return;
    if (lock_table(t) < 0)
        return; /* a broken lock must not stop the service: no limits */
    entry *e[SRV_LIMIT_RULES] = {0};
    int64_t sec = now_ms / MIN_WIDTH_MS, quarter = now_ms / DAY_WIDTH_MS;
    for (int i = 0; i < ask->n; i++) {
        srv_limit_rule *r = &ask->rule[i];
        r->held = 0;
        e[i] = find(t, r->key, now_ms, 1, e, i);
        if (!e[i])
            continue;
        entry *x = e[i];
        ring_advance(&x->req, x->req_slot, MIN_SLOTS, sec);
        ring_advance(&x->tok_min, x->tok_min_slot, MIN_SLOTS, sec);
        ring_advance(&x->tok_day, x->tok_day_slot, DAY_SLOTS, quarter);
        if (r->rpm > 0 && x->req.total >= (uint64_t)r->rpm)
            refuse(v, i, "rpm", r->rpm,
                   ring_wait(&x->req, x->req_slot, MIN_SLOTS, MIN_WIDTH_MS,
                             (uint64_t)r->rpm, now_ms));
        if (r->tpm > 0 && x->tok_min.total >= (uint64_t)r->tpm)
            refuse(v, i, "tpm", r->tpm,
                   ring_wait(&x->tok_min, x->tok_min_slot, MIN_SLOTS, MIN_WIDTH_MS,
                             (uint64_t)r->tpm, now_ms));
        if (r->tpd > 0 && x->tok_day.total >= (uint64_t)r->tpd)
            refuse(v, i, "tpd", r->tpd,
                   ring_wait(&x->tok_day, x->tok_day_slot, DAY_SLOTS, DAY_WIDTH_MS,
                             (uint64_t)r->tpd, now_ms));
        if (r->streams > 0 && inflight_sum(t, x) >= (uint64_t)r->streams)
            refuse(v, i, "streams", r->streams, STREAMS_RETRY_MS);
    }
    if (v->allowed) {
        for (int i = 0; i < ask->n; i++) {
            entry *x = e[i];
            if (!x)
                continue;
            ring_add(&x->req, x->req_slot, MIN_SLOTS, sec, 1);
            push_idle_at(x, (sec + MIN_SLOTS) * MIN_WIDTH_MS);
            x->last_ms = now_ms;
            if (ask->rule[i].streams > 0 && slot >= 0 && slot < t->workers) {
                x->inflight[slot]++;
                ask->rule[i].held = 1;
            }
        }
    }
    srv_shm_unlock(&t->lock);
}

void srv_limits_shm_usage_at(srv_limits_shm *t, const char *key, int64_t now_ms,
                             srv_limit_usage *out)
{
    memset(out, 0, sizeof *out);
    if (lock_table(t) < 0)
        return;
    out->known = 1;
    entry *x = find(t, key, now_ms, 0, NULL, 0);
    if (x) { /* moving the windows to now changes no count: what left them */
        int64_t sec = now_ms / MIN_WIDTH_MS, quarter = now_ms / DAY_WIDTH_MS;
        ring_advance(&x->req, x->req_slot, MIN_SLOTS, sec);
        ring_advance(&x->tok_min, x->tok_min_slot, MIN_SLOTS, sec);
        ring_advance(&x->tok_day, x->tok_day_slot, DAY_SLOTS, quarter);
        out->requests_minute = (long)x->req.total;
        out->tokens_minute = (long)x->tok_min.total;
        out->tokens_day = (long)x->tok_day.total;
        out->streams = (long)inflight_sum(t, x);
    }
    srv_shm_unlock(&t->lock);
}

static int counts_tokens(const srv_limit_rule *r, long total_tokens)
{
    return total_tokens > 0 && (r->tpm > 0 || r->tpd > 0);
}

int srv_limit_ask_needs_done(const srv_limit_ask *ask, long total_tokens)
{
    for (int i = 0; i < ask->n; i++)
        if (ask->rule[i].held || counts_tokens(&ask->rule[i], total_tokens))
            return 1;
    return 0;
}

void srv_limits_shm_done_at(srv_limits_shm *t, int slot, const srv_limit_ask *ask,
                            long total_tokens, int64_t now_ms)
{
    if (!srv_limit_ask_needs_done(ask, total_tokens) || lock_table(t) < 0)
        return;
    int64_t sec = now_ms / MIN_WIDTH_MS, quarter = now_ms / DAY_WIDTH_MS;
    entry *e[SRV_LIMIT_RULES] = {0};
    for (int i = 0; i < ask->n; i++) {
        const srv_limit_rule *r = &ask->rule[i];
        int tokens = counts_tokens(r, total_tokens);
        /* a key dropped meanwhile (table full) is taken again for tokens */
        entry *x = e[i] = find(t, r->key, now_ms, tokens, e, i);
        if (!x)
            continue;
        if (r->held && slot >= 0 && slot < t->workers && x->inflight[slot] > 0)
            x->inflight[slot]--;
        if (tokens) {
            ring_add(&x->tok_min, x->tok_min_slot, MIN_SLOTS, sec,
                     (uint64_t)total_tokens);
            ring_add(&x->tok_day, x->tok_day_slot, DAY_SLOTS, quarter,
                     (uint64_t)total_tokens);
            push_idle_at(x, (quarter + DAY_SLOTS) * (int64_t)DAY_WIDTH_MS);
        }
        x->last_ms = now_ms;
    }
    srv_shm_unlock(&t->lock);
}

void srv_limits_shm_release_slot(srv_limits_shm *t, int slot)
{
    if (slot < 0 || slot >= t->workers || lock_table(t) < 0)
        return;
    /* Only entries that hold a key are read: a never-used entry's page
     * stays untouched, so a fresh worker does not fault the whole table in
     * (8 MB of RSS per worker with the default LIMITS_KEYS). */
    size_t n = t->nsets * WAYS;
    for (size_t i = 0; i < n && t->used > 0; i++) {
        entry *e = entry_at(t, i);
        if (e->inflight[slot])
            e->inflight[slot] = 0;
    }
    srv_shm_unlock(&t->lock);
}

/* Counters only: a scrape must not hold the lock over the whole table. */
void srv_limits_shm_stats(srv_limits_shm *t, srv_limits_stats *out)
{
    memset(out, 0, sizeof *out);
    out->capacity = t->nsets * WAYS;
    if (lock_table(t) < 0)
        return;
    out->keys = (size_t)t->used;
    out->evicted = t->evicted;
    out->recovered = t->recovered;
    srv_shm_unlock(&t->lock);
}

/* ---- layout ---- */

static size_t stride_of(int workers)
{
    size_t s = sizeof(entry) + (size_t)workers * sizeof(uint32_t);
    return (s + 7) / 8 * 8;
}

static size_t sets_of(size_t keys)
{
    size_t sets = (keys + WAYS - 1) / WAYS;
    return sets ? sets : 1;
}

size_t srv_limits_shm_size(size_t keys, int workers)
{
    return sizeof(srv_limits_shm) + sets_of(keys) * WAYS * stride_of(workers);
}

srv_limits_shm *srv_limits_shm_init(void *mem, size_t keys, int workers, uint64_t seed)
{
    srv_limits_shm *t = mem;
    if (!t || workers < 1 || srv_shm_lock_init(&t->lock) < 0)
        return NULL;
    t->seed = seed;
    t->nsets = sets_of(keys);
    t->stride = stride_of(workers);
    t->workers = workers;
    return t;
}

/* ---- the limiter of this process ---- */

typedef struct shm_limiter {
    srv_limiter base;
    srv_limits_shm *t;
    int slot;
} shm_limiter;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* one clock for every process */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int op_admit(srv_limiter *l, srv_limit_ask *ask, srv_limit_verdict_cb cb,
                    void *arg)
{
    shm_limiter *s = (shm_limiter *)l;
    srv_limit_verdict v;
    srv_limits_shm_admit_at(s->t, s->slot, ask, mono_ms(), &v);
    cb(arg, &v);
    return SRV_LIMIT_ANSWERED;
}

static void op_done(srv_limiter *l, const srv_limit_ask *ask, long total_tokens)
{
    shm_limiter *s = (shm_limiter *)l;
    srv_limits_shm_done_at(s->t, s->slot, ask, total_tokens, mono_ms());
}

static int op_usage(srv_limiter *l, const char *key, srv_limit_usage_cb cb, void *arg)
{
    shm_limiter *s = (shm_limiter *)l;
    srv_limit_usage u;
    srv_limits_shm_usage_at(s->t, key, mono_ms(), &u);
    cb(arg, &u);
    return SRV_LIMIT_ANSWERED;
}

static const srv_limiter_ops shm_ops = {op_admit, op_done, op_usage};

srv_limiter *srv_limits_shm_attach(srv_limits_shm *t, int slot)
{
    static shm_limiter one;
    one.base.ops = &shm_ops;
    one.t = t;
    one.slot = slot;
    srv_limits_shm_release_slot(t, slot);
    return &one.base;
}

/* ---- keys ---- */

void srv_limits_key(char *out, size_t cap, const char *prefix, const char *text,
                    const char *suffix)
{
    /* snprintf's "%s%s%s" without its machinery (two thirds of the rules'
     * cost per request): cut to cap - 1 bytes, always terminated */
    const char *part[3] = {prefix, text, suffix};
    size_t o = 0;
    for (int i = 0; i < 3 && cap > 0; i++) {
        size_t n = strlen(part[i]);
        if (n > cap - 1 - o)
            n = cap - 1 - o;
        memcpy(out + o, part[i], n);
        o += n;
    }
    if (cap > 0)
        out[o] = '\0';
}

static int ip_key(const char *addr, char *out, size_t cap)
{
    unsigned char b[16];
    char text[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, addr, b) == 1) {
        srv_limits_key(out, cap, "ip:", addr, "");
        return 0;
    }
    if (inet_pton(AF_INET6, addr, b) != 1)
        return -1;
    memset(b + 8, 0, 8);
    if (!inet_ntop(AF_INET6, b, text, sizeof text))
        return -1;
    srv_limits_key(out, cap, "ip:", text, "/64");
    return 0;
}

int srv_limits_ip_key(const char *addr, char *out, size_t cap)
{
    /* The last address's key is kept: consecutive requests mostly come
     * from one address, and parsing it was most of the rules' cost. */
    static char last_addr[INET6_ADDRSTRLEN], last_key[SRV_LIMIT_KEY_MAX];
    if (!last_addr[0] || strcmp(addr, last_addr) != 0) {
        size_t len = strlen(addr);
        last_addr[0] = '\0';
        if (len >= sizeof last_addr) /* no address: not parsed, not kept */
            return -1;
        if (ip_key(addr, last_key, sizeof last_key) < 0)
            return -1;
        memcpy(last_addr, addr, len + 1);
    }
    srv_limits_key(out, cap, last_key, "", "");
    return 0;
}
