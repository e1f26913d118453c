/*
 * test_sse.c - the incremental SSE parser against fixture streams.
 *
 * Each case is a pair of files in tests/fixtures/sse/ (or $ZJU_FIXTURES/sse/):
 *   NAME.in   raw stream bytes, exactly as a server would send them;
 *   NAME.out  what a client must see, one line each:
 *               "# text"                 a comment saying what the case checks
 *               "% caps LINE EVENT"      parser caps (default: 0 0, the defaults)
 *               "% stop K VALUE"         the callback returns VALUE on event K (1-based)
 *               "% result N"             the first non-zero feed result (default 0)
 *               "% comments N"           comment lines counted at the end (default 0)
 *               "TYPE<TAB>DATA"          one dispatched event, in order; both escaped
 *                                        with \n \r \t \\ \0 \xHH
 * Every stream is fed in one piece, in two feeds at every split point, byte by
 * byte, in random small pieces, and once more to a parser that was reset after
 * eating unrelated bytes; all must give the same events, result and counter.
 * A split lands inside CRLF pairs, BOMs and UTF-8 sequences this way, which
 * is exactly where incremental parsers go wrong.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

/* Cases in the order they run; every_fixture_is_listed keeps this table and
 * the directory in step, so a fixture cannot be silently skipped. */
#define CASES(X)                                                                         \
    X(data_space)                                                                        \
    X(data_no_space)                                                                     \
    X(data_two_spaces)                                                                   \
    X(data_tab)                                                                          \
    X(colon_in_value)                                                                    \
    X(lf)                                                                                \
    X(crlf)                                                                              \
    X(cr)                                                                                \
    X(mixed_line_ends)                                                                   \
    X(crlf_is_one_line_end)                                                              \
    X(cr_then_lf_then_lf)                                                                \
    X(multiline)                                                                         \
    X(trailing_empty_data_line)                                                          \
    X(comments)                                                                          \
    X(fields)                                                                            \
    X(event_last_wins)                                                                   \
    X(event_without_data)                                                                \
    X(field_case_and_space)                                                              \
    X(field_no_colon)                                                                    \
    X(empty_data_line)                                                                   \
    X(blank_lines_only)                                                                  \
    X(bom)                                                                               \
    X(bom_only_first)                                                                    \
    X(bom_partial)                                                                       \
    X(bom_inside_data)                                                                   \
    X(utf8_payload)                                                                      \
    X(chat_stream)                                                                       \
    X(unfinished_event)                                                                  \
    X(unfinished_after_line_end)                                                         \
    X(nul_bytes)                                                                         \
    X(line_cap_exact)                                                                    \
    X(line_cap_over)                                                                     \
    X(line_cap_over_unterminated)                                                        \
    X(event_cap_exact)                                                                   \
    X(event_cap_over)                                                                    \
    X(event_cap_over_single)                                                             \
    X(callback_stop)                                                                     \
    X(done_then_more)                                                                    \
    X(spec_example_empty_data)                                                           \
    X(empty_stream)

#define AS_NAME(n) #n,
static const char *const case_names[] = {CASES(AS_NAME)};
#define N_CASES (sizeof case_names / sizeof case_names[0])

/* ---------------------------------------------------------------- */
/* fixture files                                                    */
/* ---------------------------------------------------------------- */

static void fixture_path(char *out, size_t size, const char *name, const char *ext)
{
    const char *root = getenv("ZJU_FIXTURES");
    snprintf(out, size, "%s/sse/%s%s", root && *root ? root : "tests/fixtures", name,
             ext);
}

/* New buffer with the whole file (NUL-terminated for convenience); fails
 * the test when the file cannot be read. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s (run from the repository root or set ZJU_FIXTURES)",
                 path);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* ---------------------------------------------------------------- */
/* expected and observed outcomes                                   */
/* ---------------------------------------------------------------- */

typedef struct {
    char *type;
    size_t type_len;
    char *data;
    size_t data_len;
} event;

