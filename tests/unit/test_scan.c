/*
 * test_scan.c - the tree-less JSON scan that checks every relayed event:
 * validity is jansson's with the library's flags (each grammar edge below
 * says which way it must go, so a scanner that is wrong either way fails),
 * and finish_reason, usage, the delta text, choices[0]'s text spans and a
 * hidden key are found only where they are, repeated keys as jansson's tree
 * has them (the last).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static zjuchat__scan scan(const char *text, const char *secret)
{
    zjuchat__scan s;
    zjuchat__scan_json(text, strlen(text), secret, &s);
    return s;
}

static zjuchat__scan scan_n(const char *text, size_t len, const char *secret)
{
    zjuchat__scan s;
    zjuchat__scan_json(text, len, secret, &s);
    return s;
}

/* Each case says whether it is JSON; jansson (JSON_ALLOW_NUL, and
 * JSON_DECODE_ANY for scalars at the top) must say the same, and the scan
 * too. Plain bytes before a faulty one make the scan find it past its
 * 8- and 16-byte fast paths. */
struct grammar_case {
    const char *text;
    int valid;
};

#define PAD "abcdefghijklmnopqrstuvwxyz0123456789" /* 36 plain bytes */

static const struct grammar_case grammar[] = {
    /* values and white space */
    {"{}", 1},
    {"[]", 1},
    {" \t\r\n{ \"a\" : [ 1 , 2 , { \"b\" : null } ] }\n ", 1},
    {"\"str\"", 1},
    {"42", 1},
    {"true", 1},
    {"false", 1},
    {"null", 1},
    {"", 0},
    {" \n", 0},
    {"{}\f", 0},
    {"\v{}", 0},
    {"\xef\xbb\xbf{}", 0}, /* a BOM is not JSON text */
    {"{} x", 0},
    {"{}{}", 0},
    {"1 2", 0},
    {"{\"a\":1} \"x", 0},
    {"{\"a\":{}}\"y,21}}", 0},
    /* objects and arrays */
    {"{", 0},
    {"[", 0},
    {"{\"a\"", 0},
    {"{\"a\":", 0},
    {"{\"a\":1", 0},
    {"[1", 0},
    {"[1,", 0},
    {"{\"a\":}", 0},
    {"{\"a\":1,}", 0},
    {"[1,]", 0},
    {"[,1]", 0},
    {"{,}", 0},
    {"{\"a\" 1}", 0},
    {"{\"a\"::1}", 0},
    {"{1:1}", 0},
    {"{'a':1}", 0},
    {"{a:1}", 0},
    {"[1 2]", 0},
    {"[1:2]", 0},
    {"{\"a\":1 \"b\":2}", 0},
    {"[}", 0},
    {"{]", 0},
    {"[[]]]", 0},
    {"{\"a\":1,\"a\":2}", 1}, /* repeated keys: the last counts */
    /* literals */
    {"[tru]", 0},
    {"[nul]", 0},
    {"[truex]", 0},
    {"[true1]", 0},
    {"[truefalse]", 0},
    {"[True]", 0},
    {"[NaN]", 0},
    {"[Infinity]", 0},
    /* numbers */
    {"[-0]", 1},
    {"[0]", 1},
    {"[0.5e-3]", 1},
    {"[1E+5]", 1},
    {"[1e5]", 1},
    {"[0e5]", 1},
    {"[-0.0]", 1},
    {"[123.456e-789]", 1},
    {"[9223372036854775807]", 1},
    {"[-9223372036854775808]", 1},
    {"[01]", 0},
    {"[-01]", 0},
    {"[00]", 0},
    {"[-]", 0},
    {"[1.]", 0},
    {"[.5]", 0},
    {"[+1]", 0},
    {"[1e]", 0},
    {"[1e+]", 0},
    {"[1.e5]", 0},
    {"[1.5.3]", 0},
    {"[0x10]", 0},
    {"[1 .5]", 0},
    {"[- 1]", 0},
    {"-", 0},
    {"1.", 0},
    /* strings */
    {"[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]", 1},
    {"[\"\\u00e9\\u4f60\\uFFFF\"]", 1},
    {"[\"\\ud83d\\ude00\"]", 1}, /* a surrogate pair */
    {"[\"\\uD83D\\uDE00\"]", 1},
    {"[\"" PAD "\\u0000\"]", 1}, /* \u0000 in a string (JSON_ALLOW_NUL) */
    {"{\"a\\u0000b\":1}", 0},    /* ... but not in a key */
    {"[\"\\ud800\"]", 0},        /* lone high surrogate */
    {"[\"\\udc00\"]", 0},        /* lone low surrogate */
    {"[\"\\ud800\\u0041\"]", 0}, /* high, then no low */
    {"[\"\\ud800\\ud800\"]", 0},
    {"[\"\\ude00\\ud83d\"]", 0}, /* the pair reversed */
    {"[\"\\ud800x\"]", 0},
    {"[\"" PAD "\\x\"]", 0},
    {"[\"\\U0041\"]", 0},
    {"[\"\\u00G1\"]", 0},
    {"[\"\\u12\"]", 0},
    {"[\"\\u12", 0},
    {"[\"\\", 0},
    {"[\"\\'\"]", 0},
    {"[\"abc", 0},
    {"[\"" PAD, 0},
    {"[\"" PAD "\t\"]", 0}, /* raw tab inside a string */
    {"[\"" PAD "\n\"]", 0},
    {"[\"" PAD "\x01\"]", 0},
    {"[\"ab\x1f\"]", 0},
    {"[\"" PAD "\x7f\"]", 1}, /* DEL needs no escape */
    /* UTF-8 */
    {"[\"\xc3\xa9\xe4\xbd\xa0\xf0\x9f\x8c\x8d\xf4\x8f\xbf\xbf\xef\xbf\xbf\"]", 1},
    {"[\"" PAD "\xe6\xb5\x99" PAD "\"]", 1},
    {"[\"\xff\"]", 0},
    {"[\"" PAD "\xfe\"]", 0},
    {"[\"\x80\"]", 0}, /* a continuation byte alone */
    {"[\"" PAD "\xbf" PAD "\"]", 0},
    {"[\"\xc0\xaf\"]", 0}, /* overlong, 2 bytes */
    {"[\"\xc1\xbf\"]", 0},
    {"[\"\xe0\x80\xaf\"]", 0}, /* overlong, 3 bytes */
    {"[\"\xe0\x9f\xbf\"]", 0},
    {"[\"\xf0\x80\x80\xaf\"]", 0}, /* overlong, 4 bytes */
    {"[\"\xf0\x8f\xbf\xbf\"]", 0},
    {"[\"\xed\xa0\x80\"]", 0}, /* an encoded surrogate */
    {"[\"" PAD "\xed\xbf\xbf\"]", 0},
    {"[\"\xf4\x90\x80\x80\"]", 0}, /* above U+10FFFF */
    {"[\"\xf5\x80\x80\x80\"]", 0},
    {"[\"\xf8\x88\x80\x80\x80\"]", 0},
    {"[\"\xe4\xbd\"]", 0}, /* cut sequences */
    {"[\"\xf0\x9f\x8c\"]", 0},
    {"[\"\xc3\"]", 0},
    {"[\"\xc3", 0},
    {"[\"\xe4\xbdx\"]", 0},
    {"[\"\xc3\xc3\"]", 0},
    {"{}\xc3\xa9", 0}, /* UTF-8 outside a string */
    {"[\xc3\xa9]", 0},
};

