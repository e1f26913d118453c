/*
 * test_client.c - libzjuchat end to end against the bundled mock upstream,
 * through the real libcurl path: answers, streams, every error class,
 * timeouts, retries, cancel, connection reuse, TLS and key redaction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "mockproc.h"
#include "rawupstream.h"
#include "call.h" /* zjuchat__call_on_read_end */
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

static zjuchat_client *new_client(void)
{
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, mock.base, &err);
    assert_non_null(c);
    zjuchat_client_set_retries(c, 0, 0);
    return c;
}

/* Stream collector. */
struct collected {
    char content[8192];
    size_t content_len;
    char reasoning[8192];
    size_t reasoning_len;
    int chunks;
    int finish_seen;
    long total_tokens;
    int stop_after; /* 0: never */
};

static int collect(const zjuchat_chunk *chunk, void *ud)
{
    struct collected *c = ud;
    size_t len;
    const char *s = zjuchat_chunk_content(chunk, &len);
    if (s && c->content_len + len < sizeof c->content) {
        memcpy(c->content + c->content_len, s, len);
        c->content_len += len;
    }
    s = zjuchat_chunk_reasoning(chunk, &len);
    if (s && c->reasoning_len + len < sizeof c->reasoning) {
        memcpy(c->reasoning + c->reasoning_len, s, len);
        c->reasoning_len += len;
    }
    if (zjuchat_chunk_finish_reason(chunk))
        c->finish_seen = 1;
    zjuchat_chunk_usage(chunk, NULL, NULL, &c->total_tokens);
    size_t dlen;
    const char *d = zjuchat_chunk_data(chunk, &dlen);
    assert_true(dlen > 2 && d[0] == '{');
    c->chunks++;
    return c->stop_after && c->chunks >= c->stop_after;
}

static zjuchat_code run_stream(zjuchat_client *c, const char *model,
                               struct collected *out, zjuchat_error *err)
{
    zjuchat_request *req = zjuchat_request_new_simple(model, "你好，世界", NULL);
    zjuchat_code rc = zjuchat_stream(c, req, collect, out, err);
    zjuchat_request_free(req);
    return rc;
}

static zjuchat_code run_complete(zjuchat_client *c, const char *model,
                                 zjuchat_response **out, zjuchat_error *err)
{
    zjuchat_request *req = zjuchat_request_new_simple(model, "你好，世界", "be brief");
    zjuchat_code rc = zjuchat_complete(c, req, out, err);
    zjuchat_request_free(req);
    return rc;
}

static void complete_returns_content_reasoning_usage(void **state)
{
    zjuchat_client *c = new_client();
    zjuchat_response *resp = NULL;
    zjuchat_error err;
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_OK);
    assert_int_equal(zjuchat_response_status(resp), 200);
    size_t len;
    const char *content = zjuchat_response_content(resp, &len);
    assert_non_null(content);
    assert_true(len > 0);
    assert_non_null(zjuchat_response_reasoning(resp, NULL));
    assert_string_equal(zjuchat_response_finish_reason(resp), "stop");
    long p = -1, cpl = -1, t = -1;
    assert_int_equal(zjuchat_response_usage(resp, &p, &cpl, &t), 0);
    assert_true(p > 0 && cpl > 0 && t == p + cpl);
    const char *body = zjuchat_response_body(resp, &len);
    assert_non_null(strstr(body, "chat.completion"));
    zjuchat_response_free(resp);
    zjuchat_client_free(c);
}

static void stream_matches_complete_with_chinese_and_emoji(void **state)
{
    zjuchat_client *c = new_client();
    struct collected s = {0};
    zjuchat_error err;
    assert_int_equal(run_stream(c, NULL, &s, &err), ZJUCHAT_OK);
    zjuchat_response *resp = NULL;
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_OK);
    size_t len;
    const char *content = zjuchat_response_content(resp, &len);
    assert_int_equal(s.content_len, len);
    assert_memory_equal(s.content, content, len);
    assert_true(s.reasoning_len > 0);
    assert_true(s.finish_seen);
    s.content[s.content_len] = '\0';
    assert_non_null(strstr(s.content, "你好"));
    assert_non_null(strstr(s.content, "\xf0\x9f")); /* an emoji (4-byte UTF-8) */
    zjuchat_response_free(resp);
    zjuchat_client_free(c);
}

static void stream_event_count_and_split_reads(void **state)
{
    zjuchat_client *c = new_client();
    struct collected a = {0}, b = {0};
    zjuchat_error err;
    assert_int_equal(run_stream(c, "deepseek-v3-671b#events=5,reasoning=0", &a, &err),
                     ZJUCHAT_OK);
    /* role delta + 5 content deltas + finish chunk */
    assert_int_equal(a.chunks, 7);
    /* Same answer when every event arrives in 3-byte pieces and with CRLF. */
    assert_int_equal(
        run_stream(c, "deepseek-v3-671b#events=5,reasoning=0,split=3,fault=crlf", &b,
                   &err),
        ZJUCHAT_OK);
    assert_int_equal(b.chunks, 7);
    assert_int_equal(a.content_len, b.content_len);
    assert_memory_equal(a.content, b.content, a.content_len);
    zjuchat_client_free(c);
}

static void garbage_lines_are_skipped(void **state)
{
    zjuchat_client *c = new_client();
    struct collected a = {0}, b = {0};
    zjuchat_error err;
    assert_int_equal(run_stream(c, "deepseek-v3-671b#events=4", &a, &err), ZJUCHAT_OK);
    assert_int_equal(run_stream(c, "deepseek-v3-671b#events=4,fault=garbage", &b, &err),
                     ZJUCHAT_OK);
    assert_int_equal(a.chunks, b.chunks);
    assert_memory_equal(a.content, b.content, a.content_len);
    zjuchat_client_free(c);
}

static void connection_is_reused_across_calls(void **state)
{
    json_decref(mock_control(&mock, "/_mock/reset-stats", "{}"));
    long before = mock_stat(&mock, "connections_accepted");
    zjuchat_client *c = new_client();
    zjuchat_error err;
    for (int i = 0; i < 5; i++) {
        struct collected s = {0};
        assert_int_equal(run_stream(c, "deepseek-v3-671b#events=2", &s, &err),
                         ZJUCHAT_OK);
        zjuchat_response *resp = NULL;
        assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_OK);
        zjuchat_response_free(resp);
    }
    assert_int_equal(zjuchat_client_connections_opened(c), 1);
    /* One stats request of our own opened a connection too. */
    assert_int_equal(mock_stat(&mock, "connections_accepted") - before, 1 + 1);
    zjuchat_client_free(c);
}