typedef struct {
    event *ev;
    size_t n, cap;
    int result;
    size_t comments;
} outcome;

typedef struct {
    size_t max_line, max_event;
    size_t stop_at; /* 0: never stop */
    int stop_value;
    outcome want;
} expectation;

static void outcome_add(outcome *o, const char *type, size_t type_len, const char *data,
                        size_t data_len)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 8;
        o->ev = realloc(o->ev, o->cap * sizeof *o->ev);
        assert_non_null(o->ev);
    }
    event *e = &o->ev[o->n++];
    e->type = malloc(type_len + 1);
    e->data = malloc(data_len + 1);
    assert_non_null(e->type);
    assert_non_null(e->data);
    memcpy(e->type, type, type_len);
    memcpy(e->data, data, data_len);
    e->type_len = type_len;
    e->data_len = data_len;
}

static void outcome_free(outcome *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->ev[i].type);
        free(o->ev[i].data);
    }
    free(o->ev);
    memset(o, 0, sizeof *o);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    fail_msg("bad hex digit '%c' in a .out file", c);
    return 0;
}

/* Decodes the escaped form of s[0..n) into out (which has room for n);
 * returns the decoded length. */
static size_t unescape(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            out[o++] = s[i];
            continue;
        }
        assert_true(i + 1 < n);
        char c = s[++i];
        switch (c) {
        case 'n':
            out[o++] = '\n';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case '0':
            out[o++] = '\0';
            break;
        case '\\':
            out[o++] = '\\';
            break;
        case 'x':
            assert_true(i + 2 < n);
            out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
            break;
        default:
            fail_msg("bad escape \\%c in a .out file", c);
        }
    }
    return o;
}

static void load_expectation(const char *name, expectation *x)
{
    char path[512];
    size_t len;
    fixture_path(path, sizeof path, name, ".out");
    char *text = slurp(path, &len);
    memset(x, 0, sizeof *x);
    char *tmp_type = malloc(len + 1), *tmp_data = malloc(len + 1);
    assert_non_null(tmp_type);
    assert_non_null(tmp_data);
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        unsigned long a, b;
        long v;
        if (line[0] == '#' || line[0] == '\0') {
            /* comment */
        } else if (sscanf(line, "%% caps %lu %lu", &a, &b) == 2) {
            x->max_line = a;
            x->max_event = b;
        } else if (sscanf(line, "%% stop %lu %ld", &a, &v) == 2) {
            x->stop_at = a;
            x->stop_value = (int)v;
        } else if (sscanf(line, "%% result %ld", &v) == 1) {
            x->want.result = (int)v;
        } else if (sscanf(line, "%% comments %lu", &a) == 1) {
            x->want.comments = a;
        } else if (line[0] == '%') {
            fail_msg("%s: unknown directive: %s", path, line);
        } else {
            char *tab = strchr(line, '\t');
            if (!tab)
                fail_msg("%s: event line without TAB: %s", path, line);
            size_t tl = unescape(line, (size_t)(tab - line), tmp_type);
            size_t dl = unescape(tab + 1, strlen(tab + 1), tmp_data);
            outcome_add(&x->want, tmp_type, tl, tmp_data, dl);
        }
        line = nl ? nl + 1 : line + strlen(line);
    }
    free(tmp_type);
    free(tmp_data);
    free(text);
}

/* ---------------------------------------------------------------- */
/* running a stream through the parser                              */
/* ---------------------------------------------------------------- */

typedef struct {
    const expectation *x;
    outcome got;
} run_state;

static int record(void *userdata, const char *type, const char *data, size_t data_len)
{
    run_state *rs = userdata;
    assert_non_null(type);
    assert_non_null(data);
    /* The contract: data is NUL-terminated past its length, and the callback
     * may write inside it (the transport redacts in place). */
    assert_int_equal(data[data_len], '\0');
    if (data_len)
        ((char *)data)[0] ^= 0;
    outcome_add(&rs->got, type, strlen(type), data, data_len);
    if (rs->x->stop_at && rs->got.n == rs->x->stop_at)
        return rs->x->stop_value;
    return 0;
}