static void grammar_edges_are_jansson_s(void **state)
{
    for (size_t i = 0; i < sizeof grammar / sizeof *grammar; i++) {
        const char *t = grammar[i].text;
        json_t *j = json_loadb(t, strlen(t), JSON_ALLOW_NUL | JSON_DECODE_ANY, NULL);
        int jansson_valid = j != NULL;
        json_decref(j);
        if (jansson_valid != grammar[i].valid)
            fail_msg("case %zu (%s): jansson says %d, the case %d", i, t, jansson_valid,
                     grammar[i].valid);
        zjuchat__scan s = scan(t, "sk-x");
        if (s.valid != grammar[i].valid)
            fail_msg("case %zu (%s): scan says %d, jansson %d", i, t, s.valid,
                     grammar[i].valid);
        zjuchat__scan n = scan(t, NULL);
        if (n.valid != s.valid)
            fail_msg("case %zu (%s): validity depends on the secret", i, t);
    }
}

/* jansson counts every value's depth, scalars included, and refuses one
 * past 2048: 2048 nested empty containers are JSON, a scalar inside 2048
 * containers is not. So does the scan. */
static void nesting_is_limited_as_jansson_s(void **state)
{
    static const struct {
        const char *inner;
        int limit; /* the most containers around it that are still valid */
    } kinds[] = {
        {"[]", 2047}, {"{}", 2047}, {"1", 2047}, {"{\"a\":1}", 2046}, {"[1]", 2046}};
    static char text[2 * 2050 + 16];
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        for (int around = 2044; around <= 2050; around++) {
            size_t n = strlen(kinds[k].inner), len = 0;
            for (int i = 0; i < around; i++)
                text[len++] = '[';
            memcpy(text + len, kinds[k].inner, n);
            len += n;
            for (int i = 0; i < around; i++)
                text[len++] = ']';
            int want = around <= kinds[k].limit;
            json_t *j = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
            if ((j != NULL) != want)
                fail_msg("jansson, %s in %d: %d", kinds[k].inner, around, j != NULL);
            json_decref(j);
            if (scan_n(text, len, NULL).valid != want)
                fail_msg("scan, %s in %d: %d", kinds[k].inner, around, !want);
        }
    }
}

