/*
 * test_scan_library.c - what the event check (scan.c) decides, seen through
 * the library's evented calls against a scripted upstream (rawupstream.h):
 * which events reach on_chunk, the key masked as is and behind escapes,
 * the texts the accessors give without a tree, and an error body that hides
 * the key withheld.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <stdio.h>

#include "rawupstream.h"
#include "zjuchat.h"

#define KEY "sk-scan-library-SECRET-0123"
#define ESCAPED_KEY "\\u0073k-scan-library-SECRET-0123"

struct seen {
    int done, chunks;
    zjuchat_error err;
    zjuchat_call_stats stats;
    char data[4096]; /* chunk bytes, one per line */
    size_t data_len;
    char texts[1024]; /* content and reasoning of each chunk, "c:...|r:...\n" */
    size_t texts_len;
    char content[256];
    size_t content_len;
    int content_null;
    int error_body_null;
    char body[1024]; /* a whole answer's bytes */
};

static void add_text(struct seen *s, const char *tag, const char *t, size_t n)
{
    int w = snprintf(s->texts + s->texts_len, sizeof s->texts - s->texts_len, "%s%.*s|",
                     tag, t ? (int)n : 4, t ? t : "NULL");
    if (w > 0)
        s->texts_len += (size_t)w;
}

static int on_chunk(zjuchat_call *call, const zjuchat_chunk *chunk, void *ud)
{
    struct seen *s = ud;
    size_t len, n = 0;
    const char *d = zjuchat_chunk_data(chunk, &len);
    s->chunks++;
    if (s->data_len + len + 1 < sizeof s->data) {
        memcpy(s->data + s->data_len, d, len);
        s->data_len += len;
        s->data[s->data_len++] = '\n';
        s->data[s->data_len] = '\0';
    }
    const char *c = zjuchat_chunk_content(chunk, &n);
    add_text(s, "c:", c, n);
    const char *r = zjuchat_chunk_reasoning(chunk, &n);
    add_text(s, "r:", r, n);
    if (s->texts_len < sizeof s->texts - 1)
        s->texts[s->texts_len++] = '\n';
    s->texts[s->texts_len] = '\0';
    return 0;
}

static void on_done(zjuchat_call *call, const zjuchat_error *err,
                    const zjuchat_response *resp, void *ud)
{
    struct seen *s = ud;
    s->done++;
    s->err = *err;
    zjuchat_call_get_stats(call, &s->stats);
    if (resp) {
        size_t n = 0;
        const char *c = zjuchat_response_content(resp, &n);
        s->content_null = c == NULL;
        if (c && n < sizeof s->content) {
            memcpy(s->content, c, n);
            s->content_len = n;
        }
        const char *b = zjuchat_response_body(resp, &n);
        if (b && n < sizeof s->body)
            memcpy(s->body, b, n);
    }
    s->error_body_null = zjuchat_call_error_body(call, NULL) == NULL;
}

/* One call to a scripted upstream that answers with reply. */
static void call_once(const char *reply, int stream, struct seen *s)
{
    const char *replies[1] = {reply};
    struct scripted *u = scripted_start(replies, 1);
    assert_non_null(u);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", u->port);
    zjuchat_error err;
    zjuchat_client *client = zjuchat_client_new(KEY, url, &err);
    assert_non_null(client);
    zjuchat_client_set_retries(client, 0, 0);
    struct event_base *base = event_base_new();
    assert_int_equal(zjuchat_client_use_event_base(client, base), ZJUCHAT_OK);
    zjuchat_callbacks cb = {NULL, on_chunk, on_done};
    const char *body = stream ? "{\"model\":\"m\",\"stream\":true,\"messages\":[]}"
                              : "{\"model\":\"m\",\"messages\":[]}";
    zjuchat_call *call =
        zjuchat_call_start_raw(client, "chat/completions", body, strlen(body),
                               stream ? ZJUCHAT_CALL_STREAM : 0, &cb, s, &err);
    assert_non_null(call);
    while (!s->done)
        event_base_loop(base, EVLOOP_ONCE);
    zjuchat_client_free(client);
    event_base_free(base);
    scripted_stop(u);
}

