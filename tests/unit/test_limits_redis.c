/*
 * test_limits_redis.c - the Redis limiter's Lua scripts (limits_redis_lua.c,
 * #included) run by a real redis-server this test starts on a unix socket in
 * a temporary directory, with an injected clock (the scripts' ARGV[1]):
 *   - the same verdicts as the shared-memory limiter (ratelimit.c, the
 *     reference) over a long random sequence of admits and ends: allowed or
 *     not, which limit, which rule, the same Retry-After;
 *   - the window edges, TTLs that let idle keys expire, several rules
 *     counted together or not at all;
 *   - the usage script (GET /v1/usage) reports what the shared-memory
 *     limiter reports, at every step of that random run, and changes
 *     nothing it reads;
 *   - held places: a holder that stops renewing (a dead instance) frees its
 *     places when its lease ends; renewal keeps them; "set" corrects them.
 * The connection handling (timeouts, outages, reconnects) is tested end to
 * end: tests/e2e/test_limits_redis.py. Skipped when redis-server is not
 * installed (scripts/install-deps.sh --tests installs it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../src/server/limits_redis_lua.c"
#include "../../src/server/ratelimit.c"
#include "../../src/server/shm.c"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define T0 ((int64_t)1800000 * 900 * 1000) /* on a quarter hour */
#define MIN_MS 60000
#define LEASE 30000

static pid_t server_pid;
static char dir[64], sock[96], log_path[96];
static redisContext *rc;

static int have_redis_server(void)
{
    return system("command -v redis-server >/dev/null 2>&1") == 0;
}

static int start_redis(void **state)
{
    if (!have_redis_server())
        return 0; /* each test skips */
    snprintf(dir, sizeof dir, "/tmp/zju-redis-unit-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(sock, sizeof sock, "%s/redis.sock", dir);
    snprintf(log_path, sizeof log_path, "%s/redis.log", dir);
    server_pid = fork();
    if (server_pid == 0) {
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock,
               "--save", "", "--appendonly", "no", "--dir", dir, "--logfile", log_path,
               (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && !rc; i++) {
        redisContext *c = redisConnectUnix(sock);
        if (c && !c->err)
            rc = c;
        else {
            if (c)
                redisFree(c);
            usleep(20000);
        }
    }
    return rc ? 0 : -1;
}

static int stop_redis(void **state)
{
    if (rc)
        redisFree(rc);
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
    }
    if (*dir) {
        unlink(sock);
        unlink(log_path);
        rmdir(dir);
    }
    return 0;
}

static void need_redis(void)
{
    if (!rc) {
        print_message("redis-server not installed: skipped\n");
        skip();
    }
}

static void flush(void)
{
    redisReply *r = redisCommand(rc, "FLUSHALL");
    assert_non_null(r);
    freeReplyObject(r);
}

/* ---- the scripts, called as limits_redis.c calls them ---- */

typedef struct argv {
    int n;
    char *v[64];
    size_t len[64];
} argv;

static void add(argv *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    assert_true(vasprintf(&a->v[a->n], fmt, ap) >= 0);
    va_end(ap);
    a->len[a->n] = strlen(a->v[a->n]);
    a->n++;
}

static redisReply *run(argv *a)
{
    redisReply *r = redisCommandArgv(rc, a->n, (const char **)a->v, a->len);
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR)
        fail_msg("script error: %s", r->str);
    return r;
}

/* admit as holder `holder`, keys prefixed "t:" */
static srv_limit_verdict redis_admit(srv_limit_ask *ask, int64_t now, const char *holder,
                                     long lease)
{
    argv a = {0};
    add(&a, "EVAL");
    add(&a, "%s", srv_redis_admit_lua);
    add(&a, "%d", ask->n);
    for (int i = 0; i < ask->n; i++)
        add(&a, "t:%s", ask->rule[i].key);
    add(&a, "%lld", (long long)now);
    add(&a, "h%s", holder);
    add(&a, "%ld", lease);
    for (int i = 0; i < ask->n; i++) {
        srv_limit_rule *r = &ask->rule[i];
        add(&a, "%ld", r->rpm);
        add(&a, "%ld", r->tpm);
        add(&a, "%ld", r->tpd);
        add(&a, "%ld", r->streams);
    }
    redisReply *r = run(&a);
    srv_limit_verdict v;
    memset(&v, 0, sizeof v);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    v.allowed = r->element[0]->integer == 1;
    if (v.allowed) {
        assert_int_equal(r->elements, ask->n + 1);
        for (int i = 0; i < ask->n; i++)
            ask->rule[i].held = (int)r->element[i + 1]->integer;
    } else {
        assert_int_equal(r->elements, 5);
        v.retry_after_s = (long)r->element[1]->integer;
        v.rule = (int)r->element[2]->integer;
        v.limit = strcmp(r->element[3]->str, "rpm") == 0   ? "rpm"
                  : strcmp(r->element[3]->str, "tpm") == 0 ? "tpm"
                  : strcmp(r->element[3]->str, "tpd") == 0 ? "tpd"
                                                           : "streams";
        v.value = (long)r->element[4]->integer;
    }
    freeReplyObject(r);
    return v;
}

