/*
 * test_request.c - request JSON building, error texts and key redaction.
 * Pure unit tests: nothing leaves the process.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "zjuchat.h"

static json_t *body_of(const zjuchat_request *req, int stream)
{
    char *s = zjuchat_request_to_json(req, stream);
    assert_non_null(s);
    json_error_t e;
    json_t *j = json_loads(s, JSON_REJECT_DUPLICATES, &e);
    free(s);
    assert_non_null(j);
    return j;
}

static void simple_without_system_has_one_message(void **state)
{
    zjuchat_request *req = zjuchat_request_new_simple(NULL, "hello", NULL);
    json_t *j = body_of(req, 0);
    assert_string_equal(json_string_value(json_object_get(j, "model")),
                        "deepseek-r1-671b");
    json_t *msgs = json_object_get(j, "messages");
    assert_int_equal(json_array_size(msgs), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "user");
    assert_true(json_is_false(json_object_get(j, "stream")));
    json_decref(j);
    zjuchat_request_free(req);

    /* An empty system content also means no system message. */
    req = zjuchat_request_new_simple("", "hi", "");
    j = body_of(req, 1);
    assert_int_equal(json_array_size(json_object_get(j, "messages")), 1);
    assert_true(json_is_true(json_object_get(j, "stream")));
    json_decref(j);
    zjuchat_request_free(req);
}

static void simple_with_system_puts_it_first(void **state)
{
    zjuchat_request *req =
        zjuchat_request_new_simple("deepseek-v3-671b", "q", "be brief");
    json_t *j = body_of(req, 0);
    json_t *msgs = json_object_get(j, "messages");
    assert_int_equal(json_array_size(msgs), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(msgs, 0), "role")), "system");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(msgs, 0), "content")),
        "be brief");
    assert_string_equal(json_string_value(json_object_get(j, "model")),
                        "deepseek-v3-671b");
    json_decref(j);
    zjuchat_request_free(req);
}

static void escaping_and_unicode_round_trip(void **state)
{
    const char *text = "引号\"反斜杠\\ 换行\n制表\t 🌍 U+2028:\xe2\x80\xa8 ctl:\x01";
    zjuchat_request *req = zjuchat_request_new();
    assert_int_equal(zjuchat_request_add_message(req, "user", text), ZJUCHAT_OK);
    char *s = zjuchat_request_to_json(req, 0);
    /* Raw control characters never reach the wire. */
    assert_null(strchr(s, '\n'));
    assert_null(strchr(s, '\t'));
    assert_null(strchr(s, '\x01'));
    json_t *j = json_loads(s, 0, NULL);
    free(s);
    const char *back = json_string_value(
        json_object_get(json_array_get(json_object_get(j, "messages"), 0), "content"));
    assert_string_equal(back, text);
    json_decref(j);
    zjuchat_request_free(req);
}

/* JSON's \u0000 is a character like any other: the length-aware forms send
 * it escaped, where a C string would have cut the text there. */
static void nul_inside_texts_is_sent_as_u0000(void **state)
{
    zjuchat_request *req = zjuchat_request_new_simple_n(NULL, "a\0b", 3, "s\0t", 3);
    assert_non_null(req);
    assert_int_equal(zjuchat_request_add_message_n(req, "assistant", "\0", 1),
                     ZJUCHAT_OK);
    char *s = zjuchat_request_to_json(req, 0);
    assert_non_null(s);
    assert_non_null(strstr(s, "{\"role\":\"system\",\"content\":\"s\\u0000t\"}"));
    assert_non_null(strstr(s, "{\"role\":\"user\",\"content\":\"a\\u0000b\"}"));
    assert_non_null(strstr(s, "{\"role\":\"assistant\",\"content\":\"\\u0000\"}"));
    json_t *j = json_loads(s, JSON_ALLOW_NUL, NULL);
    free(s);
    json_t *user =
        json_object_get(json_array_get(json_object_get(j, "messages"), 1), "content");
    assert_int_equal(json_string_length(user), 3);
    assert_memory_equal(json_string_value(user), "a\0b", 3);
    json_decref(j);
    zjuchat_request_free(req);

    /* system_len 0: no system message; invalid UTF-8 is still refused. */
    req = zjuchat_request_new_simple_n(NULL, "q", 1, "ignored", 0);
    j = body_of(req, 0);
    assert_int_equal(json_array_size(json_object_get(j, "messages")), 1);
    json_decref(j);
    assert_int_equal(zjuchat_request_add_message_n(req, "user", "\0\xff", 2),
                     ZJUCHAT_ERR_INVALID);
    zjuchat_request_free(req);
    assert_null(zjuchat_request_new_simple_n(NULL, "\xff\0", 2, NULL, 0));
}