static void missing_key_is_a_config_error_naming_the_variable(void **state)
{
    unsetenv("ZJU_API_KEY");
    zjuchat_error err;
    assert_null(zjuchat_client_new(NULL, mock.base, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_CONFIG);
    assert_non_null(strstr(err.message, "ZJU_API_KEY"));
    setenv("ZJU_API_KEY", "env-key-0123456789", 1);
    setenv("ZJU_BASE_URL", "http://127.0.0.1:1/v1///", 1);
    zjuchat_client *c = zjuchat_client_new_from_env(&err);
    assert_non_null(c);
    assert_string_equal(zjuchat_client_base_url(c), "http://127.0.0.1:1/v1");
    zjuchat_client_free(c);
    unsetenv("ZJU_API_KEY");
    unsetenv("ZJU_BASE_URL");
    assert_null(zjuchat_client_new(KEY, "ftp://x", &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_CONFIG);
    assert_null(zjuchat_client_new("bad\r\nInjected: 1", mock.base, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_CONFIG);
    /* Too short to redact safely (issue 9): refused, the key not quoted. */
    assert_null(zjuchat_client_new("sk-Zq7short-15c", mock.base, &err));
    assert_int_equal(err.code, ZJUCHAT_ERR_CONFIG);
    assert_non_null(strstr(err.message, "16"));
    assert_null(strstr(err.message, "Zq7short"));
    c = zjuchat_client_new("sk-Zq7short-16ch", mock.base, &err);
    assert_non_null(c);
    zjuchat_client_free(c);
}

static void wrong_key_is_an_api_error(void **state)
{
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new("sk-wrong-0123456789", mock.base, &err);
    zjuchat_response *resp = NULL;
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_ERR_API);
    assert_int_equal(err.http_status, 401);
    assert_null(resp);
    zjuchat_client_free(c);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

static void network_errors_have_details(void **state)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", free_port());
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, url, &err);
    zjuchat_client_set_retries(c, 0, 0);
    zjuchat_response *resp = NULL;
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_ERR_NETWORK);
    assert_int_equal(err.detail, ZJUCHAT_NET_CONNECT);
    zjuchat_client_free(c);

    c = zjuchat_client_new(KEY, "http://no-such-host.invalid/v1", &err);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_ERR_NETWORK);
    assert_int_equal(err.detail, ZJUCHAT_NET_DNS);
    zjuchat_client_free(c);
}

static void connect_timeout(void **state)
{
    /* A listener whose accept queue is full drops further SYNs, so the
     * connect hangs: a local stand-in for an unreachable host. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(fd, (struct sockaddr *)&a, &l);
    listen(fd, 0);
    int fill[4];
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    usleep(50 * 1000);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", ntohs(a.sin_port));
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, url, &err);
    zjuchat_client_set_retries(c, 0, 0);
    zjuchat_client_set_timeout(c, ZJUCHAT_TIMEOUT_OPT_CONNECT, 300);
    zjuchat_response *resp = NULL;
    long t0 = now_ms();
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_ERR_TIMEOUT);
    assert_int_equal(err.detail, ZJUCHAT_TIMEOUT_CONNECT);
    assert_true(now_ms() - t0 < 3000);
    zjuchat_client_free(c);
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(fd);
}

static void api_errors_carry_status_and_message(void **state)
{
    zjuchat_client *c = new_client();
    zjuchat_response *resp = NULL;
    zjuchat_error err;
    assert_int_equal(run_complete(c, "deepseek-r1-671b#status=500", &resp, &err),
                     ZJUCHAT_ERR_API);
    assert_int_equal(err.http_status, 500);
    assert_non_null(strstr(err.message, "500"));
    assert_int_equal(
        run_complete(c, "deepseek-r1-671b#status=502,body=html", &resp, &err),
        ZJUCHAT_ERR_API);
    assert_int_equal(err.http_status, 502);
    assert_null(strchr(err.message, '<'));
    struct collected s = {0};
    assert_int_equal(run_stream(c, "deepseek-r1-671b#status=400", &s, &err),
                     ZJUCHAT_ERR_API);
    assert_int_equal(s.chunks, 0);
    assert_int_equal(run_complete(c, "no-such-model", &resp, &err), ZJUCHAT_ERR_API);
    assert_int_equal(err.http_status, 404);
    zjuchat_client_free(c);
}

static void echoed_key_never_reaches_the_caller(void **state)
{
    zjuchat_client *c = new_client();
    zjuchat_response *resp = NULL;
    zjuchat_error err;
    assert_int_equal(
        run_complete(c, "deepseek-r1-671b#status=401,echo_key=1", &resp, &err),
        ZJUCHAT_ERR_API);
    assert_null(strstr(err.message, KEY));
    assert_null(strstr(err.message, "SECRET"));
    assert_non_null(strstr(err.message, "***"));
    zjuchat_client_free(c);
}

static void protocol_errors(void **state)
{
    zjuchat_client *c = new_client();
    zjuchat_error err;
    struct collected s = {0};
    assert_int_equal(run_stream(c, "deepseek-r1-671b#fault=not_sse", &s, &err),
                     ZJUCHAT_ERR_PROTOCOL);
    assert_non_null(strstr(err.message, "text/event-stream"));
    memset(&s, 0, sizeof s);
    assert_int_equal(run_stream(c, "deepseek-r1-671b#fault=truncate", &s, &err),
                     ZJUCHAT_ERR_PROTOCOL);
    assert_non_null(strstr(err.message, "[DONE]"));
    /* A finish chunk without [DONE] is a complete answer. */
    memset(&s, 0, sizeof s);
    assert_int_equal(run_stream(c, "deepseek-r1-671b#fault=no_done", &s, &err),
                     ZJUCHAT_OK);
    assert_true(s.finish_seen);
    memset(&s, 0, sizeof s);
    assert_int_equal(run_stream(c, "deepseek-r1-671b#fault=endless_line", &s, &err),
                     ZJUCHAT_ERR_PROTOCOL);
    memset(&s, 0, sizeof s);
    assert_int_equal(run_stream(c, "deepseek-r1-671b#fault=drop_mid,after=2", &s, &err),
                     ZJUCHAT_ERR_NETWORK);
    assert_int_equal(err.detail, ZJUCHAT_NET_RESET);
    assert_int_equal(s.chunks, 2);
    memset(&s, 0, sizeof s);
    assert_int_equal(run_stream(c, "deepseek-r1-671b#fault=rst_mid,after=2", &s, &err),
                     ZJUCHAT_ERR_NETWORK);
    zjuchat_response *resp = NULL;
    assert_int_equal(run_complete(c, "deepseek-r1-671b#fault=big_error", &resp, &err),
                     ZJUCHAT_ERR_API);
    assert_int_equal(err.http_status, 500);
    /* The client still works after all of that. */
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_OK);
    zjuchat_response_free(resp);
    zjuchat_client_free(c);
}

static void each_timeout(void **state)
{
    zjuchat_client *c = new_client();
    zjuchat_error err;
    zjuchat_response *resp = NULL;
    struct collected s = {0};
    zjuchat_client_set_timeout(c, ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE, 300);
    zjuchat_client_set_timeout(c, ZJUCHAT_TIMEOUT_OPT_IDLE, 300);
    long t0 = now_ms();
    assert_int_equal(run_complete(c, "deepseek-r1-671b#fault=hang_headers", &resp, &err),
                     ZJUCHAT_ERR_TIMEOUT);
    assert_int_equal(err.detail, ZJUCHAT_TIMEOUT_FIRST_BYTE);
    long took = now_ms() - t0;
    assert_true(took >= 250 && took < 2000);

    t0 = now_ms();
    assert_int_equal(run_stream(c, "deepseek-r1-671b#fault=hang_mid,after=2", &s, &err),
                     ZJUCHAT_ERR_TIMEOUT);
    assert_int_equal(err.detail, ZJUCHAT_TIMEOUT_IDLE);
    assert_int_equal(s.chunks, 2);
    assert_true(now_ms() - t0 < 2000);

    /* Slow but steady events are progress, not idleness. */
    memset(&s, 0, sizeof s);
    assert_int_equal(run_stream(c, "deepseek-v3-671b#events=6,delay=150", &s, &err),
                     ZJUCHAT_OK);

    /* The total limit cuts a stream that is never idle. */
    zjuchat_client_set_timeout(c, ZJUCHAT_TIMEOUT_OPT_TOTAL, 400);
    memset(&s, 0, sizeof s);
    t0 = now_ms();
    assert_int_equal(run_stream(c, "deepseek-v3-671b#events=50,delay=50", &s, &err),
                     ZJUCHAT_ERR_TIMEOUT);
    assert_int_equal(err.detail, ZJUCHAT_TIMEOUT_TOTAL);
    took = now_ms() - t0;
    assert_true(took >= 350 && took < 2000);
    zjuchat_client_free(c);
}

