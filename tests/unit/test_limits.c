/*
 * test_limits.c - the shared-memory rate limiter (src/server/ratelimit.c and
 * shm.c, #included: the unit tests link only the library) with an injected
 * clock: the window arithmetic, Retry-After as the true wait, tokens counted
 * at the reply's end, places in flight, several rules admitted together or
 * not at all, a bounded table that forgets idle keys first, and the robust
 * lock taken over from a process that died holding it. The end-to-end view
 * (two workers, the upstream never called) is tests/e2e/test_limits.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../src/server/ratelimit.c"
#include "../../src/server/shm.c"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* On a quarter hour (so on a second): slot boundaries are plain to see. */
#define T0 ((int64_t)1200 * 900 * 1000)
#define MIN_MS 60000
#define DAY_MS (24LL * 3600 * 1000)

typedef struct fixture {
    srv_shm shm;
    srv_limits_shm *t;
} fixture;

static fixture *make(size_t keys, int workers)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(srv_shm_map(&f->shm, srv_limits_shm_size(keys, workers)), 0);
    f->t = srv_limits_shm_init(srv_shm_carve(&f->shm, srv_limits_shm_size(keys, workers)),
                               keys, workers, 12345);
    assert_non_null(f->t);
    return f;
}

static void unmake(fixture *f)
{
    srv_shm_unmap(&f->shm);
    free(f);
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

static srv_limit_verdict admit(fixture *f, srv_limit_ask *a, int64_t now)
{
    srv_limit_verdict v;
    srv_limits_shm_admit_at(f->t, 0, a, now, &v);
    return v;
}

/* 20 requests in a burst, rpm=10: exactly the first 10 run. */
static void test_rpm_burst_exact(void **state)
{
    fixture *f = make(1024, 2);
    srv_limit_ask a = ask1("ip:10.0.0.1", 10, 0, 0, 0);
    int ok = 0;
    for (int i = 0; i < 20; i++) {
        srv_limit_verdict v = admit(f, &a, T0 + i * 10);
        if (v.allowed) {
            assert_int_equal(ok, i); /* never one after a refusal */
            ok++;
        } else {
            assert_string_equal(v.limit, "rpm");
            assert_int_equal(v.value, 10);
            assert_int_equal(v.rule, 0);
            /* the burst's slot (second T0) leaves at T0 + 60 s */
            assert_int_equal(v.retry_after_s, 60);
        }
    }
    assert_int_equal(ok, 10);
    unmake(f);
}

/* Retry-After is when a place frees, rounded up; then exactly it frees. */
static void test_retry_after_is_the_true_wait(void **state)
{
    fixture *f = make(1024, 1);
    srv_limit_ask a = ask1("ip:10.0.0.2", 10, 0, 0, 0);
    for (int i = 0; i < 10; i++)
        assert_true(admit(f, &a, T0 + 900).allowed);
    srv_limit_verdict v = admit(f, &a, T0 + 30500);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_s, 30); /* 29.5 s */
    v = admit(f, &a, T0 + MIN_MS - 1);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_s, 1);
    /* at T0 + 60 s the ten leave the window together: ten more, not eleven */
    for (int i = 0; i < 10; i++)
        assert_true(admit(f, &a, T0 + MIN_MS).allowed);
    v = admit(f, &a, T0 + MIN_MS);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_s, 60);
    unmake(f);
}

/* The window slides: what left it frees its places, nothing else does. */
static void test_window_slides(void **state)
{
    fixture *f = make(1024, 1);
    srv_limit_ask a = ask1("ip:10.0.0.3", 10, 0, 0, 0);
    for (int i = 0; i < 5; i++)
        assert_true(admit(f, &a, T0).allowed);
    for (int i = 0; i < 5; i++)
        assert_true(admit(f, &a, T0 + 30000).allowed);
    srv_limit_verdict v = admit(f, &a, T0 + 45000);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_s, 15); /* the first five leave at 60 s */
    for (int i = 0; i < 5; i++)
        assert_true(admit(f, &a, T0 + MIN_MS).allowed);
    v = admit(f, &a, T0 + MIN_MS);
    assert_false(v.allowed);
    assert_int_equal(v.retry_after_s, 30); /* the second five leave at 90 s */
    /* a refused request counted for nothing: still free at 90 s */
    for (int i = 0; i < 5; i++)
        assert_true(admit(f, &a, T0 + 90000).allowed);
    unmake(f);
}