static void invalid_utf8_and_roles_are_refused(void **state)
{
    zjuchat_request *req = zjuchat_request_new();
    assert_int_equal(zjuchat_request_add_message(req, "user", "bad \xff\xfe"),
                     ZJUCHAT_ERR_INVALID);
    assert_int_equal(zjuchat_request_add_message(req, "wizard", "x"),
                     ZJUCHAT_ERR_INVALID);
    assert_int_equal(zjuchat_request_set_model(req, ""), ZJUCHAT_ERR_INVALID);
    assert_int_equal(zjuchat_request_set_temperature(req, 3.0), ZJUCHAT_ERR_INVALID);
    assert_int_equal(zjuchat_request_set_max_tokens(req, 0), ZJUCHAT_ERR_INVALID);
    zjuchat_request_free(req);
}

static void sampling_and_extra_fields(void **state)
{
    zjuchat_request *req = zjuchat_request_new_simple(NULL, "q", NULL);
    assert_int_equal(zjuchat_request_set_temperature(req, 0.5), ZJUCHAT_OK);
    assert_int_equal(zjuchat_request_set_top_p(req, 0.9), ZJUCHAT_OK);
    assert_int_equal(zjuchat_request_set_max_tokens(req, 128), ZJUCHAT_OK);
    assert_int_equal(zjuchat_request_add_stop(req, "END"), ZJUCHAT_OK);
    assert_int_equal(zjuchat_request_add_stop(req, "停"), ZJUCHAT_OK);
    zjuchat_error err;
    assert_int_equal(
        zjuchat_request_set_extra(req, "{\"seed\": 7, \"temperature\": 0.1}", &err),
        ZJUCHAT_OK);
    assert_int_equal(zjuchat_request_set_extra(req, "[1]", &err), ZJUCHAT_ERR_INVALID);
    assert_int_equal(zjuchat_request_set_extra(req, "{\"stream\": true}", &err),
                     ZJUCHAT_ERR_INVALID);
    assert_non_null(strstr(err.message, "stream"));
    assert_int_equal(zjuchat_request_set_extra(req, "{bad json", &err),
                     ZJUCHAT_ERR_INVALID);
    json_t *j = body_of(req, 0);
    assert_true(json_real_value(json_object_get(j, "temperature")) == 0.1);
    assert_true(json_real_value(json_object_get(j, "top_p")) == 0.9);
    assert_int_equal(json_integer_value(json_object_get(j, "max_tokens")), 128);
    assert_int_equal(json_integer_value(json_object_get(j, "seed")), 7);
    assert_int_equal(json_array_size(json_object_get(j, "stop")), 2);
    json_decref(j);
    /* The request is reusable: serialising twice gives the same bytes. */
    char *a = zjuchat_request_to_json(req, 1), *b = zjuchat_request_to_json(req, 1);
    assert_string_equal(a, b);
    free(a);
    free(b);
    zjuchat_request_free(req);
}

/* The exact bytes sent upstream: member order, escapes, reals as jansson
 * writes them (the generator changed from json_dumps to YAJL's; the bytes
 * must not). */
static void body_bytes_are_stable(void **state)
{
    zjuchat_request *r = zjuchat_request_new_simple(
        "deepseek-r1-671b",
        "say \"hi\"\n\t\x01 \xe4\xbd\xa0 \xf0\x9f\x8c\x8d \xe2\x80\xa8", "be brief");
    assert_int_equal(zjuchat_request_set_temperature(r, 0.7), ZJUCHAT_OK);
    assert_int_equal(zjuchat_request_set_max_tokens(r, 1024), ZJUCHAT_OK);
    assert_int_equal(zjuchat_request_add_stop(r, "END"), ZJUCHAT_OK);
    zjuchat_error e;
    assert_int_equal(
        zjuchat_request_set_extra(r,
                                  "{\"seed\": -12345678901234, \"x\": {\"a\": [true, "
                                  "null, 2.5e-300, \"/\\\\\"]}}",
                                  &e),
        ZJUCHAT_OK);
    char *body = zjuchat_request_to_json(r, 1);
    assert_string_equal(
        body,
        "{\"model\":\"deepseek-r1-671b\",\"temperature\":0.69999999999999996,"
        "\"max_tokens\":1024,\"stop\":[\"END\"],\"seed\":-12345678901234,"
        "\"x\":{\"a\":[true,null,2.5e-300,\"/\\\\\"]},\"messages\":[{\"role\":"
        "\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":"
        "\"say \\\"hi\\\"\\n\\t\\u0001 \xe4\xbd\xa0 \xf0\x9f\x8c\x8d \xe2\x80\xa8\"}],"
        "\"stream\":true}");
    free(body);
    zjuchat_request_free(r);
}