static void retries_until_success(void **state)
{
    zjuchat_client *c = new_client();
    zjuchat_client_set_retries(c, 3, 20);
    zjuchat_error err;
    zjuchat_response *resp = NULL;
    json_decref(mock_control(&mock, "/_mock/reset-stats", "{}"));
    json_decref(
        mock_control(&mock, "/_mock/config", "{\"fail_next\":2,\"fail_status\":503}"));
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_OK);
    zjuchat_response_free(resp);
    assert_int_equal(mock_stat(&mock, "chat_requests"), 3);

    /* More failures than retries: the last error comes back. */
    json_decref(
        mock_control(&mock, "/_mock/config", "{\"fail_next\":5,\"fail_status\":502}"));
    zjuchat_client_set_retries(c, 1, 10);
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_ERR_API);
    assert_int_equal(err.http_status, 502);
    json_decref(mock_control(&mock, "/_mock/config", "{\"reset\":true}"));

    /* 4xx other than 429 is not retried. */
    json_decref(mock_control(&mock, "/_mock/reset-stats", "{}"));
    zjuchat_client_set_retries(c, 3, 10);
    assert_int_equal(run_complete(c, "deepseek-r1-671b#status=400", &resp, &err),
                     ZJUCHAT_ERR_API);
    assert_int_equal(mock_stat(&mock, "chat_requests"), 1);
    zjuchat_client_free(c);
}

static void retry_after_is_honoured(void **state)
{
    zjuchat_client *c = new_client();
    zjuchat_client_set_retries(c, 1, 10);
    zjuchat_error err;
    zjuchat_response *resp = NULL;
    json_decref(mock_control(&mock, "/_mock/config",
                             "{\"fail_next\":1,\"fail_status\":429,\"retry_after\":1}"));
    long t0 = now_ms();
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_OK);
    long took = now_ms() - t0;
    assert_true(took >= 950 && took < 3000);
    zjuchat_response_free(resp);
    json_decref(mock_control(&mock, "/_mock/config", "{\"reset\":true}"));

    /* Retry-After beyond 30 s: no retry, the caller learns the delay. */
    t0 = now_ms();
    assert_int_equal(
        run_complete(c, "deepseek-r1-671b#status=429,retry_after=60", &resp, &err),
        ZJUCHAT_ERR_API);
    assert_int_equal(err.http_status, 429);
    assert_int_equal(err.retry_after_ms, 60000);
    assert_true(now_ms() - t0 < 1000);
    zjuchat_client_free(c);
}

/* No retry wait may end past the budget, counted from the call's start: a
 * Retry-After beyond it comes back at once (issue 9: Retry-After: 7 held
 * the caller 14 s, past its own timeout). */
static void retry_budget_bounds_the_waits(void **state)
{
    zjuchat_client *c = new_client();
    zjuchat_client_set_retries(c, 2, 10); /* the default budget: 3000 ms */
    zjuchat_error err;
    zjuchat_response *resp = NULL;
    json_decref(mock_control(&mock, "/_mock/reset-stats", "{}"));
    long t0 = now_ms();
    assert_int_equal(
        run_complete(c, "deepseek-r1-671b#status=429,retry_after=7", &resp, &err),
        ZJUCHAT_ERR_API);
    assert_true(now_ms() - t0 < 1000);
    assert_int_equal(err.http_status, 429);
    assert_int_equal(err.retry_after_ms, 7000);
    assert_int_equal(mock_stat(&mock, "chat_requests"), 1);

    /* A 1500 ms budget has room for one Retry-After: 1, not two. */
    zjuchat_client_set_retry_budget(c, 1500);
    json_decref(mock_control(&mock, "/_mock/reset-stats", "{}"));
    json_decref(mock_control(&mock, "/_mock/config",
                             "{\"fail_next\":5,\"fail_status\":503,\"retry_after\":1}"));
    t0 = now_ms();
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_ERR_API);
    long took = now_ms() - t0;
    assert_true(took >= 950 && took < 1500);
    assert_int_equal(err.http_status, 503);
    assert_int_equal(mock_stat(&mock, "chat_requests"), 2);
    json_decref(mock_control(&mock, "/_mock/config", "{\"reset\":true}"));

    /* 0: no waiting, so no retry at all. */
    assert_int_equal(zjuchat_client_set_retry_budget(c, 0), ZJUCHAT_OK);
    json_decref(mock_control(&mock, "/_mock/reset-stats", "{}"));
    json_decref(
        mock_control(&mock, "/_mock/config", "{\"fail_next\":1,\"fail_status\":503}"));
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_ERR_API);
    assert_int_equal(mock_stat(&mock, "chat_requests"), 1);
    json_decref(mock_control(&mock, "/_mock/config", "{\"reset\":true}"));
    assert_int_equal(zjuchat_client_set_retry_budget(c, -1), ZJUCHAT_ERR_INVALID);
    zjuchat_client_free(c);
}

static volatile sig_atomic_t cancel_flag;

static void *raise_flag_later(void *arg)
{
    usleep(300 * 1000);
    cancel_flag = 1;
    return NULL;
}

static void cancel_by_flag_and_by_callback(void **state)
{
    zjuchat_client *c = new_client();
    zjuchat_error err;
    struct collected s = {0};
    cancel_flag = 0;
    zjuchat_client_set_cancel_flag(c, &cancel_flag);
    pthread_t th;
    pthread_create(&th, NULL, raise_flag_later, NULL);
    long t0 = now_ms();
    assert_int_equal(run_stream(c, "deepseek-r1-671b#fault=hang_mid,after=1", &s, &err),
                     ZJUCHAT_ERR_CANCELLED);
    pthread_join(th, NULL);
    long took = now_ms() - t0;
    assert_true(took >= 250 && took < 1500);
    zjuchat_client_set_cancel_flag(c, NULL);

    memset(&s, 0, sizeof s);
    s.stop_after = 3;
    assert_int_equal(run_stream(c, "deepseek-v3-671b#events=20", &s, &err),
                     ZJUCHAT_ERR_CANCELLED);
    assert_int_equal(s.chunks, 3);
    /* A stopped stream does not poison the client. */
    memset(&s, 0, sizeof s);
    assert_int_equal(run_stream(c, "deepseek-v3-671b#events=3", &s, &err), ZJUCHAT_OK);
    zjuchat_client_free(c);
}

static void list_models(void **state)
{
    zjuchat_client *c = new_client();
    zjuchat_error err;
    zjuchat_response *resp = NULL;
    assert_int_equal(zjuchat_list_models(c, &resp, &err), ZJUCHAT_OK);
    assert_int_equal(zjuchat_response_model_count(resp), 8);
    int found = 0;
    for (size_t i = 0; i < 8; i++)
        found |= strcmp(zjuchat_response_model_id(resp, i), "deepseek-r1-671b") == 0;
    assert_true(found);
    zjuchat_response_free(resp);
    zjuchat_client_free(c);
}

/* Evented interface: many concurrent streams on one loop, one cancelled,
 * one paused and resumed. */
struct ev_state {
    int done, ok, cancelled, chunks[20];
    zjuchat_call *calls[20];
    struct event_base *base;
};

struct ev_slot {
    struct ev_state *st;
    int i;
};

static void ev_resume(evutil_socket_t fd, short what, void *arg)
{
    zjuchat_call_resume(arg);
}