/* A raw NUL byte is never JSON text; jansson's reader drops one that ends
 * a token (fuzz/regressions/fuzz_scan/raw-nul-jansson-quirk). */
static void raw_nul_is_refused(void **state)
{
    assert_false(scan_n("{\"a\":1\0}", 8, NULL).valid);
    assert_false(scan_n("{\"a\":\"x\0\"}", 10, NULL).valid);
    assert_false(scan_n("{}\0", 3, NULL).valid);
    assert_false(scan_n("\0{}", 3, NULL).valid);
    assert_true(scan_n("{}", 2, NULL).valid);
}

static void validity_agrees_with_jansson(void **state)
{
    static const char *cases[] = {
        "{}",
        "{\"a\":1}",
        "  {\"a\":[1,2,{\"b\":null}]}\n",
        "{\"emoji\":\"\xf0\x9f\x8c\x8d\",\"esc\":\"\\u4f60\\n\\\"\"}",
        "{\"f\":-1.5e300}",
        "",
        "not json",
        "{",
        "{\"a\":}",
        "{\"a\":1,}",
        "{\"a\":1} trailing",
        "{\"a\":\"\xff\"}",             /* invalid UTF-8 */
        "{\"a\":\"\xc0\xaf\"}",         /* overlong */
        "{\"a\":\"\xed\xa0\x80\"}",     /* a surrogate, encoded */
        "{\"a\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"a\":\"\xe4\xbd\"}",         /* cut sequence */
        "{'a':1}",
        "[1,2]",
        "\"str\"",
        "42",
        "{\"a\":tru}",
        "{\"a\":\"unterminated}",
        "{\"a\":\"ctl\x01\"}",
        "{}\f",
        "{\"a\":{}}\"y,21}}", /* an unfinished string after the value */
        "{\"a\":1} \"x",
        "{\"a\":1} \n\t ",
        "\v{}",
        "{\"a\":\"tab\there\"}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *t = cases[i];
        json_t *j = json_loadb(t, strlen(t), JSON_ALLOW_NUL, NULL);
        zjuchat__scan s = scan(t, NULL);
        int jansson_object = json_is_object(j);
        json_decref(j);
        if (s.valid && s.is_object != jansson_object)
            fail_msg("case %zu (%s): scan object %d, jansson object %d", i, t,
                     s.is_object, jansson_object);
        if (!s.valid && jansson_object)
            fail_msg("case %zu (%s): scan rejects what jansson accepts", i, t);
        if (s.valid && s.is_object && !jansson_object)
            fail_msg("case %zu (%s): scan accepts what jansson rejects", i, t);
    }
}

/* The one known difference: a number beyond jansson's range (an integer
 * past 64 bits, a real past DBL_MAX) is valid JSON (a browser reads it as a
 * double), which jansson refuses as an overflow. The relay passes such an
 * event on; as a usage count it counts for nothing. */
