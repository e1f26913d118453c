/*
 * limits_redis.c - the rate limiter on Redis (limits_redis.h): one hiredis
 * asynchronous connection per worker, on the worker's libevent loop.
 *
 * A request's admit is one EVALSHA of the admit script (limits_redis_lua.c)
 * and its end one EVALSHA of the update script: one round trip each, the
 * verdict given from the loop when the reply comes (SRV_LIMIT_PENDING).
 * GET /v1/usage is one EVALSHA of the usage script (a read), answered the
 * same way; whatever fails it (as an admit's failure) answers "unknown".
 *
 * The connection's life: resolve the host (evdns: a name never blocks the
 * loop), connect (non-blocking), AUTH / SELECT / SCRIPT LOAD, then up. Every
 * step and every command has a deadline (REDIS_TIMEOUT_MS) kept by one
 * watchdog timer; a deadline missed, an error or a close drops the
 * connection, and every command waiting on it gets the failure verdict at
 * once. From then on, until a new connection is up, admits are answered
 * at once without asking (the outage: logged once, not per request), and a
 * timer reconnects with backoff. Before the first connection admits wait
 * for it (bounded by the same deadline), so a fresh server counts its first
 * requests too.
 *
 * Places held (streams): Redis keeps one field per worker connection with
 * a lease (limits_redis_lua.c), renewed every RENEW_MS. This worker keeps
 * its own count per (key, connection) in `holds`, so that after a lost
 * connection (or a Redis that restarted empty) the renewal sets the old
 * connection's fields to what is really still in flight.
 */
#include "limits_redis.h"
#include "accesslog.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define LEASE_MS 30000 /* a dead worker's places count this long at most */
#define RENEW_MS 10000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define RENEW_BATCH 32   /* keys per renewal command */
#define BACKLOG_MAX 1024 /* token counts kept while Redis is away */
#define MAX_ARGS (6 + SRV_LIMIT_RULES * 5 + RENEW_BATCH * 5)

enum state { DOWN, RESOLVING, CONNECTING, HANDSHAKE, UP };
enum kind { OP_ADMIT, OP_UPDATE, OP_USAGE, OP_SETUP };
enum script { ADMIT, UPDATE, USAGE, NSCRIPTS };

typedef struct redis_limiter redis_limiter;

typedef struct op {
    struct op *prev, *next; /* in l->sent, l->unsent or l->backlog */
    redis_limiter *l;
    enum kind kind;
    int64_t deadline_ms;
    int script, retried; /* EVALSHA's script; resent as EVAL once on NOSCRIPT */
    unsigned gen;        /* the connection it was sent on */
    /* admit: */
    srv_limit_ask *ask;
    srv_limit_verdict_cb cb;
    void *arg; /* admit's or usage's */
    /* usage: */
    srv_limit_usage_cb ucb;
    /* the command */
    int argc;
    char *argv[MAX_ARGS];
    size_t len[MAX_ARGS];
} op;

typedef struct op_list {
    op *head, *tail;
    long n;
} op_list;

/* Places this worker holds on one key through one connection. */
typedef struct hold {
    struct hold *next;
    char key[SRV_LIMIT_KEY_MAX];
    unsigned gen;
    long held;    /* admitted and not yet done */
    long pending; /* admits sent on gen without a reply yet */
    int dirty;    /* Redis's field to be set to `held` (an old connection's) */
} hold;

struct redis_limiter {
    srv_limiter base;
    const srv_redis_config *rc;
    struct event_base *ev;
    struct evdns_base *dns;
    struct evdns_getaddrinfo_request *dns_req;
    redisAsyncContext *ac;
    enum state state;
    unsigned gen;      /* connections that came up */
    int outage;        /* since the last connection failed: answer at once */
    int64_t outage_ms; /* when it began */
    int64_t connect_deadline_ms;
    long backoff_ms;
    int error_logged; /* an error reply was logged since the last good one */
    int closing;
    char id[17]; /* this worker's hold id */
    char sha[NSCRIPTS][41];
    int setup_left;
    op_list sent, unsent, backlog;
    hold *holds;
    struct event *watchdog, *reconnect, *renew;
};

