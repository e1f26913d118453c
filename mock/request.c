/*
 * What every API request of the mock shares (chat completions, embeddings, the
 * model list): its record, /_mock/last, the directive layers (global < X-Mock
 * header < '#' suffix of the model), the answers planned before validation
 * (hang, 401, injected failures, 415, not a JSON object), the OpenAI-shaped
 * error body, and the start of the answer (now, after `think`, or never).
 */
#include "mock.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

void mock_record_last(struct evhttp_request *req, const char *body, size_t len)
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

static void on_complete(struct evhttp_request *req, void *arg)
{
    mock_req_free(arg);
}

struct mock_req *mock_req_new(struct evhttp_request *req)
{
    const char *auth =
        evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    struct mock_req *m = calloc(1, sizeof(*m));
    if (!m) {
        mock_send_error(req, 500, "server_error", NULL, "mock out of memory");
        return NULL;
    }
    m->req = req;
    m->d = mock.global;
    m->conn = mock_conn_of(req);
    if (m->conn)
        m->conn->cur = m;
    m->auth = auth ? strdup(auth) : NULL;
    evhttp_request_set_on_complete_cb(req, on_complete, m);
    return m;
}

void mock_plan_error(struct mock_req *m, int status, const char *type, const char *code,
                     const char *param, const char *msg)
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
    /* OpenAI always sends all four fields, null when they do not apply (s?). */
    json_t *o = json_pack("{s:{s:o,s:s,s:s?,s:s?}}", "error", "message", js, "type", type,
                          "param", param, "code", code);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s)
        evbuffer_add(m->body, s, strlen(s));
    free(s);
    json_decref(o);
}

void mock_plan_ok(struct mock_req *m, struct evbuffer *body)
{
    if (!body) {
        mock_plan_error(m, 500, "server_error", NULL, NULL, "mock out of memory");
        return;
    }
    m->kind = m->d.faults & MOCK_FAULT_MID ? MOCK_KIND_PARTIAL : MOCK_KIND_REPLY;
    m->status = 200;
    m->ctype = "application/json";
    m->body = body;
}

void mock_plan_json(struct mock_req *m, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    struct evbuffer *b = s ? evbuffer_new() : NULL;
    if (b && evbuffer_add(b, s, strlen(s)) < 0) {
        evbuffer_free(b);
        b = NULL;
    }
    free(s);
    json_decref(v);
    mock_plan_ok(m, b);
}

static void plan_big_error(struct mock_req *m)
{
    static const char head[] = "{\"error\":{\"message\":\"";
    static const char tail[] =
        "\",\"type\":\"server_error\",\"param\":null,\"code\":\"big_error\"}}";
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

const char *mock_status_type(int status)
{
    if (status == 401)
        return "authentication_error";
    if (status == 429)
        return "rate_limit_error";
    if (status >= 500)
        return "server_error";
    return "invalid_request_error";
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

int mock_req_front(struct mock_req *m, json_t *o, char *model, size_t modellen,
                   int *model_is_str)
{
    const char *raw = json_string_value(json_object_get(o, "model"));
    const char *suffix = NULL;
    char err[256];
    *model_is_str = raw != NULL;
    model[0] = '\0';
    if (raw) {
        snprintf(model, modellen, "%s", raw);
        char *hash = strchr(model, '#');
        if (hash) {
            *hash = '\0';
            /* The suffix comes from raw: the copy may have been cut short. */
            suffix = strchr(raw, '#') + 1;
        }
    }
    if (resolve(m, suffix, err, sizeof(err)) < 0) {
        m->d = mock.global;
        mock_plan_error(m, 400, "invalid_request_error", "invalid_mock_directive", NULL,
                        err);
        return -1;
    }
    if (m->d.faults & MOCK_FAULT_HANG_HEADERS) {
        m->kind = MOCK_KIND_HANG;
        return -1;
    }
    if (!mock_auth_ok(m->req)) {
        mock_plan_error(m, 401, "invalid_request_error", "invalid_api_key", NULL,
                        m->auth ? "Incorrect API key provided."
                                : "You didn't provide an API key.");
        return -1;
    }
    if (mock.fail_next > 0) {
        char msg[64];
        mock.fail_next--;
        snprintf(msg, sizeof(msg), "mock: injected failure (status %d)",
                 mock.fail_status);
        mock_plan_error(m, mock.fail_status, mock_status_type(mock.fail_status), NULL,
                        NULL, msg);
        return -1;
    }
    if (m->d.status > 0) {
        char msg[64];
        snprintf(msg, sizeof(msg), "mock: injected status %d", m->d.status);
        mock_plan_error(m, m->d.status, mock_status_type(m->d.status), NULL, NULL, msg);
        return -1;
    }
    if (m->d.faults & MOCK_FAULT_BIG_ERROR) {
        plan_big_error(m);
        return -1;
    }
    if (!content_type_ok(m->req)) {
        mock_plan_error(m, 415, "invalid_request_error", "unsupported_media_type", NULL,
                        "Content-Type must be application/json");
        return -1;
    }
    if (!json_is_object(o)) {
        mock_plan_error(m, 400, "invalid_request_error", "invalid_json", NULL,
                        "The request body must be a JSON object");
        return -1;
    }
    return 0;
}

void mock_req_start(struct mock_req *m)
{
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
