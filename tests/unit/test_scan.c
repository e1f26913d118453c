/*
 * test_scan.c - the tree-less JSON scan that checks every relayed event:
 * validity agrees with jansson, and finish_reason, usage and a hidden key
 * are found only where they are.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "internal.h"

static zjuchat__scan scan(const char *text, const char *secret)
{
    zjuchat__scan s;
    zjuchat__scan_json(text, strlen(text), secret, &s);
    return s;
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

/* The one known difference: an integer beyond 64 bits is valid JSON (a
 * browser reads it as a float), which jansson refuses as an overflow. The
 * relay passes such an event on. */
static void big_integers_are_valid_json(void **state)
{
    zjuchat__scan s = scan("{\"big\":123456789012345678901234567890}", NULL);
    assert_true(s.valid && s.is_object);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(validity_agrees_with_jansson),
        cmocka_unit_test(big_integers_are_valid_json),
        cmocka_unit_test(finish_reason_only_at_its_place),
        cmocka_unit_test(delta_text_is_measured_at_its_place),
        cmocka_unit_test(usage_is_read_without_a_tree),
        cmocka_unit_test(escaped_key_is_noticed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
