/*
 * POST .../chat/completions of the mock: records the request for /_mock/last,
 * resolves the directives (global < X-Mock header < '#' suffix of the model),
 * validates like the real API and plans the answer; stream.c delivers it,
 * after the `think` delay if one is asked.
 */
#include "mock.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/keyvalq_struct.h>

#define BIG_ERROR_BYTES (16u << 20)

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    default:
        return "OTHER";
    }
}

/* A JSON string of arbitrary bytes: invalid UTF-8 bytes become '?'. */
static json_t *lossy_string(const char *p, size_t n)
{
    json_t *s = json_stringn(p, n);
    char *copy;
    if (s || !(copy = malloc(n + 1)))
        return s;
    for (size_t i = 0; i < n; i++)
        copy[i] = (unsigned char)p[i] >= 0x80 || p[i] == '\0' ? '?' : p[i];
    s = json_stringn(copy, n);
    free(copy);
    return s;
}

/* Keeps the request as JSON text for GET /_mock/last. */
static void record_last(struct evhttp_request *req, const char *body, size_t len)
{
    json_t *h = json_object();
    struct evkeyval *kv;
    for (kv = evhttp_request_get_input_headers(req)->tqh_first; kv;
         kv = kv->next.tqe_next) {
        char name[256];
        size_t i;
        for (i = 0; kv->key[i] && i < sizeof(name) - 1; i++)
            name[i] = (char)tolower((unsigned char)kv->key[i]);
        name[i] = '\0';
        json_object_set_new(h, name, lossy_string(kv->value, strlen(kv->value)));
    }
    const char *uri = evhttp_request_get_uri(req);
    json_t *o = json_pack("{s:s,s:o,s:o,s:o}", "method",
                          method_name(evhttp_request_get_command(req)), "path",
                          lossy_string(uri, strlen(uri)), "headers", h, "body",
                          lossy_string(body, len));
    free(mock.last);
    mock.last = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
}

/* Plans an error answer with an OpenAI-style body (or html/empty). */
static void plan_error(struct mock_req *m, int status, const char *type, const char *code,
                       const char *msg)
{
    m->kind = MOCK_KIND_REPLY;
    m->status = status;
    m->body = evbuffer_new();
    if (!m->body)
        return;
    if (m->d.body == MOCK_BODY_EMPTY) {
        m->ctype = "application/json";
        return;
    }
    if (m->d.body == MOCK_BODY_HTML) {
        m->ctype = "text/html";
        evbuffer_add_printf(
            m->body,
            "<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n"
            "<center><h1>%d %s</h1></center>\r\n<hr><center>nginx</center>"
            "\r\n</body>\r\n</html>\r\n",
            status, mock_reason(status), status, mock_reason(status));
        return;
    }
    m->ctype = "application/json";
    char full[2048];
    snprintf(full, sizeof(full), "%s%s%s%s", msg,
             m->d.echo_key == 1 ? " (Authorization: " : "",
             m->d.echo_key == 1 && m->auth ? m->auth : "", m->d.echo_key == 1 ? ")" : "");
    json_t *js = lossy_string(full, strlen(full));
    json_t *o = json_pack("{s:{s:o,s:s,s:s?}}", "error", "message", js, "type", type,
                          "code", code);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s)
        evbuffer_add(m->body, s, strlen(s));
    free(s);
    json_decref(o);
}

static void plan_big_error(struct mock_req *m)
{
    static const char head[] = "{\"error\":{\"message\":\"";
    static const char tail[] = "\",\"type\":\"server_error\",\"code\":\"big_error\"}}";
    char chunk[4096];
    m->kind = MOCK_KIND_REPLY;
    m->status = 500;
    m->ctype = "application/json";
    m->body = evbuffer_new();
    if (!m->body)
        return;
    memset(chunk, 'x', sizeof(chunk));
    evbuffer_add(m->body, head, sizeof(head) - 1);
    size_t fill = BIG_ERROR_BYTES - (sizeof(head) - 1) - (sizeof(tail) - 1);
    for (size_t done = 0; done < fill; done += sizeof(chunk))
        evbuffer_add(m->body, chunk,
                     fill - done < sizeof(chunk) ? fill - done : sizeof(chunk));
    evbuffer_add(m->body, tail, sizeof(tail) - 1);
}

static const char *status_type(int status)
{
    if (status == 401)
        return "authentication_error";
    if (status == 429)
        return "rate_limit_error";
    if (status >= 500)
        return "server_error";
    return "invalid_request_error";
}

