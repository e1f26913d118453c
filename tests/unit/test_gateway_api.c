/*
 * test_gateway_api.c - what a gateway needs from libzjuchat, end to end
 * against the bundled mock (and, where the mock cannot say it, a scripted
 * upstream): raw bodies relayed byte for byte to a chosen path, raw stream
 * events, [DONE] handed through on request, cancel and pause on raw streams,
 * the evented model listing, and upstream error bodies handed back with the
 * key masked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

#include "mockproc.h"
#include "rawupstream.h"
#include "zjuchat.h"

#define KEY "sk-unit-SECRET-77aa"

static struct mockproc mock;

static int setup(void **state)
{
    const char *args[] = {"--key", KEY, NULL};
    return mock_start(&mock, args);
}

static int teardown(void **state)
{
    return mock_stop(&mock);
}

/* What a call's callbacks saw; the chunks' bytes are copied, one per line. */
struct seen {
    int done;
    zjuchat_error err;
    long status;
    char body[8192];
    size_t body_len;
    char error_body[8192];
    size_t error_body_len;
    size_t error_body_full_len;
    int error_body_null;
    char content_type[96];
    int chunks;
    int done_chunks; /* zjuchat_chunk_is_done */
    int last_was_done;
    char data[8192]; /* chunk bytes, each followed by '\n' */
    size_t data_len;
    zjuchat_call_stats stats;
    zjuchat_call *call;
    /* behaviour */
    int cancel_at;        /* zjuchat_call_cancel from on_chunk at this chunk */
    int pause_at;         /* zjuchat_call_pause from on_chunk at this chunk */
    int chunks_at_pause;  /* chunks seen when the pause began */
    struct event *resume; /* resumes the call */
};

static int on_chunk(zjuchat_call *call, const zjuchat_chunk *chunk, void *ud)
{
    struct seen *s = ud;
    size_t len;
    const char *d = zjuchat_chunk_data(chunk, &len);
    s->chunks++;
    s->last_was_done = zjuchat_chunk_is_done(chunk);
    if (s->last_was_done) {
        s->done_chunks++;
        assert_null(zjuchat_chunk_content(chunk, NULL));
        assert_null(zjuchat_chunk_finish_reason(chunk));
        assert_int_equal(zjuchat_chunk_usage(chunk, NULL, NULL, NULL), -1);
    }
    if (s->data_len + len + 1 < sizeof s->data) {
        memcpy(s->data + s->data_len, d, len);
        s->data_len += len;
        s->data[s->data_len++] = '\n';
        s->data[s->data_len] = '\0';
    }
    if (s->cancel_at && s->chunks == s->cancel_at)
        zjuchat_call_cancel(call);
    if (s->pause_at && s->chunks == s->pause_at) {
        zjuchat_call_pause(call);
        s->chunks_at_pause = s->chunks;
        struct timeval tv = {0, 300 * 1000};
        evtimer_add(s->resume, &tv);
    }
    return 0;
}

static void on_done(zjuchat_call *call, const zjuchat_error *err,
                    const zjuchat_response *resp, void *ud)
{
    struct seen *s = ud;
    s->done++;
    s->err = *err;
    zjuchat_call_get_stats(call, &s->stats);
    snprintf(s->content_type, sizeof s->content_type, "%s",
             zjuchat_call_content_type(call));
    if (resp) {
        size_t len;
        const char *b = zjuchat_response_body(resp, &len);
        s->status = zjuchat_response_status(resp);
        s->body_len = len < sizeof s->body - 1 ? len : sizeof s->body - 1;
        memcpy(s->body, b, s->body_len);
        s->body[s->body_len] = '\0';
    }
    size_t elen = 12345;
    const char *eb = zjuchat_call_error_body(call, &elen);
    s->error_body_null = eb == NULL;
    s->error_body_full_len = elen;
    if (eb) {
        s->error_body_len =
            elen < sizeof s->error_body - 1 ? elen : sizeof s->error_body - 1;
        memcpy(s->error_body, eb, s->error_body_len);
        s->error_body[s->error_body_len] = '\0';
    } else {
        assert_int_equal(elen, 0);
    }
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct seen *s = arg;
    /* Nothing new reached on_chunk while paused (events are 50 ms apart). */
    assert_int_equal(s->chunks, s->chunks_at_pause);
    zjuchat_call_resume(s->call);
}