static void big_integers_are_valid_json(void **state)
{
    zjuchat__scan s = scan("{\"big\":123456789012345678901234567890}", NULL);
    assert_true(s.valid && s.is_object);
    assert_true(
        scan("[1e400,-1e400,9223372036854775808,-9223372036854775809]", NULL).valid);
    s = scan("{\"usage\":{\"prompt_tokens\":9223372036854775808,\"total_tokens\":-"
             "9223372036854775809,\"completion_tokens\":1e400}}",
             NULL);
    assert_true(s.valid);
    assert_false(s.has_usage);
    assert_int_equal(s.prompt, -1);
    assert_int_equal(s.total, -1);
    s = scan("{\"usage\":{\"prompt_tokens\":9223372036854775807,\"total_tokens\":-"
             "9223372036854775808,\"completion_tokens\":3.0}}",
             NULL);
    assert_true(s.has_usage);
    assert_true(s.prompt == LONG_MAX);
    assert_true(s.total == LONG_MIN);
    assert_int_equal(s.completion, -1); /* a real is no count (json_is_integer) */
}

static void finish_reason_only_at_its_place(void **state)
{
    assert_true(
        scan("{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}",
             NULL)
            .finish);
    assert_false(
        scan("{\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}",
             NULL)
            .finish);
    /* The same name elsewhere does not count. */
    assert_false(scan("{\"finish_reason\":\"stop\"}", NULL).finish);
    assert_false(
        scan("{\"choices\":[{\"delta\":{\"finish_reason\":\"stop\"}}]}", NULL).finish);
    assert_false(
        scan("{\"x\":{\"choices\":[{\"finish_reason\":\"stop\"}]}}", NULL).finish);
}

static void delta_text_is_measured_at_its_place(void **state)
{
    /* content and reasoning_content, decoded ("\u4f60" is 3 bytes), every
     * choice */
    assert_int_equal(
        scan("{\"choices\":[{\"delta\":{\"content\":\"h\u4f60\",\"role\":\"assistant\"}},"
             "{\"delta\":{\"reasoning_content\":\"ab\"}}]}",
             NULL)
            .text_len,
        6);
    /* The same names elsewhere do not count. */
    assert_int_equal(scan("{\"content\":\"xyz\"}", NULL).text_len, 0);
    assert_int_equal(
        scan("{\"choices\":[{\"message\":{\"content\":\"xyz\"}}]}", NULL).text_len, 0);
    assert_int_equal(
        scan("{\"choices\":[{\"delta\":{\"content\":{\"content\":\"x\"}}}]}", NULL)
            .text_len,
        0);
}

static void usage_is_read_without_a_tree(void **state)
{
    zjuchat__scan s = scan("{\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
                           "\"completion_tokens\":30,\"total_tokens\":42}}",
                           NULL);
    assert_true(s.has_usage);
    assert_int_equal(s.prompt, 12);
    assert_int_equal(s.completion, 30);
    assert_int_equal(s.total, 42);
    s = scan("{\"usage\":null}", NULL);
    assert_false(s.has_usage);
    s = scan("{\"x\":{\"usage\":{\"total_tokens\":5}}}", NULL);
    assert_false(s.has_usage);
    s = scan("{\"usage\":{\"total_tokens\":7}}", NULL);
    assert_true(s.has_usage);
    assert_int_equal(s.total, 7);
    assert_int_equal(s.prompt, -1);
}

static void escaped_key_is_noticed(void **state)
{
    assert_true(scan("{\"m\":\"see \\u0073k-abc123 here\"}", "sk-abc123").secret_seen);
    assert_true(scan("{\"\\u0073k-abc123\":1}", "sk-abc123").secret_seen);
    assert_false(scan("{\"m\":\"sk-abc12\"}", "sk-abc123").secret_seen);
    assert_false(scan("{\"m\":\"anything\"}", NULL).secret_seen);
}

/* Repeated keys: jansson's tree keeps the last value, and so do the
 * scan's findings (an upstream that repeats itself is read as a browser's
 * JSON.parse reads it). */