static const srv_limiter_ops redis_ops;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void timer_in(struct event *ev, int64_t ms)
{
    if (ms < 0)
        ms = 0;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* ---- op lists and commands ---- */

static void list_push(op_list *q, op *o)
{
    o->next = NULL;
    o->prev = q->tail;
    if (q->tail)
        q->tail->next = o;
    else
        q->head = o;
    q->tail = o;
    q->n++;
}

static void list_remove(op_list *q, op *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else
        q->head = o->next;
    if (o->next)
        o->next->prev = o->prev;
    else
        q->tail = o->prev;
    o->prev = o->next = NULL;
    q->n--;
}

static op *op_new(redis_limiter *l, enum kind kind)
{
    op *o = calloc(1, sizeof *o);
    if (o) {
        o->l = l;
        o->kind = kind;
    }
    return o;
}

static void op_free(op *o)
{
    for (int i = 0; i < o->argc; i++)
        free(o->argv[i]);
    free(o);
}

static int arg(op *o, const char *s)
{
    if (o->argc >= MAX_ARGS || !(o->argv[o->argc] = strdup(s)))
        return -1;
    o->len[o->argc] = strlen(s);
    o->argc++;
    return 0;
}

static int arg_long(op *o, long v)
{
    char s[32];
    snprintf(s, sizeof s, "%ld", v);
    return arg(o, s);
}

/* EVALSHA <sha> <nkeys>: the head of a script command (the SHA-1 is
 * filled in when it is sent: an op may be made before SCRIPT LOAD). */
static int script_head(op *o, int script, int nkeys)
{
    o->script = script;
    return arg(o, "EVALSHA") || arg(o, "") || arg_long(o, nkeys);
}

static int set_arg(op *o, int i, const char *s, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, s, len);
    copy[len] = '\0';
    free(o->argv[i]);
    o->argv[i] = copy;
    o->len[i] = len;
    return 0;
}

static int key_arg(op *o, const char *key)
{
    char k[SRV_LIMIT_KEY_MAX + 80];
    snprintf(k, sizeof k, "%s%s", o->l->rc->prefix, key);
    return arg(o, k);
}

static void holder_field(const redis_limiter *l, unsigned gen, char *out, size_t cap)
{
    snprintf(out, cap, "h%s.%u", l->id, gen);
}

/* ---- places held ---- */

static hold *hold_get(redis_limiter *l, const char *key, unsigned gen, int create)
{
    for (hold *h = l->holds; h; h = h->next)
        if (h->gen == gen && strcmp(h->key, key) == 0)
            return h;
    if (!create)
        return NULL;
    hold *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    snprintf(h->key, sizeof h->key, "%s", key);
    h->gen = gen;
    h->next = l->holds;
    l->holds = h;
    return h;
}

static void hold_drop_idle(redis_limiter *l)
{
    for (hold **p = &l->holds; *p;) {
        hold *h = *p;
        if (h->held <= 0 && h->pending <= 0 && !h->dirty) {
            *p = h->next;
            free(h);
        } else {
            p = &h->next;
        }
    }
}

/* ---- verdicts ---- */

static void answer(op *o, const srv_limit_verdict *v)
{
    srv_limit_verdict_cb cb = o->cb;
    o->cb = NULL;
    if (cb)
        cb(o->arg, v);
}

/* Redis cannot say: REDIS_FAILURE decides. */
static void answer_failure(op *o)
{
    redis_limiter *l = o->l;
    srv_limit_verdict v;
    memset(&v, 0, sizeof v);
    v.allowed = l->rc->failure_open;
    if (!v.allowed) {
        v.unavailable = 1;
        v.limit = "unavailable";
        v.retry_after_s = (l->backoff_ms + 999) / 1000;
        if (v.retry_after_s < 1)
            v.retry_after_s = 1;
    }
    if (o->ask)
        for (int i = 0; i < o->ask->n; i++)
            o->ask->rule[i].held = 0;
    answer(o, &v);
}

/* A usage report: to its callback once (ucb cleared first). */
static void answer_usage(op *o, const srv_limit_usage *u)
{
    srv_limit_usage_cb cb = o->ucb;
    o->ucb = NULL;
    if (cb)
        cb(o->arg, u);
}

/* Redis cannot say: usage.c answers "used": null. */
static void answer_usage_unknown(op *o)
{
    srv_limit_usage u;
    memset(&u, 0, sizeof u);
    answer_usage(o, &u);
}

/* Admits sent on a connection that is gone: their places are not pending
 * any more (Redis may have taken them: the renewal sets the field). */