/* A whole message as JSON: parts, tool calls and other members go upstream
 * as given, in their order; \u0000 is kept. */
static void message_json_passes_parts_and_members(void **state)
{
    zjuchat_request *r =
        zjuchat_request_new_simple_n("llava-onevision-qwen2-7b-ov", "q", 1, NULL, 0);
    zjuchat_error err;
    const char *parts =
        "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": "
        "\"what is \\u0000 this?\"}, {\"type\": \"image_url\", "
        "\"image_url\": {\"url\": \"data:image/png;base64,iVBO\", "
        "\"detail\": \"low\"}}]}";
    assert_int_equal(zjuchat_request_add_message_json(r, parts, strlen(parts), &err),
                     ZJUCHAT_OK);
    const char *calls =
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
        "\"c1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"arguments\":\"{}\"}}]}";
    assert_int_equal(zjuchat_request_add_message_json(r, calls, strlen(calls), &err),
                     ZJUCHAT_OK);
    /* Not NUL-terminated: only len bytes count. */
    const char tool[] =
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"}XYZ";
    assert_int_equal(zjuchat_request_add_message_json(r, tool, sizeof tool - 4, &err),
                     ZJUCHAT_OK);
    const char *text =
        "{\"content\":\"\xe4\xbd\xa0\",\"role\":\"assistant\",\"name\":\"a\"}";
    assert_int_equal(zjuchat_request_add_message_json(r, text, strlen(text), &err),
                     ZJUCHAT_OK);
    char *body = zjuchat_request_to_json(r, 0);
    assert_string_equal(
        body,
        "{\"model\":\"llava-onevision-qwen2-7b-ov\",\"messages\":["
        "{\"role\":\"user\",\"content\":\"q\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"what is \\u0000 "
        "this?\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,"
        "iVBO\",\"detail\":\"low\"}}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\","
        "\"type\":"
        "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"},"
        "{\"content\":\"\xe4\xbd\xa0\",\"role\":\"assistant\",\"name\":\"a\"}],"
        "\"stream\":false}");
    free(body);
    zjuchat_request_free(r);
}

/* Each wrong shape is refused with a message naming what is wrong, and the
 * request keeps the messages it had. */