static void repeated_keys_count_the_last(void **state)
{
    zjuchat__scan s = scan("{\"usage\":{\"total_tokens\":5},\"usage\":null}", NULL);
    assert_false(s.has_usage);
    assert_int_equal(s.total, -1);
    s = scan("{\"usage\":{\"total_tokens\":5,\"total_tokens\":\"x\"}}", NULL);
    assert_false(s.has_usage);
    s = scan("{\"usage\":{\"total_tokens\":5,\"total_tokens\":6}}", NULL);
    assert_int_equal(s.total, 6);
    s = scan(
        "{\"choices\":[{\"finish_reason\":\"stop\",\"delta\":{\"content\":\"abc\"}}],"
        "\"choices\":[]}",
        NULL);
    assert_false(s.finish);
    assert_int_equal(s.text_len, 0);
    assert_false(s.text[ZJUCHAT__DELTA][ZJUCHAT__CONTENT].present);
    s = scan("{\"choices\":[{\"finish_reason\":\"stop\",\"finish_reason\":null}]}", NULL);
    assert_false(s.finish);
    s = scan("{\"choices\":[{\"delta\":{\"content\":\"abc\",\"content\":null}}]}", NULL);
    assert_int_equal(s.text_len, 0);
    assert_false(s.text[ZJUCHAT__DELTA][ZJUCHAT__CONTENT].present);
    s = scan("{\"choices\":[{\"delta\":{\"content\":\"abc\"},\"delta\":{\"content\":"
             "\"de\"}}]}",
             NULL);
    assert_int_equal(s.text_len, 2);
    assert_int_equal(s.text[ZJUCHAT__DELTA][ZJUCHAT__CONTENT].decoded, 2);
}

/* A key is compared decoded: "\u0063hoices" is choices, as in the tree. */
static void escaped_names_are_the_names(void **state)
{
    zjuchat__scan s =
        scan("{\"\\u0063hoices\":[{\"finish_\\u0072eason\":\"stop\",\"delta\":{\"c"
             "ontent\\u0000\":\"x\"}}]}",
             NULL);
    assert_false(s.valid); /* \u0000 in a key */
    s = scan("{\"\\u0063hoices\":[{\"finish_\\u0072eason\":\"stop\",\"delta\":{\"\\u0063"
             "ontent\":\"xy\"}}],\"\\u0075sage\":{\"total\\u005ftokens\":3}}",
             NULL);
    assert_true(s.valid);
    assert_true(s.finish);
    assert_int_equal(s.text_len, 2);
    assert_int_equal(s.total, 3);
    /* A name that only decodes longer than any known one is no name. */
    s = scan("{\"choices\\u0020\":[{\"finish_reason\":\"stop\"}]}", NULL);
    assert_false(s.finish);
}

/* choices[0]'s texts: where they lie and what they decode to, for the
 * accessors that answer without a tree. */
static void text_spans_decode_to_the_tree_s_strings(void **state)
{
    const char *t = "{\"choices\":[{\"message\":{\"content\":\"a\\nb\\u00e9\\u0000"
                    "\\ud83d\\ude00\\\"\",\"reasoning_content\":\"plain \xe4\xbd\xa0\"},"
                    "\"delta\":{\"content\":7}},{\"message\":{\"content\":\"second\"}}]}";
    zjuchat__scan s = scan(t, NULL);
    assert_true(s.valid);
    const zjuchat__span *c = &s.text[ZJUCHAT__MESSAGE][ZJUCHAT__CONTENT];
    const zjuchat__span *r = &s.text[ZJUCHAT__MESSAGE][ZJUCHAT__REASONING];
    assert_true(c->present && c->escaped);
    assert_int_equal(c->decoded, 1 + 1 + 1 + 2 + 1 + 4 + 1);
    char out[64];
    size_t n = zjuchat__json_unescape(t + c->off, c->len, out);
    assert_int_equal(n, c->decoded);
    assert_memory_equal(out, "a\nb\xc3\xa9\0\xf0\x9f\x98\x80\"", n);
    assert_true(r->present && !r->escaped);
    assert_int_equal(r->decoded, 9);
    assert_memory_equal(t + r->off, "plain \xe4\xbd\xa0", 9);
    assert_false(s.text[ZJUCHAT__DELTA][ZJUCHAT__CONTENT].present); /* a number */
    assert_false(s.text[ZJUCHAT__DELTA][ZJUCHAT__REASONING].present);
    /* Only choices[0]. */
    s = scan("{\"choices\":[1,{\"message\":{\"content\":\"x\"}}]}", NULL);
    assert_false(s.text[ZJUCHAT__MESSAGE][ZJUCHAT__CONTENT].present);
    /* Not at the top, not in an object choice. */
    s = scan("{\"x\":{\"choices\":[{\"message\":{\"content\":\"x\"}}]}}", NULL);
    assert_false(s.text[ZJUCHAT__MESSAGE][ZJUCHAT__CONTENT].present);
    s = scan("{\"choices\":[[{\"message\":{\"content\":\"x\"}}]]}", NULL);
    assert_false(s.text[ZJUCHAT__MESSAGE][ZJUCHAT__CONTENT].present);
    s = scan("{\"choices\":{\"message\":{\"content\":\"x\"}}}", NULL);
    assert_false(s.text[ZJUCHAT__MESSAGE][ZJUCHAT__CONTENT].present);
}