static int ev_chunk(zjuchat_call *call, const zjuchat_chunk *chunk, void *ud)
{
    struct ev_slot *slot = ud;
    slot->st->chunks[slot->i]++;
    if (slot->i == 1 && slot->st->chunks[1] == 2) {
        zjuchat_call_pause(call);
        struct timeval tv = {0, 200 * 1000};
        event_base_once(slot->st->base, -1, EV_TIMEOUT, ev_resume, call, &tv);
    }
    if (slot->i == 0 && slot->st->chunks[0] == 2)
        zjuchat_call_cancel(call); /* from inside the callback */
    return 0;
}

static void ev_done(zjuchat_call *call, const zjuchat_error *err,
                    const zjuchat_response *resp, void *ud)
{
    struct ev_slot *slot = ud;
    slot->st->done++;
    slot->st->calls[slot->i] = NULL;
    if (err->code == ZJUCHAT_OK)
        slot->st->ok++;
    if (err->code == ZJUCHAT_ERR_CANCELLED)
        slot->st->cancelled++;
}

static void evented_concurrent_streams(void **state)
{
    struct event_base *base = event_base_new();
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, mock.base, &err);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    zjuchat_response *resp;
    zjuchat_request *req =
        zjuchat_request_new_simple("deepseek-v3-671b#events=10,delay=10", "hi", NULL);
    /* Once bound to a loop, blocking calls are refused. */
    assert_int_equal(zjuchat_complete(c, req, &resp, &err), ZJUCHAT_ERR_INVALID);
    struct ev_state st = {0};
    st.base = base;
    struct ev_slot slots[20];
    zjuchat_callbacks cb = {NULL, ev_chunk, ev_done};
    for (int i = 0; i < 20; i++) {
        slots[i].st = &st;
        slots[i].i = i;
        st.calls[i] = zjuchat_call_start(c, req, 1, &cb, &slots[i], &err);
        assert_non_null(st.calls[i]);
    }
    zjuchat_request_free(req);
    long t0 = now_ms();
    while (st.done < 20 && now_ms() - t0 < 10000)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(st.done, 20);
    assert_int_equal(st.ok, 19);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(st.chunks[0], 2);
    for (int i = 1; i < 20; i++)
        assert_int_equal(st.chunks[i], 12); /* role + 10 + finish */
    zjuchat_client_free(c);
    event_base_free(base);
}

/* zjuchat__call_on_read_end (call.h), what the server's relay coalesces a
 * read's events by: on the HTTP/1.1 transport it runs after each read's
 * events, before the next read's (a relay that waited for it and never got
 * it would hold the events back); libcurl's transport says it cannot. */
struct read_end_state {
    int chunks, unsent, read_ends, held_back, done, hooked;
    long last_chunk_ms;
};

static void read_end_seen(zjuchat_call *call, void *ud)
{
    struct read_end_state *st = ud;
    st->read_ends++;
    st->unsent = 0;
}

static int read_end_chunk(zjuchat_call *call, const zjuchat_chunk *chunk, void *ud)
{
    struct read_end_state *st = ud;
    long now = now_ms();
    /* Events 60 ms apart come in reads of their own: the read before this
     * one must have ended with the hook. */
    if (st->chunks > 0 && now - st->last_chunk_ms > 30 && st->unsent > 0)
        st->held_back++;
    st->chunks++;
    st->unsent++;
    st->last_chunk_ms = now;
    return 0;
}

static void read_end_accepted(zjuchat_call *call, void *ud)
{
    struct read_end_state *st = ud;
    st->hooked = zjuchat__call_on_read_end(call, read_end_seen) == 0;
}

static void read_end_done(zjuchat_call *call, const zjuchat_error *err,
                          const zjuchat_response *resp, void *ud)
{
    struct read_end_state *st = ud;
    st->done = err->code == ZJUCHAT_OK ? 1 : -1;
}

static void run_read_end(struct read_end_state *st)
{
    struct event_base *base = event_base_new();
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, mock.base, &err);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    zjuchat_request *req =
        zjuchat_request_new_simple("deepseek-v3-671b#events=6,delay=60", "hi", NULL);
    zjuchat_callbacks cb = {read_end_accepted, read_end_chunk, read_end_done};
    assert_non_null(zjuchat_call_start(c, req, 1, &cb, st, &err));
    zjuchat_request_free(req);
    long t0 = now_ms();
    while (!st->done && now_ms() - t0 < 10000)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(st->done, 1);
    assert_int_equal(st->chunks, 8); /* role + 6 + finish */
    zjuchat_client_free(c);
    event_base_free(base);
}

static void evented_read_end_follows_each_read(void **state)
{
    struct read_end_state st = {0};
    run_read_end(&st);
    assert_true(st.hooked);
    assert_int_equal(st.held_back, 0);
    assert_true(st.read_ends >= 6);

    setenv("ZJU_UPSTREAM_ENGINE", "curl", 1);
    struct read_end_state cst = {0};
    run_read_end(&cst);
    unsetenv("ZJU_UPSTREAM_ENGINE");
    assert_false(cst.hooked);
    assert_int_equal(cst.read_ends, 0);
}

/* An upstream that closes a kept-alive connection while it is idle, as
 * servers do after their keep-alive timeout: the client must not spin on the
 * closed socket while its loop idles, and the next call must succeed on a
 * new connection. */
struct closing_upstream {
    int lfd, port, served;
    int closed; /* the first connection is closed (atomic) */
};