/* tpm: admitted while the tokens counted are below it; tokens count when
 * the reply ends (done), the request that crosses it ran. */
static void test_tpm_counts_tokens_at_the_end(void **state)
{
    fixture *f = make(1024, 1);
    srv_limit_ask a = ask1("ip:10.0.0.4", 0, 100, 0, 0);
    assert_true(srv_limit_ask_needs_done(&a, 60));
    assert_false(srv_limit_ask_needs_done(&a, -1)); /* usage unknown */
    /* in flight, nothing known yet: both run */
    assert_true(admit(f, &a, T0).allowed);
    assert_true(admit(f, &a, T0 + 10).allowed);
    srv_limits_shm_done_at(f->t, 0, &a, 60, T0 + 2000);
    assert_true(admit(f, &a, T0 + 2500).allowed); /* 60 < 100 */
    srv_limits_shm_done_at(f->t, 0, &a, 60, T0 + 5000);
    srv_limit_verdict v = admit(f, &a, T0 + 5500); /* 120 >= 100 */
    assert_false(v.allowed);
    assert_string_equal(v.limit, "tpm");
    /* the 60 of second T0+2 leave at T0+62 s: 60 < 100 again */
    assert_int_equal(v.retry_after_s, 57); /* 56.5 s */
    assert_false(admit(f, &a, T0 + 62000 - 1).allowed);
    assert_true(admit(f, &a, T0 + 62000).allowed);
    unmake(f);
}

/* Exactly at the limit is over it: tpm = 10 replies' tokens admits 10. */
static void test_tpm_sequential_exact(void **state)
{
    fixture *f = make(1024, 1);
    srv_limit_ask a = ask1("ip:10.0.0.5", 0, 170, 0, 0);
    int ok = 0;
    for (int i = 0; i < 20; i++) {
        int64_t now = T0 + i * 100;
        if (admit(f, &a, now).allowed) {
            ok++;
            srv_limits_shm_done_at(f->t, 0, &a, 17, now + 50);
        }
    }
    assert_int_equal(ok, 10);
    unmake(f);
}

/* tpd: a day in quarter-hour slots. */
static void test_tpd_day_window(void **state)
{
    fixture *f = make(1024, 1);
    srv_limit_ask a = ask1("tok:alice", 0, 0, 1000, 0);
    int64_t t = T0 + 10 * 60 * 1000; /* 10 min into a quarter hour */
    assert_true(admit(f, &a, t).allowed);
    srv_limits_shm_done_at(f->t, 0, &a, 1000, t);
    srv_limit_verdict v = admit(f, &a, t + 23 * 3600 * 1000LL);
    assert_false(v.allowed);
    assert_string_equal(v.limit, "tpd");
    /* its slot (the quarter hour from T0) leaves at T0 + 24 h; 1 h - 10 min left */
    assert_int_equal(v.retry_after_s, 50 * 60);
    assert_false(admit(f, &a, T0 + DAY_MS - 1).allowed);
    assert_true(admit(f, &a, T0 + DAY_MS).allowed);
    unmake(f);
}

/* streams: places held until done, per worker slot. */
static void test_streams_in_flight(void **state)
{
    fixture *f = make(1024, 2);
    srv_limit_ask a = ask1("tok:bob", 0, 0, 0, 2), b = a, c = a;
    assert_true(admit(f, &a, T0).allowed);
    assert_true(a.rule[0].held);
    srv_limit_verdict v;
    srv_limits_shm_admit_at(f->t, 1, &b, T0, &v); /* another worker */
    assert_true(v.allowed);
    v = admit(f, &c, T0);
    assert_false(v.allowed);
    assert_string_equal(v.limit, "streams");
    assert_int_equal(v.retry_after_s, 1);
    assert_false(c.rule[0].held);
    srv_limits_shm_done_at(f->t, 0, &a, -1, T0 + 100);
    assert_true(admit(f, &c, T0 + 200).allowed);
    /* worker 1 died: its slot's places are given back when it restarts */
    assert_false(admit(f, &a, T0 + 300).allowed);
    srv_limits_shm_release_slot(f->t, 1);
    assert_true(admit(f, &a, T0 + 400).allowed);
    unmake(f);
}

