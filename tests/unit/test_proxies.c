/*
 * test_proxies.c - TRUSTED_PROXIES parsing and the client address behind a
 * proxy (src/server/proxies.c, #included: the unit tests link only the
 * library). The end-to-end view, through the access log, is
 * tests/e2e/test_config_checks.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../src/server/proxies.c"

static srv_proxies *parse_ok(const char *spec)
{
    char err[256] = "";
    srv_proxies *p = (srv_proxies *)1;
    assert_int_equal(srv_proxies_parse(spec, &p, err, sizeof err), 0);
    assert_string_equal(err, "");
    return p;
}

static void parse_fails(const char *spec, const char *entry)
{
    char err[256] = "";
    srv_proxies *p = NULL;
    assert_int_equal(srv_proxies_parse(spec, &p, err, sizeof err), -1);
    assert_null(p);
    char quoted[128];
    snprintf(quoted, sizeof quoted, "TRUSTED_PROXIES entry \"%s\"", entry);
    if (!strstr(err, quoted))
        fail_msg("\"%s\": message \"%s\" does not name \"%s\"", spec, err, entry);
}

static struct sockaddr_storage peer(const char *text, int port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
    } else {
        assert_int_equal(inet_pton(AF_INET6, text, &v6->sin6_addr), 1);
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
    }
    return ss;
}

/* The address srv_proxies_client_addr gives; "peer:TEXT" when it returned 0. */
static const char *client(const srv_proxies *p, const char *from, const char *xff,
                          const char *real_ip)
{
    static char out[128];
    char addr[SRV_PROXIES_ADDR_MAX];
    struct sockaddr_storage ss = peer(from, 40000);
    int rc = srv_proxies_client_addr(p, (struct sockaddr *)&ss, xff, real_ip, addr,
                                     sizeof addr);
    assert_true(rc == 0 || rc == 1);
    snprintf(out, sizeof out, "%s%s", rc ? "" : "peer:", addr);
    return out;
}

static void empty_list_trusts_nobody(void **state)
{
    assert_null(parse_ok(NULL));
    assert_null(parse_ok(""));
    assert_null(parse_ok(" ,\t, "));
    assert_string_equal(client(NULL, "127.0.0.1", "203.0.113.7", "203.0.113.8"),
                        "peer:127.0.0.1");
}

static void bad_entries_named(void **state)
{
    parse_fails("10.0.0.0/33", "10.0.0.0/33");
    parse_fails("127.0.0.1, fd00::/129", "fd00::/129");
    parse_fails("10.0.0.0/", "10.0.0.0/");
    parse_fails("10.0.0.0/-1", "10.0.0.0/-1");
    parse_fails("10.0.0.0/8x", "10.0.0.0/8x");
    parse_fails("10.0.0/8", "10.0.0/8");
    parse_fails("localhost", "localhost");
    parse_fails("[::1]", "[::1]");
    parse_fails("1.2.3.4:80", "1.2.3.4:80");
    parse_fails("::ffff:10.0.0.0/95", "::ffff:10.0.0.0/95");
}