static void *closing_upstream_run(void *arg)
{
    struct closing_upstream *u = arg;
    static const char body[] =
        "{\"id\":\"c1\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"ok\"},\"finish_reason\":"
        "\"stop\"}]}";
    for (int n = 0; n < 2; n++) {
        int fd = accept(u->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        read_request(fd);
        char resp[512];
        int len = snprintf(resp, sizeof resp,
                           "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           "Content-Length: %zu\r\n\r\n%s",
                           sizeof body - 1, body);
        if (write(fd, resp, (size_t)len) == len)
            __atomic_add_fetch(&u->served, 1, __ATOMIC_RELEASE);
        usleep(100 * 1000); /* idle, kept alive... then closed */
        close(fd);
        __atomic_store_n(&u->closed, 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void count_done(zjuchat_call *call, const zjuchat_error *err,
                       const zjuchat_response *resp, void *ud)
{
    int *st = ud;
    *st = err->code == ZJUCHAT_OK ? 1 : -1;
}

static int run_one(zjuchat_client *c, struct event_base *base)
{
    zjuchat_error err;
    zjuchat_request *req = zjuchat_request_new_simple("m", "hi", NULL);
    zjuchat_callbacks cb = {NULL, NULL, count_done};
    int st = 0;
    assert_non_null(zjuchat_call_start(c, req, 0, &cb, &st, &err));
    zjuchat_request_free(req);
    long t0 = now_ms();
    while (!st && now_ms() - t0 < 5000)
        event_base_loop(base, EVLOOP_ONCE);
    return st;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void idle_connection_closed_by_upstream(void **state)
{
    /* On the heap: a failed assertion leaves this function while the thread
     * still uses it. */
    struct closing_upstream *u = calloc(1, sizeof *u);
    u->lfd = listen_loopback(&u->port);
    assert_true(u->lfd >= 0);
    pthread_t th;
    pthread_create(&th, NULL, closing_upstream_run, u);

    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", u->port);
    struct event_base *base = event_base_new();
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, url, &err);
    assert_non_null(c);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    assert_int_equal(run_one(c, base), 1);

    /* The loop runs until the upstream has closed the kept connection (a
     * slow thread must not let the next call reach it still open), then
     * idles 500 ms. */
    long t0 = now_ms();
    struct timeval tick = {0, 10 * 1000};
    while (!__atomic_load_n(&u->closed, __ATOMIC_ACQUIRE) && now_ms() - t0 < 5000) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    assert_true(__atomic_load_n(&u->closed, __ATOMIC_ACQUIRE));
    double cpu0 = cpu_seconds();
    struct timeval half = {0, 500 * 1000};
    event_base_loopexit(base, &half);
    event_base_dispatch(base);
    double idle_cpu = cpu_seconds() - cpu0;
    assert_true(idle_cpu < 0.1); /* a spinning loop burns the whole 0.5 s */

    assert_int_equal(run_one(c, base), 1);
    /* The upstream accepts a connection per answer, so two answers prove the
     * second call opened a new one. (On libcurl, ZJU_UPSTREAM_ENGINE=curl,
     * zjuchat_client_connections_opened, from CURLINFO_NUM_CONNECTS, read 1
     * here in 2 of ~100 full-suite runs: an undercount never explained. The
     * library's own transport counts each connect itself.) */
    assert_int_equal(zjuchat_client_connections_opened(c), 2);
    /* The thread counts an answer after its write() returns, which may be
     * after the client has read it: wait for the count (bounded). */
    long t1 = now_ms();
    while (__atomic_load_n(&u->served, __ATOMIC_ACQUIRE) < 2 && now_ms() - t1 < 2000)
        usleep(1000);
    assert_int_equal(__atomic_load_n(&u->served, __ATOMIC_ACQUIRE), 2);
    zjuchat_client_free(c);
    event_base_free(base);
    pthread_join(th, NULL);
    close(u->lfd);
    free(u);
}

struct ev_result {
    int done;
    zjuchat_error err;
};

static void ev_record(zjuchat_call *call, const zjuchat_error *err,
                      const zjuchat_response *resp, void *ud)
{
    struct ev_result *r = ud;
    r->done = 1;
    r->err = *err;
}

/* A reply with both Content-Length and Transfer-Encoding: chunked cannot be
 * framed one way: RFC 9112 (6.3) says such a message ought to be handled as
 * an error, as it is how responses are split and connections desynchronised.
 * libcurl took the chunked framing and kept the connection; the evented
 * calls now refuse it as malformed, and the connection is not reused. */
static void both_framings_is_malformed(void **state)
{
    static const char both[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "2\r\n{}\r\n0\r\n\r\n";
    static const char *const replies[] = {both};
    struct scripted *u = scripted_start(replies, 1);
    assert_non_null(u);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", u->port);
    struct event_base *base = event_base_new();
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, url, &err);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    zjuchat_callbacks cb = {NULL, NULL, ev_record};
    struct ev_result r = {0};
    zjuchat_request *req = zjuchat_request_new_simple("m", "hi", NULL);
    assert_non_null(zjuchat_call_start(c, req, 0, &cb, &r, &err));
    zjuchat_request_free(req);
    long t0 = now_ms();
    while (!r.done && now_ms() - t0 < 5000)
        event_base_loop(base, EVLOOP_ONCE);
    assert_true(r.done);
    if (r.err.code != ZJUCHAT_ERR_PROTOCOL || !strstr(r.err.message, "malformed HTTP"))
        fail_msg("code %d, \"%s\"", r.err.code, r.err.message);
    zjuchat_client_free(c);
    event_base_free(base);
    scripted_stop(u);
}

/* A kept-alive connection that the upstream closed while it sat in the pool,
 * before the loop noticed: the request goes out on it, nothing comes back,
 * and the call is sent again on a new connection without the caller seeing
 * it (as libcurl does) and without using a retry. */
static void stale_kept_alive_connection_is_replaced(void **state)
{
    static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             "Content-Length: 2\r\n\r\n{}";
    static const char *const replies[] = {ok, ok};
    struct scripted *u = scripted_start(replies, 2); /* closes after each answer */
    assert_non_null(u);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", u->port);
    struct event_base *base = event_base_new();
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, url, &err);
    assert_non_null(c);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    assert_int_equal(run_one(c, base), 1);
    /* The upstream closes its end; the loop does not run meanwhile, so the
     * pool still holds the connection. */
    long t0 = now_ms();
    while (__atomic_load_n(&u->served, __ATOMIC_ACQUIRE) < 1 && now_ms() - t0 < 2000)
        usleep(1000);
    usleep(100 * 1000);
    assert_int_equal(run_one(c, base), 1);
    assert_int_equal(zjuchat_client_connections_opened(c), 2);
    zjuchat_client_free(c);
    event_base_free(base);
    scripted_stop(u);
}

/* The request bytes are the same whichever transport sends them: the
 * evented call (the library's HTTP/1.1 transport) and the blocking one
 * (libcurl), for a stream, a non-stream call and the model listing. */
struct capture {
    int lfd, port, n;
    char got[6][2048];
    size_t len[6];
    pthread_t th;
};

static void *capture_run(void *arg)
{
    struct capture *cp = arg;
    static const char json[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               "Connection: close\r\nContent-Length: 2\r\n\r\n{}";
    for (int i = 0; i < cp->n; i++) {
        int fd = accept(cp->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        size_t got = 0;
        long want = -1;
        while (got < sizeof cp->got[i] - 1 && (want < 0 || (long)got < want)) {
            ssize_t r = read(fd, cp->got[i] + got, sizeof cp->got[i] - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
            cp->got[i][got] = '\0';
            char *end = strstr(cp->got[i], "\r\n\r\n");
            if (end) {
                char *cl = strcasestr(cp->got[i], "content-length:");
                want = (end - cp->got[i]) + 4 + (cl ? atol(cl + 15) : 0);
            }
        }
        cp->len[i] = got;
        if (write(fd, json, sizeof json - 1) < 0)
            break;
        close(fd);
    }
    return NULL;
}

static int ev_call(zjuchat_client *c, struct event_base *base, int kind)
{
    zjuchat_error err;
    zjuchat_callbacks cb = {NULL, NULL, count_done};
    int st = 0;
    zjuchat_request *req = zjuchat_request_new_simple(NULL, "你好", "be brief");
    zjuchat_call *call = kind == 2 ? zjuchat_models_start(c, &cb, &st, &err)
                                   : zjuchat_call_start(c, req, kind, &cb, &st, &err);
    zjuchat_request_free(req);
    assert_non_null(call);
    long t0 = now_ms();
    while (!st && now_ms() - t0 < 5000)
        event_base_loop(base, EVLOOP_ONCE);
    return st;
}

static void request_bytes_match_libcurl(void **state)
{
    struct capture *cp = calloc(1, sizeof *cp);
    cp->n = 6;
    cp->lfd = listen_loopback(&cp->port);
    assert_true(cp->lfd >= 0);
    pthread_create(&cp->th, NULL, capture_run, cp);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", cp->port);
    zjuchat_error err;
    /* libcurl: the blocking calls. */
    zjuchat_client *c = zjuchat_client_new(KEY, url, &err);
    zjuchat_client_set_retries(c, 0, 0);
    zjuchat_response *resp = NULL;
    zjuchat_request *req = zjuchat_request_new_simple(NULL, "你好", "be brief");
    zjuchat_complete(c, req, &resp, &err);
    zjuchat_response_free(resp);
    zjuchat_stream(c, req, NULL, NULL, &err);
    zjuchat_list_models(c, &resp, &err);
    zjuchat_response_free(resp);
    zjuchat_request_free(req);
    zjuchat_client_free(c);
    /* The evented calls. */
    struct event_base *base = event_base_new();
    c = zjuchat_client_new(KEY, url, &err);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    assert_int_equal(ev_call(c, base, 0), 1);
    ev_call(c, base, 1); /* a JSON answer to a stream: refused, after the request */
    assert_int_equal(ev_call(c, base, 2), 1);
    zjuchat_client_free(c);
    event_base_free(base);
    pthread_join(cp->th, NULL);
    close(cp->lfd);
    for (int i = 0; i < 3; i++) {
        assert_true(cp->len[i] > 0);
        assert_non_null(strstr(cp->got[i], "Authorization: Bearer " KEY "\r\n"));
        if (cp->len[i] != cp->len[i + 3] ||
            memcmp(cp->got[i], cp->got[i + 3], cp->len[i]))
            fail_msg("request %d differs:\nlibcurl: %s\nown:     %s", i, cp->got[i],
                     cp->got[i + 3]);
    }
    free(cp);
}

/* An evented client whose environment names a proxy (http_proxy, as libcurl
 * reads it) keeps going through it: such calls stay on libcurl. */
static void proxy_from_environment_is_honoured(void **state)
{
    struct capture *cp = calloc(1, sizeof *cp);
    cp->n = 1;
    cp->lfd = listen_loopback(&cp->port);
    assert_true(cp->lfd >= 0);
    pthread_create(&cp->th, NULL, capture_run, cp);
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", cp->port);
    setenv("http_proxy", proxy, 1);
    struct event_base *base = event_base_new();
    zjuchat_error err;
    /* Nothing listens there: only the proxy can answer. */
    zjuchat_client *c = zjuchat_client_new(KEY, "http://upstream.invalid:9/v1", &err);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    int st = ev_call(c, base, 0);
    unsetenv("http_proxy"); /* libcurl reads it for every transfer */
    assert_int_equal(st, 1);
    zjuchat_client_free(c);
    event_base_free(base);
    pthread_join(cp->th, NULL);
    close(cp->lfd);
    assert_non_null(
        strstr(cp->got[0], "POST http://upstream.invalid:9/v1/chat/completions"));
    free(cp);
}

/* libcurl 7.88.1 keeps a pointer to the last response header an easy
 * handle stored, frees the header when the handle's next transfer starts,
 * and appends a folded first header line (leading space) of that next
 * reply to it (curl issue #11101, fixed in 8.1.0). So no easy handle may
 * carry a second transfer, neither the next call's nor a retry's. Found by
 * fuzz_upstream (issue 9); under ASan the old code fails here with a
 * heap-use-after-free in libcurl. */
static void folded_first_header_after_a_used_handle(void **state)
{
#define JSON_CLOSE "Content-Type: application/json\r\nConnection: close\r\n"
    static const char ok[] =
        "HTTP/1.1 200 OK\r\n" JSON_CLOSE "Content-Length: 2\r\n\r\n{}";
    static const char busy[] =
        "HTTP/1.1 503 Busy\r\n" JSON_CLOSE "Content-Length: 2\r\n\r\n{}";
    static const char folded[] =
        "HTTP/1.1 200 OK\r\n Folded: x\r\n" JSON_CLOSE "Content-Length: 2\r\n\r\n{}";
#undef JSON_CLOSE
    /* Next call, then a retry, then an ordinary call. */
    static const char *const replies[] = {ok, folded, busy, folded, ok};
    struct scripted *u = scripted_start(replies, 5);
    assert_non_null(u);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", u->port);
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, url, &err);
    assert_non_null(c);
    zjuchat_client_set_retries(c, 0, 0);
    zjuchat_response *resp = NULL;
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_OK);
    zjuchat_response_free(resp);
    resp = NULL;
    /* Libcurl refuses a fold with nothing before it: an error, not a crash. */
    assert_int_not_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_OK);
    zjuchat_client_set_retries(c, 1, 1);
    assert_int_not_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_OK);
    assert_int_equal(__atomic_load_n(&u->served, __ATOMIC_ACQUIRE), 4); /* retried */
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_OK);
    zjuchat_response_free(resp);
    zjuchat_client_free(c);
    scripted_stop(u);
}

/* An upstream that answers with malformed HTTP is a bad gateway: the call
 * ends with ZJUCHAT_ERR_PROTOCOL (the server's 502), said in our words.
 * libcurl 7.88.1 refuses such replies with codes that point elsewhere: a
 * folded first header line with CURLE_BAD_FUNCTION_ARGUMENT and no error
 * text (the library said 503 "upstream transfer failed: A libcurl function
 * was given a bad argument"), a header without a colon or a bad
 * Content-Length with CURLE_WEIRD_SERVER_REPLY, a status line that is not
 * HTTP/1.x with a 3-digit code with CURLE_UNSUPPORTED_PROTOCOL (said "bad
 * upstream URL": a configuration error), an unknown Transfer-Encoding with
 * CURLE_BAD_CONTENT_ENCODING. */
static void malformed_http_is_a_protocol_error(void **state)
{
#define JSON_CLOSE "Content-Type: application/json\r\nConnection: close\r\n"
#define OK_BODY "Content-Length: 2\r\n\r\n{}"
    static const char *const replies[] = {
        "HTTP/1.1 200 OK\r\n Folded: x\r\n" JSON_CLOSE OK_BODY,
        "HTTP/1.1 200 OK\r\n\tFolded: " KEY "\r\n" JSON_CLOSE OK_BODY,
        "HTTP/1.1 503 Busy\r\n Folded: x\r\n" JSON_CLOSE OK_BODY,
        "HTTP/1.1 200 OK\r\nNo colon here\r\n" JSON_CLOSE OK_BODY,
        "HTTP/1.1 200 OK\r\n" JSON_CLOSE "Content-Length: -5\r\n\r\n{}",
        "FOO BAR\r\n\r\n{}",
        "HTTP/1.1 1000 OK\r\n" JSON_CLOSE OK_BODY,
        "HTTP/1.1 200 OK\r\n" JSON_CLOSE "Transfer-Encoding: foo\r\n\r\n{}",
        /* the stream path too */
        "HTTP/1.1 200 OK\r\n Folded: x\r\nContent-Type: text/event-stream\r\n"
        "Connection: close\r\n\r\ndata: {}\r\n\r\n",
    };
#undef OK_BODY
#undef JSON_CLOSE
    int n = (int)(sizeof replies / sizeof *replies);
    struct scripted *u = scripted_start(replies, n);
    assert_non_null(u);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", u->port);
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, url, &err);
    assert_non_null(c);
    zjuchat_client_set_retries(c, 0, 0);
    for (int i = 0; i < n; i++) {
        zjuchat_response *resp = NULL;
        struct collected s = {0};
        zjuchat_code rc = i < n - 1 ? run_complete(c, NULL, &resp, &err)
                                    : run_stream(c, NULL, &s, &err);
        assert_null(resp);
        if (rc != ZJUCHAT_ERR_PROTOCOL || !strstr(err.message, "malformed HTTP response"))
            fail_msg("reply %d: code %d, \"%s\"", i, rc, err.message);
        assert_null(strstr(err.message, "bad argument"));
        assert_null(strstr(err.message, "URL"));
        assert_null(strstr(err.message, KEY));
        assert_null(strstr(err.message, "SECRET"));
    }
    zjuchat_client_free(c);
    scripted_stop(u);
}

