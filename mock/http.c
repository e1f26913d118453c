/*
 * Request routing of the mock (any prefix before the API paths, so both
 * /v1/... and /api/ai/v1/... work), the control endpoints under /_mock/ (no
 * auth: tests drive them) and the immediate OpenAI-style JSON error answer.
 */
#include "mock.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/keyvalq_struct.h>

int64_t mock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *mock_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

/* Sends a JSON value (stolen) with the given status. */
static void send_json(struct evhttp_request *req, int status, json_t *v)
{
    struct evbuffer *b = evbuffer_new();
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (b && s)
        evbuffer_add(b, s, strlen(s));
    free(s);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, status, mock_reason(status), b);
    if (b)
        evbuffer_free(b);
}

void mock_send_error(struct evhttp_request *req, int status, const char *type,
                     const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* Messages may quote client bytes: json_string rejects invalid UTF-8. */
    json_t *m = json_string(msg);
    if (!m)
        m = json_string("invalid request");
    send_json(req, status,
              json_pack("{s:{s:o,s:s,s:n,s:s?}}", "error", "message", m, "type", type,
                        "param", "code", code));
}

static json_t *stats_json(void)
{
    const struct mock_stats *s = &mock.stats;
    return json_pack(
        "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "connections_accepted",
        (json_int_t)s->connections_accepted, "connections_open",
        (json_int_t)s->connections_open, "connections_closed_by_client",
        (json_int_t)s->connections_closed_by_client, "requests", (json_int_t)s->requests,
        "chat_requests", (json_int_t)s->chat_requests, "embedding_requests",
        (json_int_t)s->embedding_requests, "models_requests",
        (json_int_t)s->models_requests, "streams_active", (json_int_t)s->streams_active,
        "streams_completed", (json_int_t)s->streams_completed, "last_close_ms",
        (json_int_t)s->last_close_ms, "now_ms", (json_int_t)mock_now_ms());
}

static json_t *config_json(void)
{
    json_t *o = mock_directives_to_json(&mock.global);
    if (o) {
        json_object_set_new(o, "fail_next", json_integer(mock.fail_next));
        json_object_set_new(o, "fail_status", json_integer(mock.fail_status));
        mock_models_to_json(&mock.models, o);
    }
    return o;
}

/* POST /_mock/config: applies a JSON object of directives to the global layer. */
static void handle_config(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    json_error_t jerr;
    json_t *o = json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, &jerr);
    struct mock_directives d = mock.global;
    int fail_next = mock.fail_next, fail_status = mock.fail_status;
    struct mock_models_ctl models = mock.models;
    const char *key;
    json_t *v;
    char err[256];

    if (!o || !json_is_object(o)) {
        json_decref(o);
        mock_send_error(req, 400, "invalid_request_error", "invalid_json",
                        "/_mock/config wants a JSON object");
        return;
    }
    if (json_is_true(json_object_get(o, "reset"))) {
        d = mock.cli;
        fail_next = 0;
        fail_status = 503;
        memset(&models, 0, sizeof(models));
    }
    json_object_foreach(o, key, v)
    {
        char val[64];
        if (!strcmp(key, "reset"))
            continue;
        if (json_is_integer(v))
            snprintf(val, sizeof(val), "%lld", (long long)json_integer_value(v));
        else if (json_is_boolean(v))
            snprintf(val, sizeof(val), "%d", json_is_true(v) ? 1 : 0);
        else if (json_is_string(v))
            snprintf(val, sizeof(val), "%s", json_string_value(v));
        else {
            json_decref(o);
            mock_send_error(req, 400, "invalid_request_error", "invalid_config",
                            "bad value for %s", key);
            return;
        }
        if (!strcmp(key, "fail_next") || !strcmp(key, "fail_status")) {
            long n = strtol(val, NULL, 10);
            if (n < 0 || n > 1000000 || (!strcmp(key, "fail_status") && n < 100) ||
                n > (strcmp(key, "fail_status") ? 1000000 : 599)) {
                json_decref(o);
                mock_send_error(req, 400, "invalid_request_error", "invalid_config",
                                "bad value for %s", key);
                return;
            }
            *(strcmp(key, "fail_next") ? &fail_status : &fail_next) = (int)n;
            continue;
        }
        int r = mock_models_set(&models, key, val, err, sizeof(err));
        if (r < 0 || (r > 0 && mock_directives_set(&d, key, val, err, sizeof(err)) < 0)) {
            json_decref(o);
            mock_send_error(req, 400, "invalid_request_error", "invalid_config", "%s",
                            err);
            return;
        }
    }
    json_decref(o);
    mock.global = d;
    mock.fail_next = fail_next;
    mock.fail_status = fail_status;
    mock.models = models;
    send_json(req, 200, config_json());
}