/* Token counts are a pure function of the input so tests can predict them. */
static int count_prompt_tokens(json_t *messages)
{
    size_t i;
    json_t *msg;
    int tokens = 0;
    json_array_foreach(messages, i, msg)
    {
        size_t len = json_string_length(json_object_get(msg, "content"));
        tokens += 4 + (int)((len + 3) / 4);
    }
    return tokens;
}

/* Validates the request body; plans a 4xx and returns -1 if it is invalid. */
static int validate(struct mock_req *m, json_t *o, const char *model, int model_is_str)
{
    json_t *msgs = json_object_get(o, "messages"), *stream = json_object_get(o, "stream");
    size_t i;
    json_t *msg;
    if (!model_is_str || !model[0]) {
        plan_error(m, 400, "invalid_request_error", "missing_model",
                   "'model' must be a non-empty string");
        return -1;
    }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        plan_error(m, 400, "invalid_request_error", "invalid_messages",
                   "'messages' must be a non-empty array");
        return -1;
    }
    json_array_foreach(msgs, i, msg)
    {
        const char *role = json_string_value(json_object_get(msg, "role"));
        if (!json_is_object(msg) || !role ||
            (strcmp(role, "system") && strcmp(role, "user") &&
             strcmp(role, "assistant") && strcmp(role, "tool")) ||
            !json_is_string(json_object_get(msg, "content"))) {
            char msgtext[128];
            snprintf(msgtext, sizeof(msgtext),
                     "messages[%zu] needs a role (system, user, assistant or tool) and a "
                     "string content",
                     i);
            plan_error(m, 400, "invalid_request_error", "invalid_messages", msgtext);
            return -1;
        }
    }
    if (stream && !json_is_boolean(stream)) {
        plan_error(m, 400, "invalid_request_error", "invalid_type",
                   "'stream' must be a boolean");
        return -1;
    }
    if (!mock_model_known(model)) {
        char msgtext[256];
        snprintf(msgtext, sizeof(msgtext), "The model '%.100s' does not exist", model);
        plan_error(m, 404, "invalid_request_error", "model_not_found", msgtext);
        return -1;
    }
    return 0;
}

static void plan_success(struct mock_req *m, json_t *o, const char *model)
{
    json_t *mj = json_string(model);
    m->is_stream = json_is_true(json_object_get(o, "stream"));
    m->reasoning_model = strstr(model, "r1") || strstr(model, "QwQ");
    if (!m->reasoning_model)
        m->d.reasoning = 0;
    m->model_json = mj ? json_dumps(mj, JSON_ENCODE_ANY) : NULL;
    json_decref(mj);
    m->id = ++mock.next_id;
    m->created = (long long)time(NULL);
    m->prompt_tokens = count_prompt_tokens(json_object_get(o, "messages"));
    if (m->is_stream) {
        if (m->d.faults & MOCK_FAULT_NOT_SSE) {
            m->kind = MOCK_KIND_REPLY;
            m->status = 200;
            m->ctype = "text/plain";
            m->body = evbuffer_new();
            if (m->body)
                evbuffer_add_printf(m->body, "this is not an event stream\n");
        } else {
            m->kind = m->d.faults & MOCK_FAULT_ENDLESS_LINE ? MOCK_KIND_ENDLESS
                                                            : MOCK_KIND_STREAM;
        }
        return;
    }
    char *content = mock_content_join(m->d.events, 0);
    char *reasoning = mock_content_join(m->d.reasoning, 1);
    int completion = m->d.events + m->d.reasoning;
    json_t *message = json_pack("{s:s,s:s?}", "role", "assistant", "content", content);
    if (message && m->reasoning_model)
        json_object_set_new(message, "reasoning_content", json_string(reasoning));
    json_t *resp =
        json_pack("{s:s,s:s,s:I,s:s,s:[{s:i,s:o,s:s}],s:{s:i,s:i,s:i}}", "id", "",
                  "object", "chat.completion", "created", (json_int_t)m->created, "model",
                  model, "choices", "index", 0, "message", message, "finish_reason",
                  "stop", "usage", "prompt_tokens", m->prompt_tokens, "completion_tokens",
                  completion, "total_tokens", m->prompt_tokens + completion);
    char id[64];
    snprintf(id, sizeof(id), "chatcmpl-%llu", m->id);
    json_object_set_new(resp, "id", json_string(id));
    char *s = resp ? json_dumps(resp, JSON_COMPACT) : NULL;
    free(content);
    free(reasoning);
    json_decref(resp);
    m->kind = m->d.faults & MOCK_FAULT_MID ? MOCK_KIND_PARTIAL : MOCK_KIND_REPLY;
    m->status = 200;
    m->ctype = "application/json";
    m->body = evbuffer_new();
    if (m->body && s)
        evbuffer_add(m->body, s, strlen(s));
    free(s);
}