/* More concurrent streams than one libcurl multi handle takes (the client
 * spreads them over several, curl_ev.c): every stream completes, and a
 * second wave reuses the first wave's connections instead of opening more. */
#define WAVE 300
struct wave {
    int done, ok, chunks;
};

static int wave_chunk(zjuchat_call *call, const zjuchat_chunk *chunk, void *ud)
{
    ((struct wave *)ud)->chunks++;
    return 0;
}

static void wave_done(zjuchat_call *call, const zjuchat_error *err,
                      const zjuchat_response *resp, void *ud)
{
    struct wave *w = ud;
    w->done++;
    w->ok += err->code == ZJUCHAT_OK;
}

static void run_wave(zjuchat_client *c, struct event_base *base, struct wave *w)
{
    zjuchat_error err;
    zjuchat_request *req =
        zjuchat_request_new_simple("deepseek-v3-671b#events=5,delay=50", "hi", NULL);
    zjuchat_callbacks cb = {NULL, wave_chunk, wave_done};
    for (int i = 0; i < WAVE; i++)
        assert_non_null(zjuchat_call_start(c, req, 1, &cb, w, &err));
    zjuchat_request_free(req);
    long t0 = now_ms();
    while (w->done < WAVE && now_ms() - t0 < 20000)
        event_base_loop(base, EVLOOP_ONCE);
}