/* A key hidden behind escapes in a long string is found wherever it lies:
 * the scan decodes such a string a 4 KiB window at a time. */
static void escaped_key_is_found_across_decoding_windows(void **state)
{
    const char *key = "sk-window-test-0123456789abcdef";
    size_t klen = strlen(key);
    size_t size = 20000;
    char *t = malloc(size + 64);
    assert_non_null(t);
    for (size_t at = 4000; at < 4200; at += 2) {
        /* {"m":"\n\n...<key with its 's' escaped>...\n"} : every \n is 2 raw
         * bytes, 1 decoded. */
        size_t p = 0;
        p += (size_t)sprintf(t + p, "{\"m\":\"");
        for (size_t i = 0; i < at; i++)
            t[p++] = i % 2 ? 'n' : '\\';
        p += (size_t)sprintf(t + p, "\\u0073%s", key + 1);
        for (size_t i = 0; i < 3000; i++)
            t[p++] = i % 2 ? 'n' : '\\';
        p += (size_t)sprintf(t + p, "\"}");
        zjuchat__scan s = scan_n(t, p, key);
        assert_true(s.valid);
        if (!s.secret_seen)
            fail_msg("key at %zu not found", at);
        /* One byte short of the key: not found. */
        char shorter[64];
        memcpy(shorter, key, klen);
        shorter[klen - 1] = 'X';
        shorter[klen] = '\0';
        assert_false(scan_n(t, p, shorter).secret_seen);
    }
    free(t);
}

/* The key-echo check reports what it read before a fault: the library
 * withholds an error body that hides the key and is not valid JSON. An
 * invalid UTF-8 byte anywhere once hid such an escaped key from it. */
static void escaped_key_before_a_fault_is_reported(void **state)
{
    const char *k = "sk-abc123";
    assert_true(scan("{\"m\":\"\\u0073k-abc123\"} oops", k).secret_seen);
    assert_true(scan("{\"m\":\"\\u0073k-abc123\",\"n\":\"\xff\"}", k).secret_seen);
    assert_true(scan("{\"m\":\"\\u0073k-abc123\"}\xc0\xaf", k).secret_seen);
    assert_true(scan("{\"m\":\"\\u0073k-abc123\"}\f", k).secret_seen);
}

/* secret_raw: 0 only when the bytes cannot hold the key as is, so the
 * event path may skip its search for it (sse_policy.c). */
static void raw_key_is_never_missed(void **state)
{
    const char *k = "sk-abc123456789";
    assert_false(scan("{\"m\":\"nothing here\",\"n\":[1,2,3]}", k).secret_raw);
    zjuchat__scan s = scan("{\"m\":\"see sk-abc123456789 here\"}", k);
    assert_true(s.secret_raw);
    assert_true(s.secret_seen);
    /* in an escaped string: as is and decoded */
    s = scan("{\"m\":\"\\n sk-abc123456789\"}", k);
    assert_true(s.secret_raw);
    assert_true(s.secret_seen);
    /* only escaped: not as is */
    s = scan("{\"m\":\"\\u0073k-abc123456789\"}", k);
    assert_false(s.secret_raw);
    assert_true(s.secret_seen);
    /* in a key */
    assert_true(scan("{\"sk-abc123456789\":1}", k).secret_raw);
    /* outside strings: a number as long as the key could be it */
    assert_true(scan("[1234567890123456789]", "1234567890123456").secret_raw);
    assert_false(scan("[1234567890123]", "1234567890123456").secret_raw);
    /* across a string's quotes: a key with a '"' in it */
    assert_true(scan("{\"ab\":1}", "b\":1").secret_raw);
    /* a document that is not JSON: unknown, so yes */
    assert_true(scan("{\"m\":\"x\"", k).secret_raw);
    assert_false(scan("{}", NULL).secret_raw);
}