static void unpend(op *o)
{
    if (o->kind != OP_ADMIT || !o->gen)
        return;
    for (int i = 0; i < o->ask->n; i++) {
        if (o->ask->rule[i].streams <= 0)
            continue;
        hold *h = hold_get(o->l, o->ask->rule[i].key, o->gen, 0);
        if (h && h->pending > 0) {
            h->pending--;
            if (o->gen != o->l->gen || o->l->state != UP)
                h->dirty = 1;
        }
    }
}

static void fail_op(op *o)
{
    unpend(o);
    if (o->kind == OP_ADMIT)
        answer_failure(o);
    else if (o->kind == OP_USAGE)
        answer_usage_unknown(o);
    op_free(o);
}

static void fail_list(op_list *q)
{
    op *o;
    while ((o = q->head)) {
        list_remove(q, o);
        fail_op(o);
    }
}

/* ---- the connection ---- */

static void arm_watchdog(redis_limiter *l);
static void schedule_reconnect(redis_limiter *l);
static void send_renewals(redis_limiter *l);

static void begin_outage(redis_limiter *l, const char *why)
{
    if (!l->outage && !l->closing) {
        l->outage = 1;
        l->outage_ms = mono_ms();
        srv_log("redis: unreachable (%s); REDIS_FAILURE=%s: %s until it is back", why,
                l->rc->failure_open ? "open" : "closed",
                l->rc->failure_open ? "requests pass, counted on no limit"
                                    : "requests with limits are refused (503)");
    }
}

/* The connection is gone (or given up): everything waiting on it fails
 * now, old connections' places are to be set again, and a reconnect is
 * scheduled. hiredis frees ac itself when it reported the loss; otherwise
 * free_ac says to free it here. */
static void lost(redis_limiter *l, const char *why, int free_ac)
{
    redisAsyncContext *ac = l->ac;
    l->ac = NULL;
    l->state = DOWN;
    begin_outage(l, why);
    for (hold *h = l->holds; h; h = h->next)
        h->dirty = 1;
    if (ac && free_ac)
        redisAsyncFree(ac); /* its callbacks run now, with no reply */
    if (l->dns_req) {
        struct evdns_getaddrinfo_request *req = l->dns_req;
        l->dns_req = NULL;
        evdns_getaddrinfo_cancel(req);
    }
    fail_list(&l->unsent);
    evtimer_del(l->renew);
    if (!l->closing)
        schedule_reconnect(l);
    arm_watchdog(l);
}

static int send_op(redis_limiter *l, op *o);

static void on_reply(redisAsyncContext *ac, void *r, void *privdata);

static void became_up(redis_limiter *l)
{
    l->state = UP;
    l->gen++;
    l->backoff_ms = BACKOFF_MIN_MS;
    if (l->outage) {
        srv_log("redis: connected again after %.1f s; the limits apply again",
                (double)(mono_ms() - l->outage_ms) / 1000.0);
        l->outage = 0;
    } else if (l->gen == 1) {
        srv_log("redis: connected; rate limits are shared through it");
    }
    op *o;
    while ((o = l->unsent.head)) {
        list_remove(&l->unsent, o);
        if (send_op(l, o) < 0)
            fail_op(o);
    }
    while ((o = l->backlog.head)) {
        list_remove(&l->backlog, o);
        if (send_op(l, o) < 0)
            op_free(o);
    }
    send_renewals(l);
    timer_in(l->renew, RENEW_MS);
}

static void on_setup_reply(redis_limiter *l, op *o, redisReply *reply)
{
    const char *cmd = o->argv[0];
    if (reply->type == REDIS_REPLY_ERROR) {
        char why[160];
        snprintf(why, sizeof why, "%s refused: %.100s", cmd, reply->str);
        lost(l, why, 1);
        return;
    }
    if (strcmp(cmd, "SCRIPT") == 0) {
        if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
            lost(l, "SCRIPT LOAD gave no SHA-1", 1);
            return;
        }
        memcpy(l->sha[o->script], reply->str, 40);
        l->sha[o->script][40] = '\0';
    }
    if (--l->setup_left == 0)
        became_up(l);
}