static void many_streams_over_several_multi_handles(void **state)
{
    struct event_base *base = event_base_new();
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, mock.base, &err);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    struct wave first = {0}, second = {0};
    run_wave(c, base, &first);
    assert_int_equal(first.done, WAVE);
    assert_int_equal(first.ok, WAVE);
    assert_int_equal(first.chunks, WAVE * 7); /* role + 5 + finish */
    long opened = zjuchat_client_connections_opened(c);
    assert_int_equal(opened, WAVE); /* all at once: one connection each */
    run_wave(c, base, &second);
    assert_int_equal(second.ok, WAVE);
    assert_int_equal(second.chunks, WAVE * 7);
    assert_int_equal(zjuchat_client_connections_opened(c), opened);
    zjuchat_client_free(c);
    event_base_free(base);
}

/* After a burst, the extra multi handles and their idle connections are
 * freed once unused for the idle period (60 s by default, 300 ms here),
 * while the first keeps serving from its own idle connections. */
void zjuchat__transport_set_shard_idle_ms(zjuchat_client *client, long ms);

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void idle_multi_handles_are_freed_after_a_burst(void **state)
{
    struct event_base *base = event_base_new();
    zjuchat_error err;
    zjuchat_client *c = zjuchat_client_new(KEY, mock.base, &err);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    zjuchat__transport_set_shard_idle_ms(c, 300);
    struct wave burst = {0}, after = {0};
    run_wave(c, base, &burst);
    assert_int_equal(burst.ok, WAVE);
    int fds_after_burst = open_fds();
    struct timeval second = {1, 0};
    event_base_loopexit(base, &second);
    event_base_dispatch(base);
    int fds_idle = open_fds();
    /* 300 connections: 128 stay with the first handle, the rest close. */
    assert_true(fds_after_burst - fds_idle >= WAVE - 128 - 8);
    long opened = zjuchat_client_connections_opened(c);
    zjuchat_request *req =
        zjuchat_request_new_simple("deepseek-v3-671b#events=2,delay=10", "hi", NULL);
    zjuchat_callbacks cb = {NULL, wave_chunk, wave_done};
    for (int i = 0; i < 100; i++)
        assert_non_null(zjuchat_call_start(c, req, 1, &cb, &after, &err));
    zjuchat_request_free(req);
    long t0 = now_ms();
    while (after.done < 100 && now_ms() - t0 < 10000)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(after.ok, 100);
    assert_int_equal(zjuchat_client_connections_opened(c), opened); /* all reused */
    zjuchat_client_free(c);
    event_base_free(base);
}