/* Feeds one piece; once the parser failed or stopped, further pieces are
 * skipped (as a caller would), but one extra feed checks the result sticks. */
static void feed(zjuchat__sse *p, run_state *rs, const char *buf, size_t len)
{
    if (rs->got.result)
        return;
    int r = zjuchat__sse_feed(p, buf, len);
    if (r) {
        rs->got.result = r;
        size_t before = rs->got.n;
        assert_int_equal(zjuchat__sse_feed(p, "data: x\n\n", 9), r);
        assert_int_equal(rs->got.n, before);
    }
}

static void finish(zjuchat__sse *p, run_state *rs)
{
    rs->got.comments = zjuchat__sse_comments(p);
}

static void show(const char *label, const outcome *o)
{
    print_message("  %s: result %d, comments %zu, %zu events\n", label, o->result,
                  o->comments, o->n);
    for (size_t i = 0; i < o->n; i++) {
        print_message("    [%zu] type \"%.*s\" data(%zu) \"", i, (int)o->ev[i].type_len,
                      o->ev[i].type, o->ev[i].data_len);
        for (size_t j = 0; j < o->ev[i].data_len; j++) {
            unsigned char c = (unsigned char)o->ev[i].data[j];
            if (c < 0x20 || c == '\\')
                print_message("\\x%02x", c);
            else
                print_message("%c", c);
        }
        print_message("\"\n");
    }
}

static int same_event(const event *a, const event *b)
{
    return a->type_len == b->type_len && a->data_len == b->data_len &&
           memcmp(a->type, b->type, a->type_len) == 0 &&
           memcmp(a->data, b->data, a->data_len) == 0;
}

static void check(const char *name, const char *how, const expectation *x,
                  const outcome *got)
{
    int ok = got->result == x->want.result && got->comments == x->want.comments &&
             got->n == x->want.n;
    for (size_t i = 0; ok && i < got->n; i++)
        ok = same_event(&got->ev[i], &x->want.ev[i]);
    if (!ok) {
        print_message("%s fed %s differs from %s.out\n", name, how, name);
        show("want", &x->want);
        show("got", got);
        fail();
    }
}

/* Runs the whole stream, cut at the given offsets (ascending, in 0..len). */
static void run_cuts(const char *name, const char *how, const expectation *x,
                     const char *in, size_t len, const size_t *cuts, size_t ncuts)
{
    run_state rs = {x, {0}};
    zjuchat__sse *p = zjuchat__sse_new(x->max_line, x->max_event, record, &rs);
    assert_non_null(p);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        feed(p, &rs, in + at, to - at);
        at = to;
    }
    finish(p, &rs);
    check(name, how, x, &rs.got);
    outcome_free(&rs.got);
    zjuchat__sse_free(p);
}