static char *http_reply(const char *status, const char *type, const char *body)
{
    static char buf[8192];
    snprintf(buf, sizeof buf,
             "HTTP/1.1 %s\r\nContent-Type: %s\r\nConnection: close\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             status, type, strlen(body), body);
    return buf;
}

/* An error body that hides the key behind escapes is withheld when it
 * cannot be re-serialised: also when the fault is a byte of invalid UTF-8
 * after the key (the check once gave up before reading any string). */
static void error_body_hiding_the_key_is_withheld(void **state)
{
    static const char *const bodies[] = {
        "{\"error\":{\"message\":\"bad key " ESCAPED_KEY "\",\"x\":\"\xff\"}}",
        "{\"error\":{\"message\":\"bad key " ESCAPED_KEY "\"}}\xc0\xaf",
        "{\"error\":{\"message\":\"bad key " ESCAPED_KEY "\"}} oops",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        struct seen s = {0};
        call_once(http_reply("400 Bad Request", "application/json", bodies[i]), 0, &s);
        assert_int_equal(s.err.code, ZJUCHAT_ERR_API);
        if (!s.error_body_null)
            fail_msg("body %zu: handed out with the key behind escapes", i);
        assert_null(strstr(s.err.message, "SECRET"));
    }
}

#define CHUNK(delta) "data: {\"choices\":[{\"index\":0,\"delta\":" delta "}]}\n\n"

/* Events jansson refuses are skipped as not JSON, the others reach
 * on_chunk with the key masked; the accessors read the texts. */
static void stream_events_are_checked_as_jansson_reads_them(void **state)
{
    static const char body[] = CHUNK("{\"content\":\"a\\nb\"}") /* delivered */
        CHUNK("{\"content\":\"\\ud800\"}")         /* lone surrogate: skipped */
        CHUNK("{\"content\":\"x\",\"\\u0000\":1}") /* \u0000 in a key: skipped */
        CHUNK("{\"content\":\"echo " KEY "\"}")    /* masked as is */
        CHUNK("{\"reasoning_content\":\"" ESCAPED_KEY "\"}") /* masked escaped */
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"
        "\"big\":123456789012345678901234567890}\n\n"
        "data: [DONE]\n\n";
    struct seen s = {0};
    char reply[4096];
    snprintf(reply, sizeof reply,
             "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    call_once(reply, 1, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_int_equal(s.chunks, 4);
    assert_int_equal(s.stats.skipped, 2);
    assert_null(strstr(s.data, "SECRET"));
    assert_null(strstr(s.data, "\\u0073k-"));
    assert_non_null(strstr(s.data, "echo ***************************"));
    assert_string_equal(s.texts, "c:a\nb|r:NULL|\n"
                                 "c:echo ***************************|r:NULL|\n"
                                 "c:NULL|r:***************************|\n"
                                 "c:NULL|r:NULL|\n");
}

/* A whole answer's content, read from the scan's span: decoded, NUL kept. */
static void answer_content_is_decoded_without_a_tree(void **state)
{
    struct seen s = {0};
    call_once(http_reply("200 OK", "application/json",
                         "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":"
                         "\"\\u4f60\\u597d\\n\\u0000!\"}}]}"),
              0, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_false(s.content_null);
    assert_int_equal(s.content_len, 3 + 3 + 1 + 1 + 1);
    assert_memory_equal(s.content, "\xe4\xbd\xa0\xe5\xa5\xbd\n\0!", 9);
}

/* A whole answer that echoes the key as is: masked in its bytes and in
 * the text the accessor decodes (the body is searched only when the scan
 * says its bytes may hold the key). */
static void answer_echoing_the_key_is_masked(void **state)
{
    struct seen s = {0};
    call_once(http_reply("200 OK", "application/json",
                         "{\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":"
                         "\"echo " KEY "\"}}],\"" KEY "\":1}"),
              0, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_null(strstr(s.body, "SECRET"));
    assert_non_null(strstr(s.body, "\"echo ***************************\""));
    assert_string_equal(s.content, "echo ***************************");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(error_body_hiding_the_key_is_withheld),
        cmocka_unit_test(stream_events_are_checked_as_jansson_reads_them),
        cmocka_unit_test(answer_content_is_decoded_without_a_tree),
        cmocka_unit_test(answer_echoing_the_key_is_masked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