static void message_json_refuses_other_shapes(void **state)
{
    static const struct {
        const char *json, *why;
    } cases[] = {
        {"{\"role\":\"user\",\"content\":", "not valid JSON"},
        {"{\"role\":\"user\",\"content\":\"\xff\"}", "not valid JSON"},
        {"{\"role\":\"user\",\"role\":\"system\",\"content\":\"x\"}", "not valid JSON"},
        /* Refused by jansson alone: not taken for out of memory. */
        {"{\"role\":\"user\",\"content\":\"x\",\"n\":1e999}", "not valid JSON"},
        {"{\"role\":\"user\",\"content\":\"x\",\"n\":99999999999999999999}",
         "not valid JSON"},
        {"{\"role\":\"user\",\"content\":\"x\",\"a\\u0000\":1}", "not valid JSON"},
        {"[{\"role\":\"user\",\"content\":\"x\"}]", "must be a JSON object"},
        {"\"hello\"", "must be a JSON object"},
        {"\"hello\" x", "not valid JSON"},
        {"[1] x", "not valid JSON"},
        {"{\"role\":\"user\",\"content\":\"x\"} {", "not valid JSON"},
        {"", "not valid JSON"},
        {"{\"content\":\"x\"}", "role must be"},
        {"{\"role\":\"wizard\",\"content\":\"x\"}", "role must be"},
        {"{\"role\":\"developer\",\"content\":\"x\"}", "role must be"},
        {"{\"role\":5,\"content\":\"x\"}", "role must be"},
        {"{\"role\":\"user\\u0000\",\"content\":\"x\"}", "role must be"},
        {"{\"role\":\"user\"}", "content must be a string or a non-empty array"},
        {"{\"role\":\"user\",\"content\":null}", "content must be"},
        {"{\"role\":\"assistant\",\"content\":null}", "content must be"},
        {"{\"role\":\"assistant\",\"tool_calls\":{}}", "content must be"},
        {"{\"role\":\"user\",\"content\":5}", "content must be"},
        {"{\"role\":\"user\",\"content\":{\"type\":\"text\"}}", "content must be"},
        {"{\"role\":\"user\",\"content\":[]}", "content must be"},
        {"{\"role\":\"user\",\"content\":[\"hi\"]}",
         "content[0] must be an object with a "
         "string \"type\""},
        {"{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"text\":"
         "\"b\"}]}",
         "content[1] must be"},
        {"{\"role\":\"user\",\"content\":[{\"type\":null}]}", "content[0] must be"},
    };
    zjuchat_request *r = zjuchat_request_new_simple(NULL, "q", "s");
    char *before = zjuchat_request_to_json(r, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        zjuchat_error err;
        memset(&err, 0, sizeof err);
        assert_int_equal(zjuchat_request_add_message_json(r, cases[i].json,
                                                          strlen(cases[i].json), &err),
                         ZJUCHAT_ERR_INVALID);
        assert_int_equal(err.code, ZJUCHAT_ERR_INVALID);
        if (!strstr(err.message, cases[i].why))
            fail_msg("%s: got \"%s\", wanted \"%s\"", cases[i].json, err.message,
                     cases[i].why);
    }
    char *after = zjuchat_request_to_json(r, 0);
    assert_string_equal(before, after);
    free(before);
    free(after);
    zjuchat_error err;
    assert_int_equal(zjuchat_request_add_message_json(r, NULL, 0, &err),
                     ZJUCHAT_ERR_INVALID);
    assert_int_equal(zjuchat_request_add_message_json(NULL, "{}", 2, NULL),
                     ZJUCHAT_ERR_INVALID);
    zjuchat_request_free(r);
}

static void redact_replaces_every_occurrence_in_place(void **state)
{
    char buf[] = "key=sk-SECRET and again sk-SECRETsk-SECRET end";
    size_t len = strlen(buf);
    assert_int_equal(zjuchat_redact(buf, len, "sk-SECRET"), 3);
    assert_int_equal(strlen(buf), len);
    assert_null(strstr(buf, "SECRET"));
    assert_string_equal(buf, "key=********* and again ****************** end");
    assert_int_equal(zjuchat_redact(buf, len, ""), 0);
    assert_int_equal(zjuchat_redact(buf, len, NULL), 0);
}

static void escaped_key_in_json_is_masked(void **state)
{
    /* "\u0073k-abc123" decodes to the key: the raw pass cannot see it. */
    const char *raw = "{\"a\":[\"x \\u0073k-abc123 y\"],\"\\u0073k-abc123\":1,\"n\":2}";
    json_t *j = json_loads(raw, 0, NULL);
    assert_non_null(j);
    size_t len = 0;
    char *clean = zjuchat__redact_json(raw, strlen(raw), j, "sk-abc123", &len);
    assert_non_null(clean);
    assert_int_equal(strlen(clean), len);
    assert_null(strstr(clean, "abc123"));
    assert_null(strstr(clean, "\\u0073"));
    json_t *back = json_loads(clean, 0, NULL);
    assert_non_null(back);
    assert_int_equal(json_integer_value(json_object_get(back, "n")), 2);
    assert_non_null(json_object_get(back, "*********"));
    json_decref(back);
    free(clean);
    json_decref(j);
    /* Without escapes there is nothing to do (the raw pass handled it). */
    const char *plain = "{\"a\":\"b\"}";
    j = json_loads(plain, 0, NULL);
    assert_null(zjuchat__redact_json(plain, strlen(plain), j, "sk-abc123", &len));
    json_decref(j);
}

static void key_prefix_cut_by_a_cap_is_masked(void **state)
{
    char buf[] = "error near sk-abc1";
    assert_int_equal(zjuchat__redact_tail(buf, strlen(buf), "sk-abc123"), 7);
    assert_string_equal(buf, "error near *******");
    char short_tail[] = "ends with sk-";
    assert_int_equal(zjuchat__redact_tail(short_tail, strlen(short_tail), "sk-abc123"),
                     0);
}

