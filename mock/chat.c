/*
 * POST .../chat/completions of the mock: records the request for /_mock/last,
 * takes it through the common front (request.c), validates it like an
 * OpenAI-compatible API (unknown fields are ignored, known ones must have
 * their type) and plans the answer; stream.c delivers it, after the `think`
 * delay if one is asked.
 */
#include "mock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The optional fields whose type the API checks (null means "not given"). */
enum {
    T_NUMBER,
    T_INTEGER,
    T_BOOLEAN,
    T_OBJECT,
    T_ARRAY,
    T_STRING_OR_ARRAY,
    T_STRING_OR_OBJECT
};
static const struct {
    const char *name;
    int type;
    const char *what;
} typed_fields[] = {
    {"stream", T_BOOLEAN, "a boolean"},
    {"temperature", T_NUMBER, "a number"},
    {"top_p", T_NUMBER, "a number"},
    {"presence_penalty", T_NUMBER, "a number"},
    {"frequency_penalty", T_NUMBER, "a number"},
    {"max_tokens", T_INTEGER, "an integer"},
    {"max_completion_tokens", T_INTEGER, "an integer"},
    {"n", T_INTEGER, "an integer"},
    {"seed", T_INTEGER, "an integer"},
    {"logprobs", T_BOOLEAN, "a boolean"},
    {"top_logprobs", T_INTEGER, "an integer"},
    {"parallel_tool_calls", T_BOOLEAN, "a boolean"},
    {"stop", T_STRING_OR_ARRAY, "a string or an array of strings"},
    {"tools", T_ARRAY, "an array"},
    {"tool_choice", T_STRING_OR_OBJECT, "a string or an object"},
    {"response_format", T_OBJECT, "an object"},
    {"stream_options", T_OBJECT, "an object"},
    {"logit_bias", T_OBJECT, "an object"},
};

static int type_ok(json_t *v, int type)
{
    switch (type) {
    case T_NUMBER:
        return json_is_number(v);
    case T_INTEGER:
        return json_is_integer(v);
    case T_BOOLEAN:
        return json_is_boolean(v);
    case T_OBJECT:
        return json_is_object(v);
    case T_ARRAY:
        return json_is_array(v);
    case T_STRING_OR_ARRAY:
        return json_is_string(v) || json_is_array(v);
    default:
        return json_is_string(v) || json_is_object(v);
    }
}

/* Plans a 400 invalid_request_error naming the field; returns -1. */
static int refuse(struct mock_req *m, const char *code, const char *param,
                  const char *msg)
{
    mock_plan_error(m, 400, "invalid_request_error", code, param, msg);
    return -1;
}

/* Validates the request body; plans a 4xx and returns -1 if it is invalid. */
static int validate(struct mock_req *m, json_t *o, const char *model, int model_is_str)
{
    char msgtext[256];
    const char *code;
    int caps = mock_model_caps(model);
    json_t *opts = json_object_get(o, "stream_options");
    if (!model_is_str || !model[0])
        return refuse(m, "missing_model", "model", "'model' must be a non-empty string");
    code = mock_messages_check(json_object_get(o, "messages"), caps & MOCK_CAP_VISION,
                               msgtext, sizeof(msgtext));
    if (code && strcmp(code, "unsupported_content"))
        return refuse(m, code, "messages", msgtext);
    for (size_t k = 0; k < sizeof(typed_fields) / sizeof(typed_fields[0]); k++) {
        json_t *v = json_object_get(o, typed_fields[k].name);
        if (!v || json_is_null(v) || type_ok(v, typed_fields[k].type))
            continue;
        snprintf(msgtext, sizeof(msgtext), "'%s' must be %s", typed_fields[k].name,
                 typed_fields[k].what);
        return refuse(m, "invalid_type", typed_fields[k].name, msgtext);
    }
    if (opts && !json_is_null(opts)) {
        json_t *usage = json_object_get(opts, "include_usage");
        if (!json_is_true(json_object_get(o, "stream")))
            return refuse(m, "invalid_stream_options", "stream_options",
                          "The 'stream_options' parameter is only allowed when 'stream' "
                          "is enabled.");
        if (usage && !json_is_null(usage) && !json_is_boolean(usage))
            return refuse(m, "invalid_type", "stream_options.include_usage",
                          "'stream_options.include_usage' must be a boolean");
    }
    /* The model is checked once the body's shape is known good, as OpenAI does. */
    if (!caps) {
        snprintf(msgtext, sizeof(msgtext), "The model '%.100s' does not exist", model);
        mock_plan_error(m, 404, "invalid_request_error", "model_not_found", "model",
                        msgtext);
        return -1;
    }
    if (!(caps & MOCK_CAP_CHAT)) {
        snprintf(msgtext, sizeof(msgtext),
                 "The model '%.100s' is not a chat model (use .../embeddings for bge-m3)",
                 model);
        return refuse(m, "model_not_supported", "model", msgtext);
    }
    if (code) /* an image for a model without vision */
        return refuse(m, code, "messages", msgtext);
    return 0;
}

static void plan_success(struct mock_req *m, json_t *o, const char *model)
{
    json_t *mj = json_string(model);
    m->is_stream = json_is_true(json_object_get(o, "stream"));
    m->include_usage =
        m->is_stream && json_is_true(json_object_get(json_object_get(o, "stream_options"),
                                                     "include_usage"));
    m->reasoning_model = strstr(model, "r1") || strstr(model, "QwQ");
    if (!m->reasoning_model)
        m->d.reasoning = 0;
    m->model_json = mj ? json_dumps(mj, JSON_ENCODE_ANY) : NULL;
    json_decref(mj);
    m->id = ++mock.next_id;
    m->created = (long long)time(NULL);
    m->prompt_tokens = mock_messages_tokens(json_object_get(o, "messages"));
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
    char *content = mock_content_join(m->d.text, m->d.events, 0);
    char *reasoning = mock_content_join(m->d.text, m->d.reasoning, 1);
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
    free(content);
    free(reasoning);
    mock_plan_json(m, resp);
}

void mock_chat_handle(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = len ? (const char *)evbuffer_pullup(in, -1) : "";
    char model[256];
    int model_is_str;
    struct mock_req *m;

    mock.stats.chat_requests++;
    mock_record_last(req, body, len);
    if (!(m = mock_req_new(req)))
        return;
    /* \u0000 is valid JSON, and an OpenAI-compatible API takes it in a
     * message: a body carrying one is not refused as invalid. */
    json_t *o = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
    if (mock_req_front(m, o, model, sizeof(model), &model_is_str) == 0 &&
        validate(m, o, model, model_is_str) == 0)
        plan_success(m, o, model);
    json_decref(o);
    mock_req_start(m);
}