/* All rules admit or none counts: a refusal by the token's limit leaves
 * the address's count alone. */
static void test_rules_all_or_nothing(void **state)
{
    fixture *f = make(1024, 1);
    srv_limit_ask both;
    memset(&both, 0, sizeof both);
    both.n = 2;
    snprintf(both.rule[0].key, sizeof both.rule[0].key, "ip:10.0.0.6");
    both.rule[0].rpm = 3;
    snprintf(both.rule[1].key, sizeof both.rule[1].key, "tok:carol");
    both.rule[1].rpm = 1;
    assert_true(admit(f, &both, T0).allowed);
    for (int i = 0; i < 5; i++) {
        srv_limit_verdict v = admit(f, &both, T0 + 100);
        assert_false(v.allowed);
        assert_int_equal(v.rule, 1);
    }
    srv_limit_ask ip = ask1("ip:10.0.0.6", 3, 0, 0, 0);
    assert_true(admit(f, &ip, T0 + 200).allowed);
    assert_true(admit(f, &ip, T0 + 200).allowed);
    assert_false(admit(f, &ip, T0 + 200).allowed);
    unmake(f);
}

/* Many more clients than keys: memory stays the table's; idle keys are
 * reused without loss, and only active ones dropped count as evictions. */
static void test_table_bounded_idle_first(void **state)
{
    fixture *f = make(8, 1); /* one set: every key competes for its 8 ways */
    char key[64];
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "ip:10.1.0.%d", i);
        srv_limit_ask a = ask1(key, 1, 0, 0, 0);
        assert_true(admit(f, &a, T0).allowed);
    }
    srv_limits_stats st;
    srv_limits_shm_stats(f->t, &st);
    assert_int_equal(st.capacity, 8);
    assert_int_equal(st.keys, 8);
    /* a minute later they are idle: new clients take their places freely */
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "ip:10.2.0.%d", i);
        srv_limit_ask a = ask1(key, 1, 0, 0, 0);
        assert_true(admit(f, &a, T0 + MIN_MS).allowed);
    }
    srv_limits_shm_stats(f->t, &st);
    assert_int_equal(st.evicted, 0);
    /* 10000 active clients at once: all served, the table never grows */
    for (int i = 0; i < 10000; i++) {
        snprintf(key, sizeof key, "ip:10.3.%d.%d", i / 256, i % 256);
        srv_limit_ask a = ask1(key, 1, 0, 0, 0);
        assert_true(admit(f, &a, T0 + MIN_MS + 1).allowed);
    }
    srv_limits_shm_stats(f->t, &st);
    assert_int_equal(st.keys, 8);
    assert_int_equal(st.evicted, 10000 - 8 + 8); /* the 8 of a minute ago too */
    unmake(f);
}

/* One set of 8: the least recently used active key is the one dropped. */
static void test_lru_drops_the_oldest(void **state)
{
    fixture *f = make(8, 1);
    char key[64];
    for (int i = 0; i < 8; i++) {
        snprintf(key, sizeof key, "ip:10.4.0.%d", i);
        srv_limit_ask a = ask1(key, 1, 0, 0, 0);
        assert_true(admit(f, &a, T0 + i).allowed);
    }
    srv_limit_ask x = ask1("ip:10.4.1.1", 1, 0, 0, 0);
    assert_true(admit(f, &x, T0 + 100).allowed);
    srv_limits_stats st;
    srv_limits_shm_stats(f->t, &st);
    assert_int_equal(st.evicted, 1);
    srv_limit_ask k1 = ask1("ip:10.4.0.1", 1, 0, 0, 0);
    assert_false(admit(f, &k1, T0 + 200).allowed); /* still counted */
    srv_limit_ask k0 = ask1("ip:10.4.0.0", 1, 0, 0, 0);
    assert_true(admit(f, &k0, T0 + 300).allowed); /* forgotten: the oldest */
    unmake(f);
}