static void on_complete(struct evhttp_request *req, void *arg)
{
    mock_req_free(arg);
}

static int content_type_ok(struct evhttp_request *req)
{
    const char *ct =
        evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (!ct)
        return 0;
    while (*ct == ' ')
        ct++;
    return !strncasecmp(ct, "application/json", 16) &&
           (ct[16] == '\0' || ct[16] == ';' || ct[16] == ' ');
}

/* Resolves directives: global, then the X-Mock header, then the '#' suffix. */
static int resolve(struct mock_req *m, const char *suffix, char *err, size_t errlen)
{
    struct mock_directives layer;
    const char *h =
        evhttp_find_header(evhttp_request_get_input_headers(m->req), "X-Mock");
    m->d = mock.global;
    if (h) {
        mock_directives_clear(&layer);
        if (mock_directives_parse(h, strlen(h), &layer, err, errlen) < 0)
            return -1;
        mock_directives_merge(&m->d, &layer);
    }
    if (suffix) {
        mock_directives_clear(&layer);
        if (mock_directives_parse(suffix, strlen(suffix), &layer, err, errlen) < 0)
            return -1;
        mock_directives_merge(&m->d, &layer);
    }
    return 0;
}

/* Decides the answer of m; o is the parsed body or NULL. */
static void plan(struct mock_req *m, json_t *o)
{
    const char *raw = json_string_value(json_object_get(o, "model"));
    char model[256] = "", err[256];
    const char *suffix = NULL;
    int model_is_str = raw != NULL;
    if (raw) {
        snprintf(model, sizeof(model), "%s", raw);
        char *hash = strchr(model, '#');
        if (hash) {
            *hash = '\0';
            /* The suffix comes from raw: the copy may have been cut at 255. */
            suffix = strchr(raw, '#') + 1;
        }
    }
    if (resolve(m, suffix, err, sizeof(err)) < 0) {
        m->d = mock.global;
        plan_error(m, 400, "invalid_request_error", "invalid_mock_directive", err);
        return;
    }
    if (m->d.faults & MOCK_FAULT_HANG_HEADERS) {
        m->kind = MOCK_KIND_HANG;
        return;
    }
    if (!mock_auth_ok(m->req)) {
        plan_error(m, 401, "invalid_request_error", "invalid_api_key",
                   m->auth ? "Incorrect API key provided."
                           : "You didn't provide an API key.");
        return;
    }
    if (mock.fail_next > 0) {
        char msg[64];
        mock.fail_next--;
        snprintf(msg, sizeof(msg), "mock: injected failure (status %d)",
                 mock.fail_status);
        plan_error(m, mock.fail_status, status_type(mock.fail_status), NULL, msg);
        return;
    }
    if (m->d.status > 0) {
        char msg[64];
        snprintf(msg, sizeof(msg), "mock: injected status %d", m->d.status);
        plan_error(m, m->d.status, status_type(m->d.status), NULL, msg);
        return;
    }
    if (m->d.faults & MOCK_FAULT_BIG_ERROR) {
        plan_big_error(m);
        return;
    }
    if (!content_type_ok(m->req)) {
        plan_error(m, 415, "invalid_request_error", "unsupported_media_type",
                   "Content-Type must be application/json");
        return;
    }
    if (!json_is_object(o)) {
        plan_error(m, 400, "invalid_request_error", "invalid_json",
                   "The request body must be a JSON object");
        return;
    }
    if (validate(m, o, model, model_is_str) < 0)
        return;
    plan_success(m, o, model);
}

void mock_chat_handle(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    const char *auth =
        evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    struct mock_req *m = calloc(1, sizeof(*m));

    mock.stats.chat_requests++;
    record_last(req, body, len);
    if (!m) {
        mock_send_error(req, 500, "server_error", NULL, "mock out of memory");
        return;
    }
    m->req = req;
    m->conn = mock_conn_of(req);
    if (m->conn)
        m->conn->cur = m;
    m->auth = auth ? strdup(auth) : NULL;
    evhttp_request_set_on_complete_cb(req, on_complete, m);

    /* \u0000 is valid JSON, and an OpenAI-compatible API takes it in a
     * message: a body carrying one is not refused as invalid. */
    json_t *o = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
    plan(m, o);
    json_decref(o);

    if (m->kind == MOCK_KIND_HANG) {
        mock_req_watch(m, 1);
        return;
    }
    if (m->d.think_ms > 0) {
        mock_req_watch(m, 1);
        mock_req_arm(m, MOCK_T_THINK, m->d.think_ms);
        return;
    }
    mock_req_answer(m);
}