static void cidr_matching(void **state)
{
    srv_proxies *p = parse_ok("10.1.2.3/8 192.168.1.10,fd00::/8, ::ffff:172.16.0.0/108");
    assert_int_equal(p->n, 4);
    struct {
        const char *addr;
        int trusted;
    } cases[] = {
        {"10.0.0.1", 1},     {"10.255.255.255", 1},  {"11.0.0.1", 0},
        {"192.168.1.10", 1}, {"192.168.1.11", 0},    {"fd12::1", 1},
        {"fe80::1", 0},      {"::ffff:10.9.9.9", 1}, /* a dual-stack peer */
        {"172.16.5.5", 1},   {"172.32.0.1", 0},      {"::1", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_storage ss = peer(cases[i].addr, 1);
        if (srv_proxies_trusts(p, (struct sockaddr *)&ss) != cases[i].trusted)
            fail_msg("%s: trusted should be %d", cases[i].addr, cases[i].trusted);
    }
    srv_proxies_free(p);
    p = parse_ok("0.0.0.0/0");
    struct sockaddr_storage any = peer("8.8.8.8", 1), v6 = peer("2001:db8::1", 1);
    assert_true(srv_proxies_trusts(p, (struct sockaddr *)&any));
    assert_false(srv_proxies_trusts(p, (struct sockaddr *)&v6));
    srv_proxies_free(p);
}

static void forwarded_walk(void **state)
{
    srv_proxies *p = parse_ok("127.0.0.1/32, 10.0.0.0/8, ::1");
    /* untrusted peer: headers are the client's word, ignored */
    assert_string_equal(client(p, "198.51.100.1", "203.0.113.7", NULL),
                        "peer:198.51.100.1");
    assert_string_equal(client(p, "127.0.0.1", NULL, NULL), "peer:127.0.0.1");
    assert_string_equal(client(p, "127.0.0.1", "203.0.113.7", NULL), "203.0.113.7");
    assert_string_equal(client(p, "::1", "203.0.113.7", NULL), "203.0.113.7");
    assert_string_equal(client(p, "::ffff:127.0.0.1", "203.0.113.7", NULL),
                        "203.0.113.7");
    /* spoofed leftmost, trusted hops on the right */
    assert_string_equal(client(p, "127.0.0.1", "1.1.1.1, 203.0.113.7, 10.0.0.2", NULL),
                        "203.0.113.7");
    assert_string_equal(client(p, "127.0.0.1", " 10.0.0.3 ,, 10.0.0.2 ,", NULL),
                        "10.0.0.3");
    /* garbage on the walk: the whole header is ignored */
    assert_string_equal(client(p, "127.0.0.1", "203.0.113.7, unknown", NULL),
                        "peer:127.0.0.1");
    assert_string_equal(client(p, "127.0.0.1", "203.0.113.7 10.0.0.2", NULL),
                        "peer:127.0.0.1");
    assert_string_equal(client(p, "127.0.0.1", "1.2.3.4\" 200", NULL), "peer:127.0.0.1");
    /* garbage left of the client is never looked at (nginx does the same) */
    assert_string_equal(client(p, "127.0.0.1", "junk, 203.0.113.7", NULL), "203.0.113.7");
    /* port and bracket forms; canonical output */
    assert_string_equal(client(p, "127.0.0.1", "203.0.113.9:5555", NULL), "203.0.113.9");
    assert_string_equal(client(p, "127.0.0.1", "[2001:DB8::0:2]:443", NULL),
                        "2001:db8::2");
    assert_string_equal(client(p, "127.0.0.1", "[2001:db8::2", NULL), "peer:127.0.0.1");
    assert_string_equal(client(p, "127.0.0.1", "203.0.113.9:", NULL), "peer:127.0.0.1");
    assert_string_equal(client(p, "127.0.0.1", "::ffff:203.0.113.4", NULL),
                        "203.0.113.4");
    srv_proxies_free(p);
}

static void real_ip_only_without_forwarded_for(void **state)
{
    srv_proxies *p = parse_ok("127.0.0.1");
    assert_string_equal(client(p, "127.0.0.1", NULL, " 203.0.113.8 "), "203.0.113.8");
    assert_string_equal(client(p, "127.0.0.1", " , ", "203.0.113.8"), "203.0.113.8");
    assert_string_equal(client(p, "127.0.0.1", "203.0.113.10", "203.0.113.8"),
                        "203.0.113.10");
    assert_string_equal(client(p, "127.0.0.1", NULL, "203.0.113.8,203.0.113.9"),
                        "peer:127.0.0.1");
    assert_string_equal(client(p, "127.0.0.1", NULL, "nope"), "peer:127.0.0.1");
    srv_proxies_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_list_trusts_nobody),
        cmocka_unit_test(bad_entries_named),
        cmocka_unit_test(cidr_matching),
        cmocka_unit_test(forwarded_walk),
        cmocka_unit_test(real_ip_only_without_forwarded_for),
    };
    return cmocka_run_group_tests_name("proxies", tests, NULL, NULL);
}