static int setup_cmd(redis_limiter *l, const char *a0, const char *a1, const char *a2,
                     int script)
{
    op *o = op_new(l, OP_SETUP);
    if (!o)
        return -1;
    o->script = script;
    if (arg(o, a0) || (a1 && arg(o, a1)) || (a2 && arg(o, a2)) || send_op(l, o) < 0) {
        op_free(o);
        return -1;
    }
    l->setup_left++;
    return 0;
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redis_limiter *l = cac->data;
    if (!l || cac != l->ac)
        return;
    if (status != REDIS_OK) {
        char why[160];
        snprintf(why, sizeof why, "connect: %.120s", cac->errstr);
        lost(l, why, 0); /* hiredis frees the context after this callback */
        return;
    }
    l->state = HANDSHAKE;
    l->setup_left = 0;
    const srv_redis_config *rc = l->rc;
    char db[24];
    snprintf(db, sizeof db, "%ld", rc->db);
    int bad = 0;
    if (rc->password)
        bad |= rc->user ? setup_cmd(l, "AUTH", rc->user, rc->password, -1)
                        : setup_cmd(l, "AUTH", rc->password, NULL, -1);
    if (rc->db)
        bad |= setup_cmd(l, "SELECT", db, NULL, -1);
    bad |= setup_cmd(l, "SCRIPT", "LOAD", srv_redis_admit_lua, ADMIT);
    bad |= setup_cmd(l, "SCRIPT", "LOAD", srv_redis_update_lua, UPDATE);
    bad |= setup_cmd(l, "SCRIPT", "LOAD", srv_redis_usage_lua, USAGE);
    if (bad)
        lost(l, "cannot send the handshake", 1);
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redis_limiter *l = cac->data;
    if (l && cac == l->ac)
        lost(l, cac->errstr[0] ? cac->errstr : "connection closed", 0);
}