static int same_scan(const zjuchat__scan *a, const zjuchat__scan *b)
{
    for (int w = 0; w < 2; w++)
        for (int f = 0; f < 2; f++) {
            const zjuchat__span *x = &a->text[w][f], *y = &b->text[w][f];
            if (x->present != y->present || x->escaped != y->escaped ||
                x->off != y->off || x->len != y->len || x->decoded != y->decoded)
                return 0;
        }
    return a->valid == b->valid && a->is_object == b->is_object &&
           a->finish == b->finish && a->has_usage == b->has_usage &&
           a->secret_seen == b->secret_seen && a->secret_raw == b->secret_raw &&
           a->prompt == b->prompt && a->completion == b->completion &&
           a->total == b->total && a->text_len == b->text_len;
}

/* The memo: an event that starts with the bytes of the last one up to its
 * delta's text is scanned from there, and finds what a whole scan finds,
 * the key in those first bytes included; other bytes, or another key, and
 * it is not used. */
static void memo_resumes_only_on_the_same_bytes(void **state)
{
    const char *k = "sk-abc123456789";
    static const char *const events[] = {
        "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\u4f60\"},"
        "\"finish_reason\":null}]}",
        /* the same first bytes: resumed */
        "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"total_tokens\":7}}",
        "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}",
        "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":",
        /* white space where the memo's bytes end (fuzz_scan found a scan
         * that resumed there refuse this valid event) */
        "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\": \"y\"}}]}",
        "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\n\t\"z\"}}]}",
        "{\"id\":\"c-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":  ",
        /* the key before the text */
        "{\"id\":\"sk-abc123456789\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}",
        "{\"id\":\"sk-abc123456789\",\"choices\":[{\"delta\":{\"content\":\"b\"}}]}",
        "{\"id\":\"\\u0073k-abc123456789\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]"
        "}",
        "{\"id\":\"\\u0073k-abc123456789\",\"choices\":[{\"delta\":{\"content\":7}}]}",
        /* a text in an array: the memo must not resume where the array's
         * first value starts (fuzz_scan found one resumed at "]": the scan
         * had decided there that the array is not empty) */
        "{\"id\":\"c-3\",\"choices\":[{\"delta\":{\"content\":[\"x\"]}}]}",
        "{\"id\":\"c-3\",\"choices\":[{\"delta\":{\"content\":[]}}]}",
        /* the bytes part earlier */
        "{\"id\":\"c-2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}",
        "{\"id\":\"c-2\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":"
        "\"r\"}}]}",
    };
    for (int secret = 0; secret < 3; secret++) {
        zjuchat__scan_memo *memo = calloc(1, sizeof *memo);
        assert_non_null(memo);
        for (size_t i = 0; i < sizeof events / sizeof *events; i++) {
            /* the third round: the key changes from event to event */
            const char *key = secret == 0 ? NULL : secret == 2 && i % 2 ? NULL : k;
            const char *e = events[i];
            zjuchat__scan with, without;
            int rw = zjuchat__scan_json_memo(e, strlen(e), key, &with, memo);
            int ro = zjuchat__scan_json(e, strlen(e), key, &without);
            assert_int_equal(rw, ro);
            assert_true(same_scan(&with, &without));
        }
        /* it was used: it holds the last event's bytes up to its text */
        assert_int_equal(memo->len, strlen("{\"id\":\"c-2\",\"choices\":[{\"index\":0,"
                                           "\"delta\":{\"reasoning_content\":"));
        free(memo);
    }
}

/* The accessors of a whole answer and of a chunk read choices[0]'s texts
 * from the scan's spans: the same bytes jansson's tree gives, NUL
 * included, NUL-terminated; NULL where the tree has no string. */