static void tls_verification_and_reuse(void **state)
{
    char dir[] = "/tmp/zjutlsXXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[1024], cert[300], key[300];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
             key, cert);
    assert_int_equal(system(cmd), 0);
    struct mockproc tls;
    const char *args[] = {"--key", KEY, "--tls-cert", cert, "--tls-key", key, NULL};
    assert_int_equal(mock_start(&tls, args), 0);
    assert_non_null(strstr(tls.base, "https://"));

    zjuchat_error err;
    zjuchat_response *resp = NULL;
    zjuchat_client *c = zjuchat_client_new(KEY, tls.base, &err);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(run_complete(c, NULL, &resp, &err), ZJUCHAT_ERR_NETWORK);
    assert_int_equal(err.detail, ZJUCHAT_NET_TLS);
    zjuchat_client_free(c);

    c = zjuchat_client_new(KEY, tls.base, &err);
    zjuchat_client_set_ca_file(c, cert);
    for (int i = 0; i < 4; i++) {
        struct collected s = {0};
        assert_int_equal(run_stream(c, "deepseek-v3-671b#events=3", &s, &err),
                         ZJUCHAT_OK);
        assert_int_equal(s.chunks, 5);
    }
    assert_int_equal(zjuchat_client_connections_opened(c), 1);
    zjuchat_client_free(c);
    assert_int_equal(mock_stop(&tls), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* The same over the evented calls (the library's own transport): the peer
 * verified against the system store or the client's CA file, the host name
 * checked, --insecure honoured, one connection for a run of calls. */
static int ev_status(zjuchat_client *c, struct event_base *base, zjuchat_error *out)
{
    zjuchat_callbacks cb = {NULL, NULL, ev_record};
    struct ev_result r = {0};
    zjuchat_request *req =
        zjuchat_request_new_simple("deepseek-v3-671b#events=3", "hi", NULL);
    zjuchat_error err;
    assert_non_null(zjuchat_call_start(c, req, 1, &cb, &r, &err));
    zjuchat_request_free(req);
    long t0 = now_ms();
    while (!r.done && now_ms() - t0 < 5000)
        event_base_loop(base, EVLOOP_ONCE);
    *out = r.err;
    return r.done ? (int)r.err.code : -1;
}

static void evented_tls(void **state)
{
    char dir[] = "/tmp/zjutlsXXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[1024], cert[300], key[300];
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
             key, cert);
    assert_int_equal(system(cmd), 0);
    struct mockproc tls;
    const char *args[] = {"--key", KEY, "--tls-cert", cert, "--tls-key", key, NULL};
    assert_int_equal(mock_start(&tls, args), 0);
    char by_name[200];
    snprintf(by_name, sizeof by_name, "https://localhost:%d/v1", tls.port);
    struct event_base *base = event_base_new();
    zjuchat_error err;
    for (int mode = 0; mode < 4; mode++) {
        /* 0: system store, 1: the CA file, 2: the CA file but a name the
         * certificate does not hold, 3: insecure */
        zjuchat_client *c = zjuchat_client_new(KEY, mode == 2 ? by_name : tls.base, &err);
        zjuchat_client_set_retries(c, 0, 0);
        if (mode == 1 || mode == 2)
            zjuchat_client_set_ca_file(c, cert);
        if (mode == 3)
            zjuchat_client_set_insecure(c, 1);
        assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
        int calls = mode == 1 ? 4 : 1;
        for (int i = 0; i < calls; i++) {
            int rc = ev_status(c, base, &err);
            if (mode == 0 || mode == 2) {
                if (rc != ZJUCHAT_ERR_NETWORK || err.detail != ZJUCHAT_NET_TLS)
                    fail_msg("mode %d: %d %s", mode, rc, err.message);
            } else if (rc != ZJUCHAT_OK) {
                fail_msg("mode %d: %d %s", mode, rc, err.message);
            }
        }
        if (mode == 1)
            assert_int_equal(zjuchat_client_connections_opened(c), 1);
        zjuchat_client_free(c);
    }
    event_base_free(base);
    assert_int_equal(mock_stop(&tls), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* A temporary directory (dir: a mkdtemp template, filled in) holding
 * cert.pem and key.pem, a self-signed EC certificate for 127.0.0.1. */
static void make_ec_cert(char *dir, char *cert, size_t cert_len, char *key,
                         size_t key_len)
{
    char cmd[1024];
    assert_non_null(mkdtemp(dir));
    snprintf(cert, cert_len, "%s/cert.pem", dir);
    snprintf(key, key_len, "%s/key.pem", dir);
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
             "-keyout %s -out %s 2>/dev/null",
             key, cert);
    assert_int_equal(system(cmd), 0);
}

/* The TLS context is built when the client is bound to the loop, so its CA
 * file is read then, not at the first call (Debian's store took ~30 ms of
 * each worker's first call); a CA file set afterwards still counts, from the
 * next new connection. */
static void evented_tls_store_loaded_at_bind(void **state)
{
    char dir[] = "/tmp/zjutlsXXXXXX";
    char cmd[2048], cert[300], key[300], copy[300];
    make_ec_cert(dir, cert, sizeof cert, key, sizeof key);
    snprintf(copy, sizeof copy, "%s/ca-copy.pem", dir);
    snprintf(cmd, sizeof cmd, "cp %s %s", cert, copy);
    assert_int_equal(system(cmd), 0);
    struct mockproc tls;
    const char *args[] = {"--key", KEY, "--tls-cert", cert, "--tls-key", key, NULL};
    assert_int_equal(mock_start(&tls, args), 0);
    struct event_base *base = event_base_new();
    zjuchat_error err;

    /* the CA file is gone before the first call: it was loaded at the bind */
    zjuchat_client *c = zjuchat_client_new(KEY, tls.base, &err);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(zjuchat_client_set_ca_file(c, copy), ZJUCHAT_OK);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    assert_int_equal(unlink(copy), 0);
    for (int i = 0; i < 2; i++)
        if (ev_status(c, base, &err) != ZJUCHAT_OK)
            fail_msg("call %d after the CA file went: %s", i, err.message);
    zjuchat_client_free(c);

    /* bound with the system store (which does not trust the mock), then
     * given the CA file: the context is built again, the call verifies */
    c = zjuchat_client_new(KEY, tls.base, &err);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    assert_int_equal(zjuchat_client_set_ca_file(c, cert), ZJUCHAT_OK);
    if (ev_status(c, base, &err) != ZJUCHAT_OK)
        fail_msg("CA file set after the bind: %s", err.message);
    zjuchat_client_free(c);

    /* a CA file that cannot be read, set after the bind: the call fails as
     * a TLS error (the system store built at the bind would refuse the mock
     * too, so this checks the error, not that the context was dropped: the
     * part above checks that) */
    c = zjuchat_client_new(KEY, tls.base, &err);
    zjuchat_client_set_retries(c, 0, 0);
    assert_int_equal(zjuchat_client_use_event_base(c, base), ZJUCHAT_OK);
    assert_int_equal(zjuchat_client_set_ca_file(c, copy), ZJUCHAT_OK);
    int rc = ev_status(c, base, &err);
    if (rc != ZJUCHAT_ERR_NETWORK || err.detail != ZJUCHAT_NET_TLS)
        fail_msg("unreadable CA file: %d %s", rc, err.message);
    zjuchat_client_free(c);

    event_base_free(base);
    assert_int_equal(mock_stop(&tls), 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* What zjuchat_ca_file_check says of each kind of CA file a deployment
 * could name: the mock's certificate, a file that is not PEM, a PEM file
 * with a key and no certificate, an empty file, one nobody may read, a
 * directory, and a path that is not there. The message never repeats the path. */
static void ca_file_check_says_why(void **state)
{
    char dir[] = "/tmp/zjucacheckXXXXXX";
    char cmd[4096], cert[64], key[64], junk[64], empty[64], locked[64], gone[64];
    make_ec_cert(dir, cert, sizeof cert, key, sizeof key);
    snprintf(junk, sizeof junk, "%s/junk.pem", dir);
    snprintf(empty, sizeof empty, "%s/empty.pem", dir);
    snprintf(locked, sizeof locked, "%s/locked.pem", dir);
    snprintf(gone, sizeof gone, "%s/gone.pem", dir);
    snprintf(
        cmd, sizeof cmd,
        "echo 'this is not a certificate' > %s && : > %s && cp %s %s && chmod 000 %s",
        junk, empty, cert, locked, locked);
    assert_int_equal(system(cmd), 0);
    zjuchat_error err;

    assert_int_equal(zjuchat_ca_file_check(cert, &err), ZJUCHAT_OK);
    const char *bad[] = {junk, key, empty};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(zjuchat_ca_file_check(bad[i], &err), ZJUCHAT_ERR_CONFIG);
        assert_non_null(strstr(err.message, "holds no certificate"));
        assert_null(strstr(err.message, dir));
    }
    assert_int_equal(zjuchat_ca_file_check(gone, &err), ZJUCHAT_ERR_CONFIG);
    assert_string_equal(err.message, "cannot be read: No such file or directory");
    assert_int_equal(zjuchat_ca_file_check(dir, &err), ZJUCHAT_ERR_CONFIG);
    assert_string_equal(err.message, "is a directory, not a file");
    if (geteuid() != 0) { /* root reads a mode-000 file */
        assert_int_equal(zjuchat_ca_file_check(locked, &err), ZJUCHAT_ERR_CONFIG);
        assert_string_equal(err.message, "cannot be read: Permission denied");
    }
    assert_int_equal(zjuchat_ca_file_check("", &err), ZJUCHAT_ERR_INVALID);
    assert_int_equal(zjuchat_ca_file_check(NULL, NULL), ZJUCHAT_ERR_INVALID);

    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(complete_returns_content_reasoning_usage),
        cmocka_unit_test(stream_matches_complete_with_chinese_and_emoji),
        cmocka_unit_test(stream_event_count_and_split_reads),
        cmocka_unit_test(garbage_lines_are_skipped),
        cmocka_unit_test(connection_is_reused_across_calls),
        cmocka_unit_test(missing_key_is_a_config_error_naming_the_variable),
        cmocka_unit_test(wrong_key_is_an_api_error),
        cmocka_unit_test(network_errors_have_details),
        cmocka_unit_test(connect_timeout),
        cmocka_unit_test(api_errors_carry_status_and_message),
        cmocka_unit_test(echoed_key_never_reaches_the_caller),
        cmocka_unit_test(protocol_errors),
        cmocka_unit_test(each_timeout),
        cmocka_unit_test(retries_until_success),
        cmocka_unit_test(retry_after_is_honoured),
        cmocka_unit_test(retry_budget_bounds_the_waits),
        cmocka_unit_test(cancel_by_flag_and_by_callback),
        cmocka_unit_test(list_models),
        cmocka_unit_test(evented_concurrent_streams),
        cmocka_unit_test(evented_read_end_follows_each_read),
        cmocka_unit_test(many_streams_over_several_multi_handles),
        cmocka_unit_test(idle_connection_closed_by_upstream),
        cmocka_unit_test(stale_kept_alive_connection_is_replaced),
        cmocka_unit_test(both_framings_is_malformed),
        cmocka_unit_test(request_bytes_match_libcurl),
        cmocka_unit_test(proxy_from_environment_is_honoured),
        cmocka_unit_test(folded_first_header_after_a_used_handle),
        cmocka_unit_test(malformed_http_is_a_protocol_error),
        cmocka_unit_test(idle_multi_handles_are_freed_after_a_burst),
        cmocka_unit_test(tls_verification_and_reuse),
        cmocka_unit_test(evented_tls),
        cmocka_unit_test(evented_tls_store_loaded_at_bind),
        cmocka_unit_test(ca_file_check_says_why),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