static void run_fixture(void **state)
{
    const char *name = *state;
    expectation x;
    load_expectation(name, &x);
    char path[512];
    size_t len;
    fixture_path(path, sizeof path, name, ".in");
    char *in = slurp(path, &len);

    run_cuts(name, "in one piece", &x, in, len, NULL, 0);

    char how[64];
    for (size_t k = 0; k <= len; k++) {
        snprintf(how, sizeof how, "split at byte %zu", k);
        run_cuts(name, how, &x, in, len, &k, 1);
    }

    /* Byte by byte: every position is a feed boundary. */
    size_t *cuts = malloc((len + 1) * sizeof *cuts);
    assert_non_null(cuts);
    for (size_t k = 0; k < len; k++)
        cuts[k] = k;
    run_cuts(name, "byte by byte", &x, in, len, cuts, len);

    /* Random pieces of 0..7 bytes, reproducible. */
    unsigned seed = 12345;
    for (int round = 0; round < 50; round++) {
        size_t n = 0, at = 0;
        for (;;) {
            seed = seed * 1103515245u + 12345u;
            at += (seed >> 16) % 8;
            if (at > len)
                break;
            cuts[n++] = at;
            if (n == len + 1)
                break;
        }
        snprintf(how, sizeof how, "in random pieces (round %d)", round);
        run_cuts(name, how, &x, in, len, cuts, n);
    }
    free(cuts);

    /* A reused parser: state left by another stream (BOM check done, a
     * partial event with a type, a partial line, a comment, maybe an error
     * from small caps) must not leak into the next one. */
    run_state rs = {&x, {0}};
    zjuchat__sse *p = zjuchat__sse_new(x.max_line, x.max_event, record, &rs);
    assert_non_null(p);
    static const char junk[] = "\xEF\xBB\xBF: c\nevent: junk\ndata: junk\ndata: par";
    zjuchat__sse_feed(p, junk, sizeof junk - 1);
    assert_int_equal(rs.got.n, 0);
    zjuchat__sse_reset(p);
    feed(p, &rs, in, len);
    finish(p, &rs);
    check(name, "after a reset", &x, &rs.got);
    outcome_free(&rs.got);
    zjuchat__sse_free(p);

    outcome_free(&x.want);
    free(in);
}

/* ---------------------------------------------------------------- */
/* tests that are not a fixture                                     */
/* ---------------------------------------------------------------- */

static void every_fixture_is_listed(void **state)
{
    char dir[512];
    const char *root = getenv("ZJU_FIXTURES");
    snprintf(dir, sizeof dir, "%s/sse", root && *root ? root : "tests/fixtures");
    DIR *d = opendir(dir);
    if (!d)
        fail_msg("cannot open %s (run from the repository root or set ZJU_FIXTURES)",
                 dir);
    size_t found = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 4 || strcmp(de->d_name + n - 3, ".in") != 0)
            continue;
        found++;
        int listed = 0;
        for (size_t i = 0; i < N_CASES; i++)
            if (strlen(case_names[i]) == n - 3 &&
                memcmp(case_names[i], de->d_name, n - 3) == 0)
                listed = 1;
        if (!listed)
            fail_msg("fixture %s/%s is not in the CASES table", dir, de->d_name);
    }
    closedir(d);
    assert_int_equal(found, N_CASES);
}

typedef struct {
    size_t events, last_len;
    int bad;
} counter;

static int count(void *userdata, const char *type, const char *data, size_t len)
{
    counter *c = userdata;
    c->events++;
    c->last_len = len;
    for (size_t i = 0; i < len; i++)
        if (data[i] != 'x')
            c->bad = 1;
    return 0;
}

/* Sends one data line of `len` x's, then a blank line. */
static int send_data_line(zjuchat__sse *p, size_t len)
{
    char *line = malloc(len + 8);
    assert_non_null(line);
    memcpy(line, "data:", 5);
    memset(line + 5, 'x', len);
    memcpy(line + 5 + len, "\n\n", 2);
    int r = zjuchat__sse_feed(p, line, len + 7);
    free(line);
    return r;
}