static void connect_to(redis_limiter *l, const char *host)
{
    const srv_redis_config *rc = l->rc;
    redisAsyncContext *ac = rc->socket ? redisAsyncConnectUnix(rc->socket)
                                       : redisAsyncConnect(host, rc->port);
    if (!ac || ac->err) {
        char why[160];
        snprintf(why, sizeof why, "connect: %.120s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        lost(l, why, 0);
        return;
    }
    ac->data = l;
    l->ac = ac;
    l->state = CONNECTING;
    if (redisLibeventAttach(ac, l->ev) != REDIS_OK ||
        redisAsyncSetConnectCallback(ac, on_connect) != REDIS_OK ||
        redisAsyncSetDisconnectCallback(ac, on_disconnect) != REDIS_OK)
        lost(l, "cannot attach to the event loop", 1);
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    redis_limiter *l = arg;
    if (result == EVUTIL_EAI_CANCEL)
        return; /* given up (lost() or free): nothing of l is touched */
    l->dns_req = NULL;
    char host[NI_MAXHOST];
    if (result != 0 || !res ||
        getnameinfo(res->ai_addr, res->ai_addrlen, host, sizeof host, NULL, 0,
                    NI_NUMERICHOST) != 0) {
        char why[160];
        snprintf(why, sizeof why, "cannot resolve the host: %s",
                 result ? evutil_gai_strerror(result) : "no address");
        if (res)
            evutil_freeaddrinfo(res);
        lost(l, why, 0);
        return;
    }
    evutil_freeaddrinfo(res);
    connect_to(l, host);
}

static void start_connect(redis_limiter *l)
{
    const srv_redis_config *rc = l->rc;
    l->connect_deadline_ms = mono_ms() + rc->timeout_ms;
    unsigned char buf[16];
    if (rc->socket || inet_pton(AF_INET, rc->host, buf) == 1 ||
        inet_pton(AF_INET6, rc->host, buf) == 1) {
        connect_to(l, rc->host);
    } else {
        /* A name: resolved on the loop (getaddrinfo would block it). */
        if (!l->dns)
            l->dns = evdns_base_new(l->ev, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (!l->dns) {
            lost(l, "cannot start the DNS resolver", 0);
            return;
        }
        struct evutil_addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        l->state = RESOLVING;
        struct evdns_getaddrinfo_request *req =
            evdns_getaddrinfo(l->dns, rc->host, NULL, &hints, on_resolved, l);
        if (l->state == RESOLVING)
            l->dns_req = req; /* else answered already (hosts file, cache) */
    }
    arm_watchdog(l);
}

static void on_reconnect(evutil_socket_t fd, short what, void *arg)
{
    redis_limiter *l = arg;
    if (l->state == DOWN && !l->closing)
        start_connect(l);
}

static void schedule_reconnect(redis_limiter *l)
{
    timer_in(l->reconnect, l->backoff_ms);
    l->backoff_ms *= 2;
    if (l->backoff_ms > BACKOFF_MAX_MS)
        l->backoff_ms = BACKOFF_MAX_MS;
}

/* One timer for every deadline: the connect's, the oldest command's (the
 * replies come in order), each admit's that waits for the connection. */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    redis_limiter *l = arg;
    int64_t now = mono_ms();
    char why[96];
    if ((l->state == RESOLVING || l->state == CONNECTING) &&
        now >= l->connect_deadline_ms) {
        snprintf(why, sizeof why, "no connection within %ld ms", l->rc->timeout_ms);
        lost(l, why, 1);
        return;
    }
    if (l->sent.head && now >= l->sent.head->deadline_ms) {
        snprintf(why, sizeof why, "no reply within %ld ms", l->rc->timeout_ms);
        lost(l, why, 1);
        return;
    }
    op *o;
    while ((o = l->unsent.head) && now >= o->deadline_ms) {
        list_remove(&l->unsent, o);
        fail_op(o);
    }
    arm_watchdog(l);
}

static void arm_watchdog(redis_limiter *l)
{
    int64_t next = INT64_MAX;
    if (l->state == RESOLVING || l->state == CONNECTING)
        next = l->connect_deadline_ms;
    if (l->sent.head && l->sent.head->deadline_ms < next)
        next = l->sent.head->deadline_ms;
    if (l->unsent.head && l->unsent.head->deadline_ms < next)
        next = l->unsent.head->deadline_ms;
    if (next == INT64_MAX)
        evtimer_del(l->watchdog);
    else
        timer_in(l->watchdog, next - mono_ms());
}

/* ---- sending and replies ---- */

/* Hand o to hiredis on the live connection (setup ops during the
 * handshake). 0, or -1 when it cannot go (o is still the caller's). */
static int send_op(redis_limiter *l, op *o)
{
    if (!l->ac || (l->state != UP && o->kind != OP_SETUP))
        return -1;
    if (o->kind != OP_SETUP && !o->retried &&
        set_arg(o, 1, l->sha[o->script], strlen(l->sha[o->script])) < 0)
        return -1;
    if (o->kind == OP_ADMIT && !o->retried) {
        /* the holder field of this connection; places pending on it */
        char field[48];
        holder_field(l, l->gen, field, sizeof field);
        if (set_arg(o, 4 + o->ask->n, field, strlen(field)) < 0)
            return -1;
        o->gen = l->gen;
        for (int i = 0; i < o->ask->n; i++) {
            hold *h = o->ask->rule[i].streams > 0
                          ? hold_get(l, o->ask->rule[i].key, l->gen, 1)
                          : NULL;
            if (h)
                h->pending++;
        }
    }
    if (redisAsyncCommandArgv(l->ac, on_reply, o, o->argc, (const char **)o->argv,
                              o->len) != REDIS_OK) {
        unpend(o);
        return -1;
    }
    o->deadline_ms = mono_ms() + l->rc->timeout_ms;
    list_push(&l->sent, o);
    if (l->sent.head == o)
        arm_watchdog(l);
    return 0;
}

static const char *static_limit(const char *s)
{
    static const char *names[] = {"rpm", "tpm", "tpd", "streams"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0)
            return names[i];
    return NULL;
}

/* The admit script's reply: {1, held...} or {0, retry_s, rule, limit, value}. */
static int admit_reply(op *o, const redisReply *r)
{
    srv_limit_ask *ask = o->ask;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER)
        return -1;
    srv_limit_verdict v;
    memset(&v, 0, sizeof v);
    v.allowed = r->element[0]->integer == 1;
    if (v.allowed) {
        if (r->elements != (size_t)ask->n + 1)
            return -1;
    } else {
        if (r->elements != 5 || r->element[1]->type != REDIS_REPLY_INTEGER ||
            r->element[2]->type != REDIS_REPLY_INTEGER ||
            r->element[3]->type != REDIS_REPLY_STRING ||
            r->element[4]->type != REDIS_REPLY_INTEGER ||
            !(v.limit = static_limit(r->element[3]->str)) || r->element[2]->integer < 0 ||
            r->element[2]->integer >= ask->n)
            return -1;
        v.retry_after_s = (long)r->element[1]->integer;
        v.rule = (int)r->element[2]->integer;
        v.value = (long)r->element[4]->integer;
    }
    for (int i = 0; i < ask->n; i++) {
        srv_limit_rule *rule = &ask->rule[i];
        rule->held = 0;
        hold *h = rule->streams > 0 ? hold_get(o->l, rule->key, o->gen, 0) : NULL;
        if (h && h->pending > 0)
            h->pending--;
        if (v.allowed && r->element[i + 1]->type == REDIS_REPLY_INTEGER &&
            r->element[i + 1]->integer == 1 && h) {
            h->held++;
            rule->held = (int)o->gen; /* done() finds the connection's field */
        }
    }
    answer(o, &v);
    return 0;
}