static void api_message_extracts_and_redacts(void **state)
{
    char out[256];
    const char *json =
        "{\"error\":{\"message\":\"Invalid key sk-abc123\",\"type\":\"x\"}}";
    zjuchat__api_message(json, strlen(json), "application/json", 401, "sk-abc123", out,
                         sizeof out);
    assert_non_null(strstr(out, "401"));
    assert_non_null(strstr(out, "Invalid key"));
    assert_null(strstr(out, "abc123"));

    const char *html = "<html><body><h1>502 Bad Gateway</h1></body></html>";
    zjuchat__api_message(html, strlen(html), "text/html", 502, "k", out, sizeof out);
    assert_non_null(strstr(out, "502"));
    assert_non_null(strstr(out, "text/html"));
    assert_null(strchr(out, '<')); /* no markup relayed */
}

/* Allocation-failure torture: with the Nth JSON allocation failing, for
 * every N, request building either succeeds or reports NOMEM/NULL cleanly
 * (ASan catches leaks and bad frees on those paths). */
static long allocs_left;

static void *failing_malloc(size_t n)
{
    if (allocs_left == 0)
        return NULL;
    if (allocs_left > 0)
        allocs_left--;
    return malloc(n);
}

static void request_building_survives_every_allocation_failure(void **state)
{
    int failures_seen = 0, successes = 0;
    for (long n = 0; n < 200; n++) {
        allocs_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        zjuchat_request *req =
            zjuchat_request_new_simple("deepseek-v3-671b", "问题", "sys");
        char *body = NULL;
        zjuchat_error err;
        if (req) {
            zjuchat_code rc = zjuchat_request_set_extra(req, "{\"seed\": 1}", &err);
            assert_true(rc == ZJUCHAT_OK || rc == ZJUCHAT_ERR_NOMEM ||
                        rc == ZJUCHAT_ERR_INVALID);
            /* Out of memory while parsing a message is NOMEM, never taken
             * for a malformed message. */
            const char *msg = "{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                              "\"text\":\"x\"}]}";
            rc = zjuchat_request_add_message_json(req, msg, strlen(msg), &err);
            assert_true(rc == ZJUCHAT_OK || rc == ZJUCHAT_ERR_NOMEM);
            body = zjuchat_request_to_json(req, 1);
        }
        json_set_alloc_funcs(malloc, free);
        if (body) {
            json_t *j = json_loads(body, 0, NULL);
            assert_non_null(j); /* whatever came out is valid JSON */
            json_decref(j);
            successes++;
        } else {
            failures_seen++;
        }
        free(body);
        zjuchat_request_free(req);
    }
    assert_true(failures_seen > 0);
    assert_true(successes > 0);
}

static void error_names_are_stable(void **state)
{
    assert_string_equal(zjuchat_strerror(ZJUCHAT_ERR_NETWORK), "network error");
    assert_string_equal(zjuchat_strerror(ZJUCHAT_ERR_TIMEOUT), "timeout");
    assert_string_equal(zjuchat_detail_name(ZJUCHAT_TIMEOUT_FIRST_BYTE), "first-byte");
    assert_string_equal(zjuchat_detail_name(ZJUCHAT_NET_TLS), "tls");
    assert_non_null(zjuchat_strerror((zjuchat_code)99));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(simple_without_system_has_one_message),
        cmocka_unit_test(simple_with_system_puts_it_first),
        cmocka_unit_test(escaping_and_unicode_round_trip),
        cmocka_unit_test(nul_inside_texts_is_sent_as_u0000),
        cmocka_unit_test(invalid_utf8_and_roles_are_refused),
        cmocka_unit_test(sampling_and_extra_fields),
        cmocka_unit_test(body_bytes_are_stable),
        cmocka_unit_test(message_json_passes_parts_and_members),
        cmocka_unit_test(message_json_refuses_other_shapes),
        cmocka_unit_test(redact_replaces_every_occurrence_in_place),
        cmocka_unit_test(api_message_extracts_and_redacts),
        cmocka_unit_test(escaped_key_in_json_is_masked),
        cmocka_unit_test(key_prefix_cut_by_a_cap_is_masked),
        cmocka_unit_test(error_names_are_stable),
        cmocka_unit_test(request_building_survives_every_allocation_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