static void accessors_decode_the_spans_as_jansson_does(void **state)
{
    static const char *const bodies[] = {
        "{\"choices\":[{\"message\":{\"content\":\"a\\nb\\u00e9\\u0000z\\ud83d\\ude00\","
        "\"reasoning_content\":\"plain\"},\"delta\":{\"content\":\"d\\t\","
        "\"reasoning_content\":null}}]}",
        "{\"choices\":[{\"message\":{\"content\":null}}],\"x\":1}",
        "{\"choices\":[{\"message\":{\"content\":\"\"},\"delta\":{\"content\":[]}}]}",
        "{\"choices\":[],\"usage\":{\"total_tokens\":1}}",
        "{\"choices\":[{\"message\":{\"content\":\"first\"}}],\"choices\":[{\"message\":{"
        "\"content\":\"last\"}}]}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        const char *b = bodies[i];
        size_t len = strlen(b);
        zjuchat__scan sc;
        assert_int_equal(zjuchat__scan_json(b, len, "sk-unit-test-key-0000", &sc), 0);
        json_t *tree = json_loadb(b, len, JSON_ALLOW_NUL, NULL);
        assert_non_null(tree);
        zjuchat_response *r = zjuchat__response_new(strdup(b), len, 200, NULL, &sc);
        zjuchat_chunk c = {.data = b, .len = len, .scan = sc};
        for (int f = 0; f < 2; f++) {
            const char *field = f ? "reasoning_content" : "content";
            size_t want_len, got_len = 99, chunk_len = 99;
            const char *want = zjuchat__choice_string(tree, "message", field, &want_len);
            const char *got = f ? zjuchat_response_reasoning(r, &got_len)
                                : zjuchat_response_content(r, &got_len);
            if ((want == NULL) != (got == NULL) || got_len != want_len ||
                (got && (memcmp(got, want, want_len) || got[got_len] != '\0')))
                fail_msg("body %zu: message.%s differs from jansson's", i, field);
            want = zjuchat__choice_string(tree, "delta", field, &want_len);
            got = f ? zjuchat_chunk_reasoning(&c, &chunk_len)
                    : zjuchat_chunk_content(&c, &chunk_len);
            if ((want == NULL) != (got == NULL) || chunk_len != want_len ||
                (got && (memcmp(got, want, want_len) || got[chunk_len] != '\0')))
                fail_msg("body %zu: delta.%s differs from jansson's", i, field);
            /* Asked again: the same decoded copy. */
            assert_ptr_equal(got, f ? zjuchat_chunk_reasoning(&c, NULL)
                                    : zjuchat_chunk_content(&c, NULL));
        }
        free(c.text[0]);
        free(c.text[1]);
        json_decref(c.json);
        zjuchat_response_free(r);
        json_decref(tree);
    }
}

/* A message with a lone surrogate escape is refused as invalid JSON: the
 * library checks a text jansson refused with the scan to tell its running
 * out of memory from bad input, and the scan used to accept it. */
static void lone_surrogate_message_is_invalid_not_oom(void **state)
{
    zjuchat_request *r = zjuchat_request_new();
    assert_non_null(r);
    zjuchat_error err;
    const char *m = "{\"role\":\"user\",\"content\":\"\\ud800\"}";
    assert_int_equal(zjuchat_request_add_message_json(r, m, strlen(m), &err),
                     ZJUCHAT_ERR_INVALID);
    assert_non_null(strstr(err.message, "not valid JSON"));
    m = "{\"role\":\"user\",\"content\":\"\\ud83d\\ude00\"}";
    assert_int_equal(zjuchat_request_add_message_json(r, m, strlen(m), &err), ZJUCHAT_OK);
    zjuchat_request_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(validity_agrees_with_jansson),
        cmocka_unit_test(grammar_edges_are_jansson_s),
        cmocka_unit_test(nesting_is_limited_as_jansson_s),
        cmocka_unit_test(raw_nul_is_refused),
        cmocka_unit_test(big_integers_are_valid_json),
        cmocka_unit_test(finish_reason_only_at_its_place),
        cmocka_unit_test(delta_text_is_measured_at_its_place),
        cmocka_unit_test(usage_is_read_without_a_tree),
        cmocka_unit_test(escaped_key_is_noticed),
        cmocka_unit_test(repeated_keys_count_the_last),
        cmocka_unit_test(escaped_names_are_the_names),
        cmocka_unit_test(text_spans_decode_to_the_tree_s_strings),
        cmocka_unit_test(escaped_key_is_found_across_decoding_windows),
        cmocka_unit_test(escaped_key_before_a_fault_is_reported),
        cmocka_unit_test(lone_surrogate_message_is_invalid_not_oom),
        cmocka_unit_test(raw_key_is_never_missed),
        cmocka_unit_test(memo_resumes_only_on_the_same_bytes),
        cmocka_unit_test(accessors_decode_the_spans_as_jansson_does),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
