/*
 * The models of the mock: the upstream's list (docs: /work/shared/UPSTREAM.md,
 * the models the original client named) with what each can do, GET .../models
 * and GET .../models/{id} in OpenAI's shapes, and their control
 * (POST /_mock/config {"models": "list"|"empty"|"hang"|"garbage"|STATUS,
 * "models_think": MS}): a GET has no model name to carry a '#' suffix, and a
 * gateway's fallback when the upstream's list fails needs a way to fail it.
 */
#include "mock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODELS_CREATED 1700000000

static const struct {
    const char *id;
    int caps;
} models[] = {
    {"deepseek-r1-671b", MOCK_CAP_CHAT},
    {"deepseek-v3-671b", MOCK_CAP_CHAT},
    {"deepseek-r1-distill-qwen", MOCK_CAP_CHAT},
    {"qwen2.5-instruct", MOCK_CAP_CHAT},
    {"QwQ-32B", MOCK_CAP_CHAT},
    {"llava-onevision-qwen2-7b-ov", MOCK_CAP_CHAT | MOCK_CAP_VISION},
    {"bge-m3", MOCK_CAP_EMBED},
    {"bge-reranker-v2-m3", MOCK_CAP_RERANK},
};
#define NMODELS (sizeof(models) / sizeof(models[0]))

static const char *const mode_names[] = {"list", "empty", "hang", "garbage"};
#define NMODES (sizeof(mode_names) / sizeof(mode_names[0]))

int mock_model_caps(const char *name)
{
    if (!strncmp(name, "mock-", 5)) /* test models: every route takes them */
        return MOCK_CAP_CHAT | MOCK_CAP_VISION | MOCK_CAP_EMBED;
    for (size_t i = 0; i < NMODELS; i++)
        if (!strcmp(name, models[i].id))
            return models[i].caps;
    return 0;
}

static json_t *model_object(const char *id)
{
    return json_pack("{s:s,s:s,s:i,s:s}", "id", id, "object", "model", "created",
                     MODELS_CREATED, "owned_by", "zju");
}

/* The list, or the one model id (404 if the list does not have it). */
static void plan_answer(struct mock_req *m, const char *id)
{
    int empty = mock.models.mode == MOCK_MODELS_EMPTY;
    json_t *data;
    if (id) {
        size_t i;
        for (i = 0; !empty && i < NMODELS; i++)
            if (!strcmp(id, models[i].id))
                break;
        if (empty || i == NMODELS) {
            char msg[256];
            snprintf(msg, sizeof(msg), "The model '%.100s' does not exist", id);
            mock_plan_error(m, 404, "invalid_request_error", "model_not_found", "model",
                            msg);
            return;
        }
        mock_plan_json(m, model_object(models[i].id));
        return;
    }
    data = json_array();
    for (size_t i = 0; data && !empty && i < NMODELS; i++)
        json_array_append_new(data, model_object(models[i].id));
    mock_plan_json(m,
                   data ? json_pack("{s:s,s:o}", "object", "list", "data", data) : NULL);
}

void mock_models_handle(struct evhttp_request *req, const char *id)
{
    const struct mock_models_ctl *c = &mock.models;
    struct mock_req *m;

    mock.stats.models_requests++;
    if (!(m = mock_req_new(req)))
        return;
    m->d = mock.cli; /* the chat directives do not apply; the models control does */
    m->d.think_ms = c->think_ms;
    if (c->mode == MOCK_MODELS_HANG) {
        m->kind = MOCK_KIND_HANG;
    } else if (!mock_auth_ok(req)) {
        mock_plan_error(m, 401, "invalid_request_error", "invalid_api_key", NULL,
                        m->auth ? "Incorrect API key provided."
                                : "You didn't provide an API key. Use 'Authorization: "
                                  "Bearer KEY'.");
    } else if (c->mode == MOCK_MODELS_STATUS) {
        char msg[64];
        snprintf(msg, sizeof(msg), "mock: injected status %d", c->status);
        mock_plan_error(m, c->status, mock_status_type(c->status), NULL, NULL, msg);
    } else if (c->mode == MOCK_MODELS_GARBAGE) {
        struct evbuffer *b = evbuffer_new();
        if (b)
            evbuffer_add_printf(b, "<html>this is not JSON</html>\n");
        mock_plan_ok(m, b);
    } else {
        plan_answer(m, id);
    }
    mock_req_start(m);
}

int mock_models_set(struct mock_models_ctl *c, const char *key, const char *val,
                    char *err, size_t errlen)
{
    char *end;
    long v;
    if (!strcmp(key, "models")) {
        for (size_t k = 0; k < NMODES; k++)
            if (!strcmp(val, mode_names[k])) {
                c->mode = (int)k;
                c->status = 0;
                return 0;
            }
        v = strtol(val, &end, 10);
        if (val[0] >= '0' && val[0] <= '9' && !*end && v >= 400 && v <= 599) {
            c->mode = MOCK_MODELS_STATUS;
            c->status = (int)v;
            return 0;
        }
        snprintf(err, errlen,
                 "bad value for models: '%s' (list, empty, hang, garbage or a status "
                 "400-599)",
                 val);
        return -1;
    }
    if (!strcmp(key, "models_think")) {
        v = strtol(val, &end, 10);
        if (val[0] < '0' || val[0] > '9' || *end || v > 3600000) {
            snprintf(err, errlen, "bad value for models_think: '%s'", val);
            return -1;
        }
        c->think_ms = (int)v;
        return 0;
    }
    return 1;
}

void mock_models_to_json(const struct mock_models_ctl *c, json_t *o)
{
    json_object_set_new(o, "models",
                        c->mode == MOCK_MODELS_STATUS ? json_integer(c->status)
                                                      : json_string(mode_names[c->mode]));
    json_object_set_new(o, "models_think", json_integer(c->think_ms));
}