/* The usage script's reply: {requests, tokens minute, tokens day, held}. */
static int usage_reply(op *o, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4)
        return -1;
    for (size_t i = 0; i < 4; i++)
        if (r->element[i]->type != REDIS_REPLY_INTEGER || r->element[i]->integer < 0)
            return -1;
    srv_limit_usage u = {
        .known = 1,
        .requests_minute = (long)r->element[0]->integer,
        .tokens_minute = (long)r->element[1]->integer,
        .tokens_day = (long)r->element[2]->integer,
        .streams = (long)r->element[3]->integer,
    };
    answer_usage(o, &u);
    return 0;
}

static void log_error_once(redis_limiter *l, const char *what)
{
    if (!l->error_logged) {
        l->error_logged = 1;
        srv_log("redis: a command failed: %.200s (logged once until one succeeds)", what);
    }
}

static void on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    op *o = privdata;
    redis_limiter *l = o->l;
    redisReply *reply = r;
    if (o->prev || o->next || l->sent.head == o)
        list_remove(&l->sent, o);
    if (!reply) {
        /* the connection is going: hiredis runs what waited with no reply */
        if (ac == l->ac)
            lost(l, ac->errstr[0] ? ac->errstr : "connection lost", 0);
        if (o->kind == OP_SETUP)
            op_free(o);
        else
            fail_op(o);
        arm_watchdog(l);
        return;
    }
    if (o->kind == OP_SETUP) {
        if (ac == l->ac)
            on_setup_reply(l, o, reply);
        op_free(o);
        arm_watchdog(l);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0 &&
        !o->retried && ac == l->ac) {
        /* Redis lost its script cache (SCRIPT FLUSH): once more in full,
         * which loads it again for the EVALSHAs that follow. */
        o->retried = 1;
        const char *text = o->script == ADMIT   ? srv_redis_admit_lua
                           : o->script == USAGE ? srv_redis_usage_lua
                                                : srv_redis_update_lua;
        if (set_arg(o, 0, "EVAL", 4) == 0 && set_arg(o, 1, text, strlen(text)) == 0 &&
            send_op(l, o) == 0) {
            arm_watchdog(l);
            return;
        }
    }
    int ok = 0;
    if (reply->type == REDIS_REPLY_ERROR)
        log_error_once(l, reply->str);
    else if (o->kind == OP_ADMIT)
        ok = admit_reply(o, reply) == 0;
    else if (o->kind == OP_USAGE)
        ok = usage_reply(o, reply) == 0;
    else
        ok = 1;
    if (ok)
        l->error_logged = 0;
    else if (reply->type != REDIS_REPLY_ERROR)
        log_error_once(l, "the script's reply has an unexpected shape");
    if (ok)
        op_free(o);
    else
        fail_op(o);
    arm_watchdog(l);
}

/* ---- the limiter's ops ---- */

/* Send an op that answers its caller (admit, usage) now, or queue it for
 * the connection on its way (bounded by the timeout). SRV_LIMIT_ANSWERED
 * when the send failed and the op was answered as a failure. */
static int submit(redis_limiter *l, op *o)
{
    if (l->state == UP) {
        if (send_op(l, o) < 0) {
            fail_op(o);
            return SRV_LIMIT_ANSWERED;
        }
    } else {
        /* the first connection is on its way: wait for it, bounded */
        o->deadline_ms = mono_ms() + l->rc->timeout_ms;
        list_push(&l->unsent, o);
        arm_watchdog(l);
    }
    return SRV_LIMIT_PENDING;
}

