/*
 * test_tokens.c - the access tokens file (src/server/tokens.c, #included:
 * the unit tests link only the library): every refusal with its line
 * number and without the token in it, plain and hashed tokens, comments,
 * the lookup, the Authorization header, and a table that outlives a reload
 * while a request still holds it. The end-to-end view is
 * tests/e2e/test_tokens.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <unistd.h>

#include "../../src/server/tokens.c"

#define ALICE "alice-token-0123456789abcdef"
#define BOB "bob-token-abcdefghijklmnop"
/* 64 hex digits (no one's digest) */
#define SOME_HEX "ebf9b1df5f53f8e3c2a4e0f7d3e0a70e2b6fd33a1b3bf4e3f6c79f7a1c1e2e0d"

static void hex_of(const char *token, char out[65])
{
    unsigned char d[32];
    assert_int_equal(sha256(token, strlen(token), d), 0);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static srv_tokens *parse_ok(const char *text)
{
    char err[512] = "";
    srv_tokens *t = NULL;
    int rc = srv_tokens_parse(text, strlen(text), "tokens.conf", &t, err, sizeof err);
    if (rc != 0)
        fail_msg("refused: %s", err);
    assert_non_null(t);
    return t;
}

/* Refused with "tokens.conf:LINE: <...want...>", never quoting a token. */
static void parse_fails(const char *text, int line, const char *want)
{
    char err[512] = "";
    srv_tokens *t = (srv_tokens *)1;
    assert_int_equal(
        srv_tokens_parse(text, strlen(text), "tokens.conf", &t, err, sizeof err), -1);
    assert_ptr_equal(t, (srv_tokens *)1); /* untouched */
    char prefix[64];
    snprintf(prefix, sizeof prefix, "tokens.conf:%d: ", line);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, want))
        fail_msg("for %s\n  got \"%s\"\n  want \"%s...%s\"", text, err, prefix, want);
    const char *secrets[] = {ALICE, BOB, "alice-token", "short-tok", "sk-abc"};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
        if (strstr(err, secrets[i]))
            fail_msg("message quotes a token: %s", err);
}

static void plain_hashed_and_comments(void **state)
{
    char bob_hex[65];
    hex_of(BOB, bob_hex);
    char text[1024];
    snprintf(text, sizeof text,
             "# the team's tokens\n"
             "\n"
             "   # indented comment\n" ALICE " name=alice models=deepseek-v3-671b,bge-m3 "
             "rpm=60 tpm=100000 tpd=2000000 streams=2  # trailing comment\r\n"
             "sha256:%s\tname=bob.ci_1\n"
             "sha256:%s name=carol models=m#1 # '#' inside a value is not a comment\n",
             bob_hex, "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef");
    srv_tokens *t = parse_ok(text);
    assert_int_equal(srv_tokens_count(t), 3);

    const srv_token *a = srv_tokens_find(t, ALICE, strlen(ALICE));
    assert_non_null(a);
    assert_string_equal(a->name, "alice");
    assert_int_equal(a->line, 4);
    assert_int_equal(a->rpm, 60);
    assert_int_equal(a->tpm, 100000);
    assert_int_equal(a->tpd, 2000000);
    assert_int_equal(a->streams, 2);
    assert_int_equal(a->n_models, 2);
    assert_true(srv_token_allows_model(a, "deepseek-v3-671b"));
    assert_true(srv_token_allows_model(a, "bge-m3"));
    assert_false(srv_token_allows_model(a, "deepseek-r1-671b"));
    assert_false(srv_token_allows_model(a, "bge-m"));
    assert_false(srv_token_allows_model(a, "bge-m3x"));

    const srv_token *b = srv_tokens_find(t, BOB, strlen(BOB));
    assert_non_null(b);
    assert_string_equal(b->name, "bob.ci_1");
    assert_int_equal(b->line, 5);
    assert_null(b->models); /* no models=: any model */
    assert_true(srv_token_allows_model(b, "anything"));
    assert_int_equal(b->rpm + b->tpm + b->tpd + b->streams, 0); /* no limits */

    const srv_token *c = srv_tokens_at(t, 2);
    assert_string_equal(c->name, "carol");
    assert_int_equal(c->n_models, 1);
    assert_string_equal(c->models[0], "m#1");
    assert_int_equal(c->digest[0], 0x01);
    assert_int_equal(c->digest[4], 0x89);
    assert_int_equal(c->digest[31], 0xef);

    /* not found: unknown, a prefix, an extension, the digest itself */
    assert_null(srv_tokens_find(t, "alice-token-0123456789abcdeX", strlen(ALICE)));
    assert_null(srv_tokens_find(t, ALICE, strlen(ALICE) - 1));
    assert_null(srv_tokens_find(t, ALICE "0", strlen(ALICE) + 1));
    assert_null(srv_tokens_find(t, bob_hex, 64));
    assert_null(srv_tokens_find(t, "", 0));
    assert_null(srv_tokens_find(NULL, ALICE, strlen(ALICE)));
    srv_tokens_unref(t);
}