/* one key's update: tokens (0: none), hold op ("" none) with count */
static void redis_update(const char *key, int64_t now, long tokens, const char *holder,
                         const char *op, long count, long lease)
{
    argv a = {0};
    add(&a, "EVAL");
    add(&a, "%s", srv_redis_update_lua);
    add(&a, "1");
    add(&a, "t:%s", key);
    add(&a, "%lld", (long long)now);
    add(&a, "%ld", lease);
    add(&a, "%ld", tokens);
    add(&a, "%s", tokens > 0 ? "1" : "0");
    add(&a, "%s", *op ? holder : "");
    add(&a, "%s", op);
    add(&a, "%ld", count);
    freeReplyObject(run(&a));
}

/* what limits_redis.c's done sends for one ended request */
static void redis_done(srv_limit_ask *ask, long tokens, int64_t now, const char *holder)
{
    char field[64];
    snprintf(field, sizeof field, "h%s", holder);
    for (int i = 0; i < ask->n; i++) {
        srv_limit_rule *r = &ask->rule[i];
        int tok = tokens > 0 && (r->tpm > 0 || r->tpd > 0);
        if (tok || r->held)
            redis_update(r->key, now, tok ? tokens : 0, field, r->held ? "dec" : "", -1,
                         LEASE);
    }
}

/* the usage script on one key: what limits_redis.c's usage op parses */
static srv_limit_usage redis_usage(const char *key, int64_t now)
{
    argv a = {0};
    add(&a, "EVAL");
    add(&a, "%s", srv_redis_usage_lua);
    add(&a, "1");
    add(&a, "t:%s", key);
    add(&a, "%lld", (long long)now);
    redisReply *r = run(&a);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(r->element[i]->type, REDIS_REPLY_INTEGER);
    srv_limit_usage u = {1, (long)r->element[0]->integer, (long)r->element[1]->integer,
                         (long)r->element[2]->integer, (long)r->element[3]->integer};
    freeReplyObject(r);
    return u;
}