static int op_admit(srv_limiter *base, srv_limit_ask *ask, srv_limit_verdict_cb cb,
                    void *argp)
{
    redis_limiter *l = (redis_limiter *)base;
    op *o = op_new(l, OP_ADMIT);
    if (o) {
        o->ask = ask;
        o->cb = cb;
        o->arg = argp;
    }
    /* EVALSHA sha n keys... now holder lease (rpm tpm tpd streams)... */
    int bad = !o || script_head(o, ADMIT, ask->n);
    for (int i = 0; !bad && i < ask->n; i++)
        bad = key_arg(o, ask->rule[i].key);
    bad = bad || arg(o, "") || arg(o, "") || arg_long(o, LEASE_MS);
    for (int i = 0; !bad && i < ask->n; i++) {
        const srv_limit_rule *r = &ask->rule[i];
        bad = arg_long(o, r->rpm) || arg_long(o, r->tpm) || arg_long(o, r->tpd) ||
              arg_long(o, r->streams);
    }
    if (bad || l->outage || l->closing) {
        /* no connection to wait for: REDIS_FAILURE answers now */
        if (o) {
            answer_failure(o);
            op_free(o);
        } else {
            op tmp = {.l = l, .ask = ask, .cb = cb, .arg = argp};
            answer_failure(&tmp);
        }
        return SRV_LIMIT_ANSWERED;
    }
    return submit(l, o);
}

/* An update's keys and, per key, tokens or not and what to do with one
 * hold (limits_redis_lua.c); update_build lays them out as KEYS, ARGV. */
typedef struct update_parts {
    int n;
    const char *key[RENEW_BATCH];
    int tokens[RENEW_BATCH];
    char field[RENEW_BATCH][48];
    const char *hold_op[RENEW_BATCH];
    long count[RENEW_BATCH];
} update_parts;

static op *update_build(redis_limiter *l, const update_parts *p, long tokens)
{
    op *o = op_new(l, OP_UPDATE);
    int bad = !o || script_head(o, UPDATE, p->n);
    for (int i = 0; !bad && i < p->n; i++)
        bad = key_arg(o, p->key[i]);
    bad = bad || arg(o, "") || arg_long(o, LEASE_MS) || arg_long(o, tokens);
    for (int i = 0; !bad && i < p->n; i++)
        bad = arg(o, p->tokens[i] ? "1" : "0") || arg(o, p->field[i]) ||
              arg(o, p->hold_op[i]) || arg_long(o, p->count[i]);
    if (bad && o) {
        op_free(o);
        o = NULL;
    }
    return o;
}

static void send_or_keep(redis_limiter *l, op *o, int keep_if_down)
{
    if (!o)
        return;
    if (send_op(l, o) == 0)
        return;
    if (keep_if_down && !l->closing) {
        /* tokens of a reply that ended while Redis was away: counted when
         * it is back (at that time: later, never lost) */
        if (l->backlog.n >= BACKLOG_MAX) {
            op *old = l->backlog.head;
            list_remove(&l->backlog, old);
            op_free(old);
        }
        list_push(&l->backlog, o);
        return;
    }
    op_free(o);
}

static void op_done(srv_limiter *base, const srv_limit_ask *ask, long total_tokens)
{
    redis_limiter *l = (redis_limiter *)base;
    update_parts p;
    memset(&p, 0, sizeof p);
    int any_tokens = 0;
    for (int i = 0; i < ask->n; i++) {
        const srv_limit_rule *r = &ask->rule[i];
        int tokens = total_tokens > 0 && (r->tpm > 0 || r->tpd > 0);
        const char *hold_op = "";
        long count = 0;
        char field[48] = "";
        hold *h = r->held ? hold_get(l, r->key, (unsigned)r->held, 0) : NULL;
        if (h) {
            h->held--;
            holder_field(l, h->gen, field, sizeof field);
            if (l->state == UP && h->gen == l->gen) {
                hold_op = "dec"; /* Redis counts this connection's pending admits too */
                count = h->held + h->pending;
            } else {
                h->dirty = 1; /* an old connection's: its count is set */
                hold_op = l->state == UP ? "set" : "";
                count = h->held;
                if (l->state == UP)
                    h->dirty = 0;
            }
            if (!*hold_op)
                field[0] = '\0';
        }
        if (!tokens && !*field)
            continue;
        any_tokens |= tokens;
        p.key[p.n] = r->key;
        p.tokens[p.n] = tokens;
        snprintf(p.field[p.n], sizeof p.field[p.n], "%s", field);
        p.hold_op[p.n] = *field ? hold_op : "";
        p.count[p.n] = count;
        p.n++;
    }
    if (p.n > 0) {
        op *o = update_build(l, &p, total_tokens);
        if (l->state != UP && o) {
            /* only tokens are kept for later: the places are set by the
             * renewal once connected */
            op_free(o);
            o = NULL;
            if (any_tokens) {
                for (int i = 0; i < p.n; i++)
                    p.field[i][0] = '\0', p.hold_op[i] = "";
                o = update_build(l, &p, total_tokens);
            }
        }
        send_or_keep(l, o, any_tokens);
    }
    hold_drop_idle(l);
}