/* Zeroes the counters; the gauges (open connections, active streams) stay true. */
static void reset_stats(void)
{
    uint64_t open = mock.stats.connections_open, active = mock.stats.streams_active;
    memset(&mock.stats, 0, sizeof(mock.stats));
    mock.stats.connections_open = open;
    mock.stats.streams_active = active;
}

static int has_suffix(const char *path, const char *suffix)
{
    size_t lp = strlen(path), ls = strlen(suffix);
    return lp >= ls && !strcmp(path + lp - ls, suffix);
}

int mock_auth_ok(struct evhttp_request *req)
{
    const char *h =
        evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    return h && !strncasecmp(h, "Bearer ", 7) && h[7] &&
           (!mock.key || !strcmp(h + 7, mock.key));
}

/* The id after ".../models/", URL-decoded (new string), or NULL. */
static char *model_id(const char *path)
{
    const char *p = strstr(path, "/models/");
    size_t n;
    char *id;
    if (!p || !p[8])
        return NULL;
    id = evhttp_uridecode(p + 8, 0, &n);
    if (id && strlen(id) != n) /* a %00 in the id: no model has one */
        id[0] = '\0';
    return id;
}

/* Sends 405 unless method is want; returns 1 if it did. */
static int wrong_method(struct evhttp_request *req, enum evhttp_cmd_type method,
                        enum evhttp_cmd_type want)
{
    if (method == want)
        return 0;
    mock_send_error(req, 405, "invalid_request_error", NULL, "Method not allowed, use %s",
                    want == EVHTTP_REQ_GET ? "GET" : "POST");
    return 1;
}

void mock_http_route(struct evhttp_request *req, void *arg)
{
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const char *uri = evhttp_request_get_uri(req);
    char path[1024];
    size_t n = strcspn(uri, "?#");

    mock.stats.requests++;
    if (n >= sizeof(path)) {
        mock_send_error(req, 414, "invalid_request_error", NULL, "URI too long");
        return;
    }
    memcpy(path, uri, n);
    path[n] = '\0';
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';

    if (!strncmp(path, "/_mock/", 7)) {
        if (!strcmp(path, "/_mock/stats") && method == EVHTTP_REQ_GET)
            send_json(req, 200, stats_json());
        else if (!strcmp(path, "/_mock/last") && method == EVHTTP_REQ_GET) {
            if (mock.last)
                send_json(req, 200, json_loads(mock.last, 0, NULL));
            else
                mock_send_error(req, 404, "invalid_request_error", NULL,
                                "no chat or embeddings request yet");
        } else if (!strcmp(path, "/_mock/config") && method == EVHTTP_REQ_POST)
            handle_config(req);
        else if (!strcmp(path, "/_mock/config") && method == EVHTTP_REQ_GET)
            send_json(req, 200, config_json());
        else if (!strcmp(path, "/_mock/reset-stats") && method == EVHTTP_REQ_POST) {
            reset_stats();
            send_json(req, 200, stats_json());
        } else
            mock_send_error(req, 404, "invalid_request_error", NULL, "unknown control %s",
                            path);
        return;
    }
    if (has_suffix(path, "/chat/completions")) {
        if (!wrong_method(req, method, EVHTTP_REQ_POST))
            mock_chat_handle(req);
        return;
    }
    if (has_suffix(path, "/embeddings")) {
        if (!wrong_method(req, method, EVHTTP_REQ_POST))
            mock_embeddings_handle(req);
        return;
    }
    if (has_suffix(path, "/models")) {
        if (!wrong_method(req, method, EVHTTP_REQ_GET))
            mock_models_handle(req, NULL);
        return;
    }
    char *id = model_id(path);
    if (id) {
        if (!wrong_method(req, method, EVHTTP_REQ_GET))
            mock_models_handle(req, id);
        free(id);
        return;
    }
    mock_send_error(req, 404, "invalid_request_error", "unknown_url", "Unknown URL: %s",
                    path);
}