/* Caps of 0 mean 64 KiB per line and 1 MiB per event, as sse.h says. */
static void default_caps(void **state)
{
    counter c = {0};
    zjuchat__sse *p = zjuchat__sse_new(0, 0, count, &c);
    assert_non_null(p);
    assert_int_equal(send_data_line(p, 65536 - 5), ZJUCHAT__SSE_OK);
    assert_int_equal(c.events, 1);
    assert_int_equal(c.last_len, 65536 - 5);
    assert_int_equal(send_data_line(p, 65536 - 4), ZJUCHAT__SSE_TOO_LONG);
    assert_int_equal(c.events, 1);

    /* 1 MiB of data in lines of 60000 bytes joined by LFs: exactly at the
     * cap passes, one more byte fails. */
    zjuchat__sse_reset(p);
    size_t total = 1024 * 1024, line = 60000, sent = 0;
    char *buf = malloc(line + 8);
    assert_non_null(buf);
    memcpy(buf, "data:", 5);
    memset(buf + 5, 'x', line);
    buf[5 + line] = '\n';
    for (int extra = 0; extra <= 1; extra++) {
        zjuchat__sse_reset(p);
        c.events = 0;
        sent = 0;
        while (sent + line + 1 < total) {
            assert_int_equal(zjuchat__sse_feed(p, buf, line + 6), 0);
            sent += line + 1; /* the joining LF counts */
        }
        size_t last = total - sent + (size_t)extra;
        assert_int_equal(zjuchat__sse_feed(p, buf, 5), 0);
        int r = 0;
        for (size_t i = 0; i < last && r == 0; i += line) {
            size_t n = last - i < line ? last - i : line;
            r = zjuchat__sse_feed(p, buf + 5, n);
        }
        if (r == 0)
            r = zjuchat__sse_feed(p, "\n\n", 2);
        if (extra) {
            assert_int_equal(r, ZJUCHAT__SSE_TOO_LONG);
            assert_int_equal(c.events, 0);
        } else {
            assert_int_equal(r, 0);
            assert_int_equal(c.events, 1);
            assert_int_equal(c.last_len, total);
        }
    }
    assert_int_equal(c.bad, 1); /* the joining LFs are in the data */
    free(buf);
    zjuchat__sse_free(p);
}

typedef struct {
    char types[4][16];
    char datas[4][16];
    size_t n;
} small_log;

static int log_event(void *userdata, const char *type, const char *data, size_t len)
{
    small_log *l = userdata;
    if (l->n < 4) {
        snprintf(l->types[l->n], sizeof l->types[0], "%s", type);
        snprintf(l->datas[l->n], sizeof l->datas[0], "%.*s", (int)len, data);
    }
    l->n++;
    return 0;
}

/* One parser serving two streams in turn, as the transport does on retry:
 * nothing of the first (partial event, type, comments, error) reaches the
 * second. */
static void reset_between_streams(void **state)
{
    small_log l = {0};
    zjuchat__sse *p = zjuchat__sse_new(32, 32, log_event, &l);
    assert_non_null(p);
    assert_int_equal(zjuchat__sse_feed(p, ": hb\nevent: old\ndata: first\ndata: par", 37),
                     0);
    assert_int_equal(zjuchat__sse_comments(p), 1);
    zjuchat__sse_reset(p);
    assert_int_equal(zjuchat__sse_comments(p), 0);
    assert_int_equal(zjuchat__sse_feed(p, "tial\n\ndata: second\n\n", 20), 0);
    /* "tial" is now an unknown field of the new stream, not the tail of the
     * old line, and the old event and its type are gone. */
    assert_int_equal(l.n, 1);
    assert_string_equal(l.types[0], "");
    assert_string_equal(l.datas[0], "second");

    /* After an error the parser refuses more bytes until it is reset. */
    char longline[40];
    memset(longline, 'x', sizeof longline);
    assert_int_equal(zjuchat__sse_feed(p, longline, sizeof longline),
                     ZJUCHAT__SSE_TOO_LONG);
    assert_int_equal(zjuchat__sse_feed(p, "\ndata: no\n\n", 11), ZJUCHAT__SSE_TOO_LONG);
    assert_int_equal(l.n, 1);
    zjuchat__sse_reset(p);
    /* The BOM check starts again with the new stream. */
    assert_int_equal(zjuchat__sse_feed(p,
                                       "\xEF\xBB\xBF"
                                       "data: third\n\n",
                                       16),
                     0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.datas[1], "third");
    zjuchat__sse_free(p);
}

int main(void)
{
#define AS_TEST(n) {#n, run_fixture, NULL, NULL, (void *)#n},
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_fixture_is_listed),
        CASES(AS_TEST) cmocka_unit_test(default_caps),
        cmocka_unit_test(reset_between_streams),
    };
    return cmocka_run_group_tests_name("sse", tests, NULL, NULL);
}