static void only_digests_are_kept(void **state)
{
    srv_tokens *t = parse_ok(ALICE " name=alice\n");
    char want[65], got[65];
    hex_of(ALICE, want);
    for (int i = 0; i < 32; i++)
        snprintf(got + 2 * i, 3, "%02x", t->e[0].digest[i]);
    assert_string_equal(got, want);
    /* nothing in the table's memory holds the token's text */
    assert_null(memmem(t->e, t->n * sizeof *t->e, ALICE, strlen(ALICE)));
    srv_tokens_unref(t);
}

static void empty_file_is_no_tokens(void **state)
{
    srv_tokens *t = parse_ok("");
    assert_int_equal(srv_tokens_count(t), 0);
    assert_null(srv_tokens_find(t, ALICE, strlen(ALICE)));
    srv_tokens_unref(t);
    t = parse_ok("# nobody yet\n\n");
    assert_int_equal(srv_tokens_count(t), 0);
    srv_tokens_unref(t);
    t = parse_ok(ALICE " name=a"); /* no final newline */
    assert_int_equal(srv_tokens_count(t), 1);
    srv_tokens_unref(t);
}

static void every_refusal_names_its_line(void **state)
{
    const char *ok = ALICE " name=alice\n";
    char text[1024];
    static const struct {
        const char *line; /* the second line of the file, after `ok` */
        const char *want;
    } cases[] = {
        {"name=bob rpm=3", "no token: the line starts with a key=value"},
        {"sk-abc$%def-0123456789 name=bob", "may hold only A-Z a-z"},
        {"short-tok name=bob", "shorter than 16 characters"},
        {"sha256:abcd name=bob", "64 hex digits"},
        {"sha256:" SOME_HEX "0 name=bob", "64 hex digits"},
        {"sha256:zz3456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef name=b",
         "64 hex digits"},
        {BOB, "name= is missing"},
        {BOB " rpm=5", "name= is missing"},
        {BOB " name=", "name= wants 1 to 64"},
        {BOB " name=bob smith", "expected key=value"},
        {BOB " name=b\xc3\xb6"
             "b",
         "name= wants 1 to 64"},
        {BOB " name=b/ob", "name= wants 1 to 64"},
        {BOB " name=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "name= wants 1 to 64"},
        {BOB " name=alice", "name \"alice\" is already used on line 1"},
        {ALICE " name=bob", "the same token as line 1"},
        {BOB " name=bob name=bobby", "name= given twice"},
        {BOB " name=bob model=x", "unknown setting"},
        {BOB " name=bob =x", "expected key=value"},
        {BOB " name=bob " BOB, "expected key=value"},
        {BOB " name=bob models=", "models= has an empty entry"},
        {BOB " name=bob models=a,,b", "models= has an empty entry"},
        {BOB " name=bob models=a,", "models= has an empty entry"},
        {BOB " name=bob models=caf\xc3\xa9", "printable ASCII"},
        {BOB " name=bob rpm=0", "rpm= wants a positive integer"},
        {BOB " name=bob tpm=-5", "tpm= wants a positive integer"},
        {BOB " name=bob tpd=1e6", "tpd= wants a positive integer"},
        {BOB " name=bob streams=", "streams= wants a positive integer"},
        {BOB " name=bob streams=99999999999999999999999", "streams= wants a positive"},
        {BOB " name=bob rpm=+5", "rpm= wants a positive integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(text, sizeof text, "%s%s\n", ok, cases[i].line);
        parse_fails(text, 2, cases[i].want);
    }
    /* the line number counts comments and blank lines */
    parse_fails("# header\n\n" ALICE " name=a\n\n# x\nname=b\n", 6, "no token");
    /* the plain token and its digest are the same token */
    char hex[65];
    hex_of(ALICE, hex);
    snprintf(text, sizeof text, "%s\n# again, hashed\nsha256:%s name=other\n", ok, hex);
    parse_fails(text, 4, "the same token as line 1");
    /* a model name longer than the access record keeps */
    char long_model[200];
    memset(long_model, 'm', 127);
    long_model[127] = '\0';
    snprintf(text, sizeof text, "%s " BOB " name=bob models=ok,%s\n", ok, long_model);
    parse_fails(text, 2, "longer than 126");
    /* a NUL byte */
    const char nul[] = ALICE " name=a\n" BOB " name=b\0c\n";
    char err[256];
    srv_tokens *t = NULL;
    assert_int_equal(srv_tokens_parse(nul, sizeof nul - 1, "f", &t, err, sizeof err), -1);
    assert_string_equal(err, "f:2: a NUL byte");
}

static void long_model_names(void **state)
{
    char text[512], model[127];
    memset(model, 'm', 126);
    model[126] = '\0';
    snprintf(text, sizeof text, ALICE " name=a models=%s\n", model);
    srv_tokens *t = parse_ok(text);
    assert_true(srv_token_allows_model(srv_tokens_at(t, 0), model));
    srv_tokens_unref(t);
}

static void load_from_a_file(void **state)
{
    char path[] = "/tmp/test_tokens_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "# ok\n" ALICE " name=alice\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    char err[512];
    srv_tokens *t = NULL;
    assert_int_equal(srv_tokens_load(path, &t, err, sizeof err), 0);
    assert_int_equal(srv_tokens_count(t), 1);
    srv_tokens_unref(t);

    FILE *f = fopen(path, "a");
    fputs("oops\n", f);
    fclose(f);
    t = NULL;
    assert_int_equal(srv_tokens_load(path, &t, err, sizeof err), -1);
    char want[128];
    snprintf(want, sizeof want, "%s:3: ", path);
    assert_memory_equal(err, want, strlen(want));
    assert_null(t);
    unlink(path);

    assert_int_equal(srv_tokens_load(path, &t, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    assert_string_equal(err, want);
}

/* A request keeps the entry it was identified with across a reload: the
 * old table lives until its last holder lets go. (ASan would report a use
 * after free, or the table leaked, here.) */
static void reload_keeps_the_table_of_requests_in_flight(void **state)
{
    srv_tokens *current = parse_ok(ALICE " name=alice models=a\n");
    /* a request identifies: takes the entry and a reference */
    srv_tokens *held = srv_tokens_ref(current);
    const srv_token *id = srv_tokens_find(held, ALICE, strlen(ALICE));
    assert_non_null(id);
    assert_int_equal(current->refs, 2);

    /* reload: alice removed, bob added; the worker swaps its table */
    srv_tokens *fresh = parse_ok(BOB " name=bob\n");
    srv_tokens_unref(current);
    current = fresh;
    assert_null(srv_tokens_find(current, ALICE, strlen(ALICE)));
    assert_non_null(srv_tokens_find(current, BOB, strlen(BOB)));

    /* the request in flight still has its entry, whole */
    assert_string_equal(id->name, "alice");
    assert_true(srv_token_allows_model(id, "a"));
    assert_false(srv_token_allows_model(id, "b"));
    assert_int_equal(held->refs, 1);
    srv_tokens_unref(held); /* the request ends: the old table goes */
    srv_tokens_unref(current);
    srv_tokens_unref(NULL);
    assert_null(srv_tokens_ref(NULL));
}

static void bearer_header(void **state)
{
    const char *tok = NULL;
    size_t len = 0;
    assert_int_equal(srv_tokens_bearer(NULL, &tok, &len), 0);
    assert_int_equal(srv_tokens_bearer("Bearer " ALICE, &tok, &len), 1);
    assert_int_equal(len, strlen(ALICE));
    assert_memory_equal(tok, ALICE, len);
    assert_int_equal(srv_tokens_bearer("  bearer   abc+/==  ", &tok, &len), 1);
    assert_int_equal(len, 7);
    assert_memory_equal(tok, "abc+/==", 7);
    assert_int_equal(srv_tokens_bearer("BEARER x", &tok, &len), 1);
    const char *bad[] = {"",
                         "Bearer",
                         "Bearer ",
                         "Bearer\t" ALICE,
                         "Basic YWxpY2U6cHc=",
                         "Bearer a b",
                         "Bearer ab=c",
                         "Bearer " ALICE ","
                         "Bearer " BOB, /* two headers, joined */
                         "Bearer " ALICE ",",
                         "Bearer =abc",
                         "Bearer" ALICE,
                         "Bearer a\"b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (srv_tokens_bearer(bad[i], &tok, &len) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_hashed_and_comments),
        cmocka_unit_test(only_digests_are_kept),
        cmocka_unit_test(empty_file_is_no_tokens),
        cmocka_unit_test(every_refusal_names_its_line),
        cmocka_unit_test(long_model_names),
        cmocka_unit_test(load_from_a_file),
        cmocka_unit_test(reload_keeps_the_table_of_requests_in_flight),
        cmocka_unit_test(bearer_header),
    };
    return cmocka_run_group_tests_name("tokens", tests, NULL, NULL);
}