static long long pttl(const char *key)
{
    redisReply *r = redisCommand(rc, "PTTL t:%s", key);
    assert_non_null(r);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

static srv_limit_ask ask1(const char *key, long rpm, long tpm, long tpd, long streams)
{
    srv_limit_ask a;
    memset(&a, 0, sizeof a);
    a.n = 1;
    snprintf(a.rule[0].key, sizeof a.rule[0].key, "%s", key);
    a.rule[0].rpm = rpm;
    a.rule[0].tpm = tpm;
    a.rule[0].tpd = tpd;
    a.rule[0].streams = streams;
    return a;
}

/* ---- tests ---- */

/* A random run: every verdict the same as the shared-memory limiter's. */
static void test_same_verdicts_as_shared_memory(void **state)
{
    need_redis();
    flush();
    srv_shm shm;
    size_t size = srv_limits_shm_size(64, 1);
    assert_int_equal(srv_shm_map(&shm, size), 0);
    srv_limits_shm *t = srv_limits_shm_init(srv_shm_carve(&shm, size), 64, 1, 7);
    assert_non_null(t);
    srand(12345);
    const char *keys[] = {"ip:10.0.0.1", "tok:alice", "tok:bob"};
    struct inflight {
        srv_limit_ask shm_ask, redis_ask;
        int64_t ends;
        long tokens;
    } fl[64];
    int nfl = 0, allowed = 0, refused = 0, usage_nonzero = 0;
    int64_t now = T0;
    for (int step = 0; step < 3000; step++) {
        /* mostly small steps, sometimes minutes, rarely hours */
        int dice = rand() % 100;
        now += dice < 80 ? rand() % 700 : dice < 98 ? rand() % 40000 : rand() % 7200000;
        /* requests whose end has come end first, as the server would */
        for (int i = 0; i < nfl;) {
            if (fl[i].ends <= now) {
                srv_limits_shm_done_at(t, 0, &fl[i].shm_ask, fl[i].tokens, fl[i].ends);
                redis_done(&fl[i].redis_ask, fl[i].tokens, fl[i].ends, "A");
                fl[i] = fl[--nfl];
            } else {
                i++;
            }
        }
        srv_limit_ask a;
        memset(&a, 0, sizeof a);
        a.n = 1 + rand() % 2;
        int k0 = rand() % 3;
        for (int i = 0; i < a.n; i++) {
            srv_limit_rule *r = &a.rule[i];
            snprintf(r->key, sizeof r->key, "%s", keys[(k0 + i) % 3]);
            /* the same limits for a key all along, as a configuration */
            int k = (k0 + i) % 3;
            r->rpm = k == 0 ? 8 : k == 1 ? 0 : 5;
            r->tpm = k == 0 ? 0 : k == 1 ? 300 : 100;
            r->tpd = k == 1 ? 3000 : 0;
            r->streams = k == 2 ? 2 : 0;
        }
        /* what every key used, as GET /v1/usage asks it: the same */
        for (int k = 0; k < 3; k++) {
            srv_limit_usage us, ur = redis_usage(keys[k], now);
            srv_limits_shm_usage_at(t, keys[k], now, &us);
            if (us.requests_minute != ur.requests_minute ||
                us.tokens_minute != ur.tokens_minute || us.tokens_day != ur.tokens_day ||
                us.streams != ur.streams)
                fail_msg("step %d %s: usage shm %ld/%ld/%ld/%ld, redis %ld/%ld/%ld/%ld",
                         step, keys[k], us.requests_minute, us.tokens_minute,
                         us.tokens_day, us.streams, ur.requests_minute, ur.tokens_minute,
                         ur.tokens_day, ur.streams);
            if (us.requests_minute || us.tokens_day || us.streams)
                usage_nonzero++;
        }
        srv_limit_ask b = a;
        srv_limit_verdict vs, vr;
        srv_limits_shm_admit_at(t, 0, &a, now, &vs);
        vr = redis_admit(&b, now, "A", 1000LL * 3600 * 24 * 30);
        if (vs.allowed != vr.allowed ||
            (!vs.allowed &&
             (vs.retry_after_s != vr.retry_after_s || strcmp(vs.limit, vr.limit) != 0 ||
              vs.rule != vr.rule || vs.value != vr.value)))
            fail_msg(
                "step %d at +%lld ms: shm %s %s %ld s rule %d, redis %s %s %ld s rule %d",
                step, (long long)(now - T0), vs.allowed ? "allowed" : "refused",
                vs.limit ? vs.limit : "-", vs.retry_after_s, vs.rule,
                vr.allowed ? "allowed" : "refused", vr.limit ? vr.limit : "-",
                vr.retry_after_s, vr.rule);
        for (int i = 0; i < a.n; i++)
            assert_int_equal(!!a.rule[i].held, !!b.rule[i].held);
        if (vs.allowed) {
            allowed++;
            if (nfl < 64) {
                fl[nfl].shm_ask = a;
                fl[nfl].redis_ask = b;
                fl[nfl].ends = now + rand() % 20000;
                fl[nfl].tokens = rand() % 10 == 0 ? -1 : rand() % 80;
                nfl++;
            } else {
                srv_limits_shm_done_at(t, 0, &a, 10, now);
                redis_done(&b, 10, now, "A");
            }
        } else {
            refused++;
        }
    }
    print_message("3000 steps: %d allowed, %d refused, all verdicts equal; "
                  "usage equal on 3 keys each step (%d reports not zero)\n",
                  allowed, refused, usage_nonzero);
    assert_true(allowed > 300 && refused > 300); /* both sides were exercised */
    assert_true(usage_nonzero > 3000);
    srv_shm_unmap(&shm);
}

/* The window's edges and Retry-After as the true wait. */
static void test_window_edges(void **state)
{
    need_redis();
    flush();
    srv_limit_ask a = ask1("ip:10.9.0.1", 10, 0, 0, 0);
    for (int i = 0; i < 10; i++)
        assert_true(redis_admit(&a, T0 + 900, "A", LEASE).allowed);
    srv_limit_verdict v = redis_admit(&a, T0 + 30500, "A", LEASE);
    assert_false(v.allowed);
    assert_string_equal(v.limit, "rpm");
    assert_int_equal(v.retry_after_s, 30);
    v = redis_admit(&a, T0 + MIN_MS - 1, "A", LEASE);
    assert_int_equal(v.retry_after_s, 1);
    for (int i = 0; i < 10; i++)
        assert_true(redis_admit(&a, T0 + MIN_MS, "A", LEASE).allowed);
    assert_false(redis_admit(&a, T0 + MIN_MS, "A", LEASE).allowed);
}

/* Idle keys expire: the TTL is when the last thing counted leaves. */
static void test_ttl_follows_the_window(void **state)
{
    need_redis();
    flush();
    srv_limit_ask a = ask1("ip:10.9.0.2", 10, 100, 0, 0);
    assert_true(redis_admit(&a, T0 + 250, "A", LEASE).allowed);
    long long ttl = pttl(a.rule[0].key);
    /* the request's slot (second T0) leaves at T0 + 60 s: 59.75 s from now */
    assert_true(ttl > 59000 && ttl <= 59750);
    /* tokens count on the day too: kept a day (its quarter + 96) */
    redis_update(a.rule[0].key, T0 + 1000, 40, "", "", 0, LEASE);
    ttl = pttl(a.rule[0].key);
    assert_true(ttl > 24LL * 3600 * 1000 - 2000 && ttl <= 24LL * 3600 * 1000);
    /* a refused request leaves it be; nothing left at all: the key goes */
    flush();
    assert_true(redis_admit(&a, T0, "A", LEASE).allowed);
    assert_true(
        redis_admit(&a, T0 + 2 * MIN_MS, "A", LEASE).allowed); /* drops second T0 */
    redisReply *r = redisCommand(rc, "HLEN t:%s", a.rule[0].key);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
}

/* Two rules: both count, or neither does. */
static void test_rules_together_or_not_at_all(void **state)
{
    need_redis();
    flush();
    srv_limit_ask ip = ask1("ip:10.9.0.3", 100, 0, 0, 0);
    srv_limit_ask both = ip;
    both.n = 2;
    snprintf(both.rule[1].key, sizeof both.rule[1].key, "tok:carol");
    both.rule[1].rpm = 2;
    assert_true(redis_admit(&both, T0, "A", LEASE).allowed);
    assert_true(redis_admit(&both, T0, "A", LEASE).allowed);
    srv_limit_verdict v = redis_admit(&both, T0 + 5000, "A", LEASE);
    assert_false(v.allowed);
    assert_int_equal(v.rule, 1);
    assert_string_equal(v.limit, "rpm");
    assert_int_equal(v.value, 2);
    assert_int_equal(v.retry_after_s, 55);
    /* the refused one did not count on the address: 98 more fit there */
    for (int i = 0; i < 98; i++)
        assert_true(redis_admit(&ip, T0 + 6000, "A", LEASE).allowed);
    assert_false(redis_admit(&ip, T0 + 6000, "A", LEASE).allowed);
}

/* A holder that stops renewing (it died) frees its places at its lease's
 * end; one that renews keeps them; "set" makes them what is in flight. */
static void test_holds_lease_renew_set(void **state)
{
    need_redis();
    flush();
    srv_limit_ask a = ask1("tok:dave", 0, 0, 0, 2);
    assert_true(redis_admit(&a, T0, "A.1", LEASE).allowed);
    assert_int_equal(a.rule[0].held, 1);
    assert_true(redis_admit(&a, T0, "B.1", LEASE).allowed);
    srv_limit_verdict v = redis_admit(&a, T0 + 1000, "B.1", LEASE);
    assert_false(v.allowed);
    assert_string_equal(v.limit, "streams");
    assert_int_equal(v.retry_after_s, 1);
    /* B renews at +20 s, A does not (dead): at +30 s one place is free */
    redis_update("tok:dave", T0 + 20000, 0, "hB.1", "keep", 1, LEASE);
    assert_false(redis_admit(&a, T0 + LEASE - 1, "C.1", LEASE).allowed);
    assert_true(redis_admit(&a, T0 + LEASE + 1, "C.1", LEASE).allowed);
    assert_false(redis_admit(&a, T0 + LEASE + 2, "C.1", LEASE).allowed);
    /* B's stream ends: "dec" gives its place back */
    redis_update("tok:dave", T0 + LEASE + 3, 0, "hB.1", "dec", -1, LEASE);
    assert_true(redis_admit(&a, T0 + LEASE + 4, "C.1", LEASE).allowed);
    /* C's count is set to what really runs (one, not two) */
    redis_update("tok:dave", T0 + LEASE + 5, 0, "hC.1", "set", 1, LEASE);
    assert_true(redis_admit(&a, T0 + LEASE + 6, "D.1", LEASE).allowed);
    assert_false(redis_admit(&a, T0 + LEASE + 7, "D.1", LEASE).allowed);
    /* set to 0: deleted; keep restores a field Redis lost */
    redis_update("tok:dave", T0 + LEASE + 8, 0, "hC.1", "set", 0, LEASE);
    redisReply *r = redisCommand(rc, "HEXISTS t:tok:dave hC.1");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    redis_update("tok:dave", T0 + LEASE + 9, 0, "hE.1", "keep", 3, LEASE);
    r = redisCommand(rc, "HGET t:tok:dave hE.1");
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_true(strncmp(r->str, "3:", 2) == 0);
    freeReplyObject(r);
    /* "dec" with count 0 (the holder has nothing left there): deleted */
    redis_update("tok:dave", T0 + LEASE + 10, 0, "hE.1", "dec", 0, LEASE);
    r = redisCommand(rc, "HEXISTS t:tok:dave hE.1");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
}

/* tpm admits while below: the request that crosses it ran. */
static void test_tpm_sequential_exact(void **state)
{
    need_redis();
    flush();
    srv_limit_ask a = ask1("ip:10.9.0.5", 0, 170, 0, 0);
    int ok = 0;
    for (int i = 0; i < 20; i++) {
        int64_t now = T0 + i * 100;
        if (redis_admit(&a, now, "A", LEASE).allowed) {
            ok++;
            redis_done(&a, 17, now + 50, "A");
        }
    }
    assert_int_equal(ok, 10);
}

/* A usage report reads: stale slots and expired holds are skipped, not
 * deleted, and nothing is counted (the same report twice; the hash, its
 * fields and TTL as they were). */
static void test_usage_reads_only(void **state)
{
    need_redis();
    flush();
    srv_limit_ask a = ask1("tok:erin", 10, 1000, 5000, 3);
    assert_true(redis_admit(&a, T0, "A.1", LEASE).allowed);
    redis_update("tok:erin", T0 + 10, 40, "", "", 0, LEASE);
    assert_true(
        redis_admit(&a, T0 + 20000, "B.1", 100000).allowed); /* B's lease longer */
    redis_update("tok:erin", T0 + 20010, 7, "", "", 0, LEASE);
    srv_limit_usage u = redis_usage("tok:erin", T0 + 20020);
    assert_int_equal(u.requests_minute, 2);
    assert_int_equal(u.tokens_minute, 47);
    assert_int_equal(u.tokens_day, 47);
    assert_int_equal(u.streams, 2);
    /* at +61 s the first second left the minute, A's lease (30 s) ran out */
    u = redis_usage("tok:erin", T0 + MIN_MS + 1000);
    assert_int_equal(u.requests_minute, 1);
    assert_int_equal(u.tokens_minute, 7);
    assert_int_equal(u.tokens_day, 47);
    assert_int_equal(u.streams, 1);
    /* still there, not deleted: r and t of two seconds, d, the two holds */
    redisReply *r = redisCommand(rc, "HLEN t:tok:erin");
    assert_int_equal(r->integer, 7);
    freeReplyObject(r);
    long long ttl = pttl("tok:erin");
    u = redis_usage("tok:erin", T0 + MIN_MS + 1000);
    assert_int_equal(u.requests_minute, 1); /* the report counted nothing */
    r = redisCommand(rc, "HLEN t:tok:erin");
    assert_int_equal(r->integer, 7);
    freeReplyObject(r);
    assert_true(pttl("tok:erin") <= ttl);
    /* a key nobody used: zeros */
    u = redis_usage("tok:nobody", T0);
    assert_int_equal(u.requests_minute + u.tokens_minute + u.tokens_day + u.streams, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_verdicts_as_shared_memory),
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_ttl_follows_the_window),
        cmocka_unit_test(test_rules_together_or_not_at_all),
        cmocka_unit_test(test_holds_lease_renew_set),
        cmocka_unit_test(test_tpm_sequential_exact),
        cmocka_unit_test(test_usage_reads_only),
    };
    return cmocka_run_group_tests(tests, start_redis, stop_redis);
}