struct env {
    struct event_base *base;
    zjuchat_client *client;
};

static struct env env_new(const char *url)
{
    struct env e;
    zjuchat_error err;
    e.base = event_base_new();
    e.client = zjuchat_client_new(KEY, url, &err);
    assert_non_null(e.client);
    zjuchat_client_set_retries(e.client, 0, 0);
    assert_int_equal(zjuchat_client_use_event_base(e.client, e.base), ZJUCHAT_OK);
    return e;
}

static void env_free(struct env *e)
{
    zjuchat_client_free(e->client);
    event_base_free(e->base);
}

static void run_until_done(struct env *e, struct seen *s)
{
    long t0 = now_ms();
    while (!s->done && now_ms() - t0 < 10000)
        event_base_loop(e->base, EVLOOP_ONCE);
    assert_int_equal(s->done, 1);
}

static const zjuchat_callbacks callbacks = {NULL, on_chunk, on_done};

/* Start a raw call and run it to its end. */
static void raw(struct env *e, const char *path, const char *body, unsigned flags,
                struct seen *s)
{
    zjuchat_error err;
    s->call = zjuchat_call_start_raw(e->client, path, body, strlen(body), flags,
                                     &callbacks, s, &err);
    assert_non_null(s->call);
    run_until_done(e, s);
}

/* The last request the mock received, as {method, path, headers, body}. */
static json_t *mock_last(void)
{
    json_t *j = mock_control(&mock, "/_mock/last", NULL);
    assert_non_null(j);
    return j;
}

/* Spacing, member order, escapes and number spellings that any rebuild of
 * the body (parse, then serialise) would change. */
static const char odd_body[] =
    "{ \"messages\" : [ {\"content\":\"h\\u00e9llo \\/ 你好 \\ud83d\\ude00\",\n"
    "  \"role\":\"user\"} ],\t\"temperature\": 1.50e0, \"x_unknown\": [1, {}],"
    " \"model\" : \"deepseek-v3-671b#events=2\", \"stream\" : false }";