/* Every key this worker holds places on: renewed (this connection's
 * fields), or set to what is still in flight (older connections'). */
static void send_batch(redis_limiter *l, update_parts *p, hold **batch)
{
    op *o = update_build(l, p, 0);
    if (o && send_op(l, o) == 0) {
        for (int i = 0; i < p->n; i++)
            batch[i]->dirty = 0; /* set: nothing more to tell */
    } else if (o) {
        op_free(o);
    }
    p->n = 0;
}

static void send_renewals(redis_limiter *l)
{
    update_parts p;
    hold *batch[RENEW_BATCH];
    memset(&p, 0, sizeof p);
    for (hold *h = l->holds; h; h = h->next) {
        int current = h->gen == l->gen;
        if (current && h->held <= 0)
            continue; /* admits pending on it renew it themselves */
        batch[p.n] = h;
        p.key[p.n] = h->key;
        holder_field(l, h->gen, p.field[p.n], sizeof p.field[p.n]);
        p.hold_op[p.n] = current ? "keep" : "set";
        p.count[p.n] = h->held;
        if (++p.n == RENEW_BATCH)
            send_batch(l, &p, batch);
    }
    if (p.n > 0)
        send_batch(l, &p, batch);
    hold_drop_idle(l);
}

static void on_renew(evutil_socket_t fd, short what, void *arg)
{
    redis_limiter *l = arg;
    if (l->state != UP)
        return;
    send_renewals(l);
    timer_in(l->renew, RENEW_MS);
}

/* What `key` used (GET /v1/usage): one read of the usage script, answered
 * like an admit (now when Redis is away, else from the loop, bounded by the
 * same deadline); never known=1 without Redis's reply. */
static int op_usage(srv_limiter *base, const char *key, srv_limit_usage_cb cb, void *argp)
{
    redis_limiter *l = (redis_limiter *)base;
    op *o = op_new(l, OP_USAGE);
    if (o) {
        o->ucb = cb;
        o->arg = argp;
    }
    /* EVALSHA sha 1 key now */
    int bad = !o || script_head(o, USAGE, 1) || key_arg(o, key) || arg(o, "");
    if (bad || l->outage || l->closing) {
        if (o) {
            answer_usage_unknown(o);
            op_free(o);
        } else {
            srv_limit_usage u;
            memset(&u, 0, sizeof u);
            cb(argp, &u);
        }
        return SRV_LIMIT_ANSWERED;
    }
    return submit(l, o);
}

static const srv_limiter_ops redis_ops = {op_admit, op_done, op_usage};

srv_limiter *srv_limits_redis_new(struct event_base *base, const srv_redis_config *rc)
{
    redis_limiter *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->base.ops = &redis_ops;
    l->rc = rc;
    l->ev = base;
    l->backoff_ms = BACKOFF_MIN_MS;
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        uint64_t x = (uint64_t)getpid() << 32 ^ (uint64_t)mono_ms();
        memcpy(rnd, &x, sizeof rnd);
    }
    for (int i = 0; i < 8; i++)
        snprintf(l->id + 2 * i, 3, "%02x", rnd[i]);
    l->watchdog = evtimer_new(base, on_watchdog, l);
    l->reconnect = evtimer_new(base, on_reconnect, l);
    l->renew = evtimer_new(base, on_renew, l);
    if (!l->watchdog || !l->reconnect || !l->renew) {
        srv_limits_redis_free(&l->base);
        return NULL;
    }
    start_connect(l);
    return &l->base;
}

void srv_limits_redis_free(srv_limiter *base)
{
    redis_limiter *l = (redis_limiter *)base;
    if (!l)
        return;
    l->closing = 1;
    if (l->ac || l->dns_req || l->unsent.head)
        lost(l, "server stopping", 1);
    while (l->backlog.head) {
        op *o = l->backlog.head;
        list_remove(&l->backlog, o);
        op_free(o);
    }
    if (l->dns)
        evdns_base_free(l->dns, 1);
    if (l->watchdog)
        event_free(l->watchdog);
    if (l->reconnect)
        event_free(l->reconnect);
    if (l->renew)
        event_free(l->renew);
    while (l->holds) {
        hold *h = l->holds;
        l->holds = h->next;
        free(h);
    }
    free(l);
}