/* A process killed while holding the lock wedges nobody: the next one
 * takes it over and repairs what it left half written. */
static void test_lock_survives_a_dead_holder(void **state)
{
    fixture *f = make(1024, 2);
    srv_limit_ask a = ask1("ip:10.0.0.7", 10, 0, 0, 0);
    assert_true(admit(f, &a, T0).allowed);
    alarm(30); /* a plain mutex would wait for ever below: fail instead */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        srv_shm_lock(&f->t->lock);
        entry *e = find(f->t, "ip:10.0.0.7", T0, 0, NULL, 0);
        if (e)
            e->req.total = 1000; /* a slot's total cut mid-update */
        _exit(e ? 0 : 3);        /* dies holding the lock */
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    /* 1 counted, not 1000: 9 more run, the 11th waits */
    for (int i = 0; i < 9; i++)
        assert_true(admit(f, &a, T0 + 100).allowed);
    assert_false(admit(f, &a, T0 + 100).allowed);
    srv_limits_stats s;
    srv_limits_shm_stats(f->t, &s);
    assert_int_equal(s.recovered, 1);
    alarm(0);
    unmake(f);
}

static void test_ip_keys(void **state)
{
    char k[SRV_LIMIT_KEY_MAX];
    assert_int_equal(srv_limits_ip_key("192.0.2.7", k, sizeof k), 0);
    assert_string_equal(k, "ip:192.0.2.7");
    /* IPv6: the /64 one host or customer gets */
    assert_int_equal(srv_limits_ip_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", k, sizeof k),
                     0);
    assert_string_equal(k, "ip:2001:db8:1:2::/64");
    assert_int_equal(srv_limits_ip_key("2001:db8:1:2::1", k, sizeof k), 0);
    assert_string_equal(k, "ip:2001:db8:1:2::/64");
    assert_int_equal(srv_limits_ip_key("::1", k, sizeof k), 0);
    assert_string_equal(k, "ip:::/64");
    assert_int_equal(srv_limits_ip_key("-", k, sizeof k), -1);
    assert_int_equal(srv_limits_ip_key("10.0.0.1:80", k, sizeof k), -1);
    /* the last address's key is kept: the same answers again, cut as
     * snprintf cuts */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(srv_limits_ip_key("192.0.2.7", k, sizeof k), 0);
        assert_string_equal(k, "ip:192.0.2.7");
    }
    char small[8];
    assert_int_equal(srv_limits_ip_key("192.0.2.7", small, sizeof small), 0);
    assert_string_equal(small, "ip:192.");
    assert_int_equal(srv_limits_ip_key("192.0.2.77", k, sizeof k), 0);
    assert_string_equal(k, "ip:192.0.2.77");
    assert_int_equal(srv_limits_ip_key("-", k, sizeof k), -1);
}

/* No limit set: nothing to lock at the end. */
static void test_done_only_when_needed(void **state)
{
    srv_limit_ask a = ask1("ip:10.0.0.8", 10, 0, 0, 0);
    assert_false(srv_limit_ask_needs_done(&a, 500));
    a.rule[0].held = 1;
    assert_true(srv_limit_ask_needs_done(&a, -1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rpm_burst_exact),
        cmocka_unit_test(test_retry_after_is_the_true_wait),
        cmocka_unit_test(test_window_slides),
        cmocka_unit_test(test_tpm_counts_tokens_at_the_end),
        cmocka_unit_test(test_tpm_sequential_exact),
        cmocka_unit_test(test_tpd_day_window),
        cmocka_unit_test(test_streams_in_flight),
        cmocka_unit_test(test_rules_all_or_nothing),
        cmocka_unit_test(test_table_bounded_idle_first),
        cmocka_unit_test(test_lru_drops_the_oldest),
        cmocka_unit_test(test_lock_survives_a_dead_holder),
        cmocka_unit_test(test_ip_keys),
        cmocka_unit_test(test_done_only_when_needed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