static void raw_body_reaches_upstream_byte_for_byte(void **state)
{
    struct env e = env_new(mock.base);
    struct seen s = {0};
    raw(&e, "chat/completions", odd_body, 0, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_int_equal(s.status, 200);
    assert_non_null(strstr(s.body, "\"object\":\"chat.completion\""));
    assert_string_equal(s.content_type, "application/json");
    json_t *last = mock_last();
    assert_string_equal(json_string_value(json_object_get(last, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(last, "path")),
                        "/v1/chat/completions");
    json_t *body = json_object_get(last, "body");
    assert_int_equal(json_string_length(body), strlen(odd_body));
    assert_memory_equal(json_string_value(body), odd_body, strlen(odd_body));
    json_t *h = json_object_get(last, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "content-type")),
                        "application/json");
    assert_string_equal(json_string_value(json_object_get(h, "accept")),
                        "application/json");
    json_decref(last);

    /* A leading '/' changes nothing; the body is sent again on a retry. */
    zjuchat_client_set_retries(e.client, 1, 10);
    json_decref(mock_control(&mock, "/_mock/reset-stats", "{}"));
    json_decref(
        mock_control(&mock, "/_mock/config", "{\"fail_next\":1,\"fail_status\":503}"));
    memset(&s, 0, sizeof s);
    raw(&e, "/chat/completions", odd_body, 0, &s);
    json_decref(mock_control(&mock, "/_mock/config", "{\"reset\":true}"));
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_int_equal(s.stats.retries, 1);
    assert_int_equal(mock_stat(&mock, "chat_requests"), 2);
    last = mock_last();
    assert_string_equal(json_string_value(json_object_get(last, "path")),
                        "/v1/chat/completions");
    body = json_object_get(last, "body");
    assert_memory_equal(json_string_value(body), odd_body, strlen(odd_body));
    json_decref(last);

    /* Only body_len bytes go out: what follows in the buffer does not. */
    static const char longer[] = "{\"model\":\"deepseek-v3-671b\",\"messages\":"
                                 "[{\"role\":\"user\",\"content\":\"hi\"}]}TRAILING";
    memset(&s, 0, sizeof s);
    zjuchat_error err;
    s.call = zjuchat_call_start_raw(e.client, "chat/completions", longer,
                                    sizeof longer - 1 - 8, 0, &callbacks, &s, &err);
    assert_non_null(s.call);
    run_until_done(&e, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    last = mock_last();
    assert_string_equal(json_string_value(json_object_get(last, "body")),
                        "{\"model\":\"deepseek-v3-671b\",\"messages\":"
                        "[{\"role\":\"user\",\"content\":\"hi\"}]}");
    json_decref(last);
    env_free(&e);
}

#define EV1 "{ \"id\":\"c1\", \"choices\":[{\"delta\":{\"content\":\"\\u4f60\"}}] }"
#define EV2                                                                              \
    "{\"choices\":[{\"finish_reason\":\"stop\",\"delta\":{}}],\"usage\":{"               \
    "\"total_tokens\":3,\"prompt_tokens\":1,\"completion_tokens\":2}}"

static void raw_stream_chunks_are_the_events_bytes(void **state)
{
    /* The mock's events are compact JSON, which a rebuild would reproduce:
     * this upstream's are not. */
    static const char sse[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                              "Connection: close\r\n\r\n"
                              ": keep-alive\n\n"
                              "data: " EV1 "\n\n"
                              "data: not json\n\n"
                              "data:" EV2 "\r\n\r\n"
                              "data: [DONE]\n\n";
    static const char *const replies[] = {sse};
    struct scripted *u = scripted_start(replies, 1);
    assert_non_null(u);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", u->port);
    struct env e = env_new(url);
    struct seen s = {0};
    raw(&e, "chat/completions", "{\"stream\":true}", ZJUCHAT_CALL_STREAM, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_int_equal(s.chunks, 2);
    assert_string_equal(s.data, EV1 "\n" EV2 "\n");
    assert_int_equal(s.stats.events, 2);
    assert_int_equal(s.stats.skipped, 1);
    assert_int_equal(s.stats.saw_done, 1);
    assert_int_equal(s.done_chunks, 0);
    assert_string_equal(s.content_type, "text/event-stream");
    env_free(&e);
    scripted_stop(u);

    /* Against the mock: the request asks for an event stream. */
    e = env_new(mock.base);
    memset(&s, 0, sizeof s);
    raw(&e, "chat/completions",
        "{\"model\":\"deepseek-v3-671b#events=3\",\"stream\":true,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
        ZJUCHAT_CALL_STREAM, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_int_equal(s.chunks, 5); /* role + 3 + finish */
    json_t *last = mock_last();
    json_t *h = json_object_get(last, "headers");
    assert_string_equal(json_string_value(json_object_get(h, "accept")),
                        "text/event-stream");
    json_decref(last);
    env_free(&e);
}

static const char stream_body[] =
    "{\"model\":\"deepseek-v3-671b#events=3\",\"stream\":true,"
    "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

static void done_is_handed_through_only_when_asked(void **state)
{
    struct env e = env_new(mock.base);
    struct seen s = {0};
    raw(&e, "chat/completions", stream_body, ZJUCHAT_CALL_STREAM, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_int_equal(s.chunks, 5);
    assert_int_equal(s.done_chunks, 0);
    assert_int_equal(s.stats.saw_done, 1);

    memset(&s, 0, sizeof s);
    raw(&e, "chat/completions", stream_body, ZJUCHAT_CALL_STREAM | ZJUCHAT_CALL_PASS_DONE,
        &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_int_equal(s.chunks, 6);
    assert_int_equal(s.done_chunks, 1);
    assert_true(s.last_was_done);
    assert_int_equal(s.stats.events, 5); /* the marker is not an event */
    /* The marker's bytes come last. */
    assert_true(s.data_len > 7);
    assert_string_equal(s.data + s.data_len - 7, "[DONE]\n");

    /* No [DONE] from upstream: none is made up. */
    memset(&s, 0, sizeof s);
    raw(&e, "chat/completions",
        "{\"model\":\"deepseek-v3-671b#events=3,fault=no_done\",\"stream\":true,"
        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
        ZJUCHAT_CALL_STREAM | ZJUCHAT_CALL_PASS_DONE, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_int_equal(s.done_chunks, 0);
    assert_int_equal(s.stats.saw_done, 0);
    env_free(&e);
}

static void stream_done(zjuchat_call *call, const zjuchat_error *err,
                        const zjuchat_response *resp, void *ud)
{
    struct seen *s = ud;
    s->done++;
    s->err = *err;
    zjuchat_call_get_stats(call, &s->stats);
}

/* zjuchat_call_stats.saw_done was documented ("upstream sent [DONE]") and
 * never set: a gateway that appends its own [DONE] when the upstream sent
 * none (or that checks a stream ended properly) read 0 for every stream. */
static void call_stats_say_whether_done_came(void **state)
{
    struct env e = env_new(mock.base);
    zjuchat_callbacks cb = {NULL, NULL, stream_done};
    zjuchat_error err;
    const char *models[] = {"deepseek-v3-671b#events=2", "deepseek-v3-671b#events=2,"
                                                         "fault=no_done"};
    for (int i = 0; i < 2; i++) {
        struct seen s = {0};
        zjuchat_request *req = zjuchat_request_new_simple(models[i], "hi", NULL);
        assert_non_null(zjuchat_call_start(e.client, req, 1, &cb, &s, &err));
        zjuchat_request_free(req);
        run_until_done(&e, &s);
        assert_int_equal(s.err.code, ZJUCHAT_OK);
        assert_int_equal(s.stats.events, 4);
        assert_int_equal(s.stats.saw_done, i == 0);
    }
    env_free(&e);
}

static long wait_stat(const char *name, long want)
{
    long v = -1, t0 = now_ms();
    while ((v = mock_stat(&mock, name)) != want && now_ms() - t0 < 3000)
        usleep(20 * 1000);
    return v;
}

static void cancel_mid_stream_closes_the_upstream_connection(void **state)
{
    static const char slow[] = "{\"model\":\"deepseek-v3-671b#events=50,delay=50\","
                               "\"stream\":true,\"messages\":[{\"role\":\"user\","
                               "\"content\":\"hi\"}]}";
    struct env e = env_new(mock.base);
    json_decref(mock_control(&mock, "/_mock/reset-stats", "{}"));
    /* From inside on_chunk. */
    struct seen s = {0};
    s.cancel_at = 3;
    raw(&e, "chat/completions", slow, ZJUCHAT_CALL_STREAM, &s);
    assert_int_equal(s.err.code, ZJUCHAT_ERR_CANCELLED);
    assert_int_equal(s.chunks, 3);
    assert_int_equal(wait_stat("streams_active", 0), 0);
    assert_int_equal(wait_stat("connections_closed_by_client", 1), 1);

    /* From outside every callback: on_done runs before cancel returns. */
    memset(&s, 0, sizeof s);
    zjuchat_error err;
    s.call = zjuchat_call_start_raw(e.client, "chat/completions", slow, strlen(slow),
                                    ZJUCHAT_CALL_STREAM, &callbacks, &s, &err);
    assert_non_null(s.call);
    long t0 = now_ms();
    while (s.chunks < 2 && now_ms() - t0 < 5000)
        event_base_loop(e.base, EVLOOP_ONCE);
    assert_int_equal(mock_stat(&mock, "streams_active"), 1);
    zjuchat_call_cancel(s.call);
    assert_int_equal(s.done, 1);
    assert_int_equal(s.err.code, ZJUCHAT_ERR_CANCELLED);
    assert_int_equal(wait_stat("streams_active", 0), 0);
    assert_int_equal(wait_stat("connections_closed_by_client", 2), 2);
    env_free(&e);
}

static void pause_and_resume_a_raw_stream(void **state)
{
    static const char paced[] = "{\"model\":\"deepseek-v3-671b#events=8,delay=50\","
                                "\"stream\":true,\"messages\":[{\"role\":\"user\","
                                "\"content\":\"hi\"}]}";
    struct env e = env_new(mock.base);
    zjuchat_client_set_timeout(e.client, ZJUCHAT_TIMEOUT_OPT_IDLE, 200);
    struct seen s = {0};
    s.pause_at = 2;
    s.resume = evtimer_new(e.base, on_resume, &s);
    /* Paused for 300 ms, past the 200 ms idle timeout: a pause is not
     * upstream silence. */
    raw(&e, "chat/completions", paced, ZJUCHAT_CALL_STREAM | ZJUCHAT_CALL_PASS_DONE, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_int_equal(s.chunks, 11); /* role + 8 + finish + [DONE] */
    assert_int_equal(s.done_chunks, 1);
    event_free(s.resume);
    env_free(&e);
}

static void models_listing_evented(void **state)
{
    struct env e = env_new(mock.base);
    struct seen s = {0};
    zjuchat_error err;
    zjuchat_callbacks cb = {NULL, NULL, on_done};
    /* The model accessors read the response inside on_done. */
    s.call = zjuchat_models_start(e.client, &cb, &s, &err);
    assert_non_null(s.call);
    run_until_done(&e, &s);
    assert_int_equal(s.err.code, ZJUCHAT_OK);
    assert_int_equal(s.status, 200);
    assert_non_null(strstr(s.body, "\"object\":\"list\""));
    assert_non_null(strstr(s.body, "\"deepseek-r1-671b\""));
    assert_true(s.error_body_null);

    /* Cancelled before any answer: on_done at once, CANCELLED. */
    memset(&s, 0, sizeof s);
    s.call = zjuchat_models_start(e.client, &cb, &s, &err);
    assert_non_null(s.call);
    zjuchat_call_cancel(s.call);
    assert_int_equal(s.done, 1);
    assert_int_equal(s.err.code, ZJUCHAT_ERR_CANCELLED);

    env_free(&e);

    /* The client's timeouts apply: an upstream that takes the connection
     * (the kernel does, from the listen backlog) and never answers. */
    int port;
    int lfd = listen_loopback(&port);
    assert_true(lfd >= 0);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", port);
    e = env_new(url);
    zjuchat_client_set_timeout(e.client, ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE, 300);
    memset(&s, 0, sizeof s);
    long t0 = now_ms();
    s.call = zjuchat_models_start(e.client, &cb, &s, &err);
    assert_non_null(s.call);
    run_until_done(&e, &s);
    assert_int_equal(s.err.code, ZJUCHAT_ERR_TIMEOUT);
    assert_int_equal(s.err.detail, ZJUCHAT_TIMEOUT_FIRST_BYTE);
    assert_true(now_ms() - t0 >= 250);
    env_free(&e);
    close(lfd);

    /* A wrong key: the upstream's 401 body, for the caller to pass on. */
    struct event_base *base = event_base_new();
    zjuchat_client *c = zjuchat_client_new("sk-wrong-0123456789", mock.base, &err);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    struct env w = {base, c};
    memset(&s, 0, sizeof s);
    s.call = zjuchat_models_start(c, &cb, &s, &err);
    assert_non_null(s.call);
    run_until_done(&w, &s);
    assert_int_equal(s.err.code, ZJUCHAT_ERR_API);
    assert_int_equal(s.err.http_status, 401);
    assert_non_null(strstr(s.error_body, "invalid_api_key"));
    env_free(&w);
}

struct model_list {
    int done;
    size_t count;
    int found;
};

static void models_done(zjuchat_call *call, const zjuchat_error *err,
                        const zjuchat_response *resp, void *ud)
{
    struct model_list *l = ud;
    l->done = 1;
    l->count = zjuchat_response_model_count(resp);
    for (size_t i = 0; i < l->count; i++)
        l->found |= strcmp(zjuchat_response_model_id(resp, i), "deepseek-r1-671b") == 0;
}

static void models_listing_gives_the_parsed_list(void **state)
{
    struct env e = env_new(mock.base);
    struct model_list l = {0};
    zjuchat_error err;
    zjuchat_callbacks cb = {NULL, NULL, models_done};
    assert_non_null(zjuchat_models_start(e.client, &cb, &l, &err));
    long t0 = now_ms();
    while (!l.done && now_ms() - t0 < 5000)
        event_base_loop(e.base, EVLOOP_ONCE);
    assert_int_equal(l.count, 8); /* as zjuchat_list_models sees it */
    assert_true(l.found);
    env_free(&e);
}

static const char req400[] = "{\"model\":\"deepseek-r1-671b#status=400,echo_key=1\","
                             "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

static void error_bodies_are_handed_back_without_the_key(void **state)
{
    struct env e = env_new(mock.base);
    /* 400 with the key echoed in the message: masked in place, so the body
     * keeps its length and stays valid JSON. */
    struct seen s = {0};
    raw(&e, "chat/completions", req400, 0, &s);
    assert_int_equal(s.err.code, ZJUCHAT_ERR_API);
    assert_int_equal(s.err.http_status, 400);
    assert_false(s.error_body_null);
    assert_null(strstr(s.error_body, "SECRET"));
    assert_null(strstr(s.err.message, "SECRET"));
    assert_non_null(strstr(s.error_body, "Bearer *******************"));
    json_t *j = json_loadb(s.error_body, s.error_body_len, 0, NULL);
    assert_non_null(j);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "error"), "type")),
        "invalid_request_error");
    json_decref(j);
    assert_string_equal(s.content_type, "application/json");

    /* The same for a stream request. */
    memset(&s, 0, sizeof s);
    raw(&e, "chat/completions", req400, ZJUCHAT_CALL_STREAM, &s);
    assert_int_equal(s.err.http_status, 400);
    assert_int_equal(s.chunks, 0);
    assert_null(strstr(s.error_body, "SECRET"));
    assert_non_null(strstr(s.error_body, "mock: injected status 400"));

    /* 404 for an unknown model, in OpenAI's shape. */
    memset(&s, 0, sizeof s);
    raw(&e, "chat/completions",
        "{\"model\":\"no-such-model\",\"messages\":[{\"role\":\"user\","
        "\"content\":\"hi\"}]}",
        0, &s);
    assert_int_equal(s.err.http_status, 404);
    assert_non_null(strstr(s.error_body, "\"code\":\"model_not_found\""));

    /* The path is the caller's: one the mock does not serve is its 404. */
    memset(&s, 0, sizeof s);
    raw(&e, "audio/speech", "{\"input\":\"hi\",\"model\":\"m\"}", 0, &s);
    assert_int_equal(s.err.http_status, 404);
    assert_non_null(strstr(s.error_body, "Unknown URL: /v1/audio/speech"));

    /* An HTML error page comes back as it is, with its type. */
    memset(&s, 0, sizeof s);
    raw(&e, "chat/completions",
        "{\"model\":\"deepseek-r1-671b#status=502,body=html\",\"messages\":[]}", 0, &s);
    assert_int_equal(s.err.http_status, 502);
    assert_string_equal(s.content_type, "text/html");
    assert_non_null(strstr(s.error_body, "<html>"));

    /* A long error body comes back cut at 64 KiB, the key still masked. */
    memset(&s, 0, sizeof s);
    raw(&e, "chat/completions",
        "{\"model\":\"deepseek-r1-671b#fault=big_error\",\"messages\":[]}", 0, &s);
    assert_int_equal(s.err.http_status, 500);
    assert_false(s.error_body_null);
    assert_int_equal(s.error_body_len, sizeof s.error_body - 1); /* our copy's cap */
    assert_int_equal(s.error_body_full_len, 64 * 1024);

    /* An empty error body is "", not NULL. */
    memset(&s, 0, sizeof s);
    raw(&e, "chat/completions",
        "{\"model\":\"deepseek-r1-671b#status=422,body=empty\",\"messages\":[]}", 0, &s);
    assert_int_equal(s.err.http_status, 422);
    assert_false(s.error_body_null);
    assert_int_equal(s.error_body_len, 0);

    /* Errors that are not the upstream's answer have no body. */
    memset(&s, 0, sizeof s);
    zjuchat_client_set_timeout(e.client, ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE, 200);
    raw(&e, "chat/completions",
        "{\"model\":\"deepseek-r1-671b#fault=hang_headers\",\"messages\":[]}", 0, &s);
    assert_int_equal(s.err.code, ZJUCHAT_ERR_TIMEOUT);
    assert_true(s.error_body_null);
    env_free(&e);
}

/* An upstream that echoes the key JSON-escaped: a gateway that relays the
 * body would hand it to a browser, whose JSON.parse decodes it back. */
#define ESCAPED_KEY "\\u0073k-unit-SECRET-77aa"

static void escaped_key_in_an_error_body_is_masked(void **state)
{
    static const char json_body[] =
        "{\"error\":{\"message\":\"bad key " ESCAPED_KEY "\",\"code\":1}}";
    static const char broken_body[] = "{\"error\":{\"message\":\"" ESCAPED_KEY "\" oops";
    /* Static: the upstream thread reads them until scripted_stop. */
    static char json_reply[512], broken_reply[512];
    static const char *const replies[] = {json_reply, broken_reply};
    snprintf(json_reply, sizeof json_reply,
             "HTTP/1.1 422 Unprocessable\r\nContent-Type: application/json\r\n"
             "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(json_body), json_body);
    snprintf(broken_reply, sizeof broken_reply,
             "HTTP/1.1 400 Bad\r\nContent-Type: application/json\r\n"
             "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(broken_body), broken_body);
    struct scripted *u = scripted_start(replies, 2);
    assert_non_null(u);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", u->port);
    struct env e = env_new(url);
    struct seen s = {0};
    raw(&e, "chat/completions", "{}", 0, &s);
    assert_int_equal(s.err.http_status, 422);
    assert_false(s.error_body_null);
    json_t *j = json_loadb(s.error_body, s.error_body_len, 0, NULL);
    assert_non_null(j);
    const char *msg =
        json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    assert_non_null(msg);
    assert_null(strstr(msg, "SECRET"));
    assert_string_equal(msg, "bad key *******************");
    json_decref(j);

    /* Not valid JSON, so it cannot be re-serialised: withheld. */
    memset(&s, 0, sizeof s);
    raw(&e, "chat/completions", "{}", 0, &s);
    assert_int_equal(s.err.code, ZJUCHAT_ERR_API);
    assert_int_equal(s.err.http_status, 400);
    assert_true(s.error_body_null);
    assert_null(strstr(s.err.message, "SECRET"));
    env_free(&e);
    scripted_stop(u);
}

static void bad_arguments_are_refused(void **state)
{
    zjuchat_error err;
    zjuchat_callbacks cb = {NULL, on_chunk, on_done};
    struct seen s = {0};
    /* Not bound to an event base. */
    zjuchat_client *plain = zjuchat_client_new(KEY, mock.base, &err);
    assert_null(
        zjuchat_call_start_raw(plain, "chat/completions", "{}", 2, 0, &cb, &s, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_INVALID);
    assert_non_null(strstr(err.message, "event base"));
    assert_null(zjuchat_models_start(plain, &cb, &s, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_INVALID);
    zjuchat_client_free(plain);

    struct env e = env_new(mock.base);
    static const char *const bad_paths[] = {"",
                                            "/",
                                            "../models",
                                            "chat/../../admin",
                                            "a/./b",
                                            "%2e%2E/x",
                                            "a/.%2e",
                                            "chat completions",
                                            "chat/completions#x",
                                            "chat\r\nX: y",
                                            "caf\xc3\xa9",
                                            "a\\b",
                                            "a?b c"};
    for (size_t i = 0; i < sizeof bad_paths / sizeof *bad_paths; i++) {
        err.code = ZJUCHAT_OK;
        assert_null(
            zjuchat_call_start_raw(e.client, bad_paths[i], "{}", 2, 0, &cb, &s, &err));
        assert_int_equal(err.code, ZJUCHAT_ERR_INVALID);
    }
    assert_null(zjuchat_call_start_raw(e.client, NULL, "{}", 2, 0, &cb, &s, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_INVALID);
    assert_null(
        zjuchat_call_start_raw(e.client, "chat/completions", NULL, 0, 0, &cb, &s, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_INVALID);
    assert_null(zjuchat_call_start_raw(e.client, "chat/completions", "{}", 2,
                                       ZJUCHAT_CALL_PASS_DONE, &cb, &s, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_INVALID);
    assert_null(zjuchat_call_start_raw(e.client, "chat/completions", "{}", 2, 0x100, &cb,
                                       &s, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_INVALID);
    zjuchat_callbacks no_done = {NULL, on_chunk, NULL};
    assert_null(zjuchat_call_start_raw(e.client, "chat/completions", "{}", 2, 0, &no_done,
                                       &s, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_INVALID);
    assert_null(zjuchat_models_start(e.client, &no_done, &s, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_INVALID);
    assert_int_equal(s.done, 0); /* no callback ran for a refused call */

    /* Good paths: dots inside a name, a query, %-escapes, every other pchar,
     * one longer than the stack room for the slashed path. */
    static const char *const good[] = {
        "v2.1/chat/completions?x=1&y=a.b", "a/...b/%41", "a-b_c~!$&'()*+,;=:@/Z9",
        "chat/completions/"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        "0123456789abcdef0123456789abcdef0123456789abcdef"};
    for (size_t i = 0; i < 4; i++) {
        zjuchat_call *call =
            zjuchat_call_start_raw(e.client, good[i], "{}", 2, 0, &cb, &s, &err);
        assert_non_null(call);
        /* Before on_done there is no error body to read. */
        assert_null(zjuchat_call_error_body(call, NULL));
        zjuchat_call_cancel(call);
    }
    assert_int_equal(s.done, 4);
    assert_int_equal(zjuchat_chunk_is_done(NULL), 0);
    assert_null(zjuchat_call_error_body(NULL, NULL));
    env_free(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(raw_body_reaches_upstream_byte_for_byte),
        cmocka_unit_test(raw_stream_chunks_are_the_events_bytes),
        cmocka_unit_test(done_is_handed_through_only_when_asked),
        cmocka_unit_test(call_stats_say_whether_done_came),
        cmocka_unit_test(cancel_mid_stream_closes_the_upstream_connection),
        cmocka_unit_test(pause_and_resume_a_raw_stream),
        cmocka_unit_test(models_listing_evented),
        cmocka_unit_test(models_listing_gives_the_parsed_list),
        cmocka_unit_test(error_bodies_are_handed_back_without_the_key),
        cmocka_unit_test(escaped_key_in_an_error_body_is_masked),
        cmocka_unit_test(bad_arguments_are_refused),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
