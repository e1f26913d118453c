/*
 * chat_body.c - the body of POST /api/chat, checked (jansson) and built into
 * the upstream's body by libzjuchat:
 *   [system_content as a system message] + messages + [user_content as a
 *   user message], then temperature, top_p, max_tokens and stop.
 * A body of the seed's form (user_content, system_content, model, stream)
 * goes through the same library calls in the same order as before the
 * multi-turn fields existed, so its upstream bytes are unchanged
 * (tests/e2e/test_multiturn.py holds them to bytes recorded then).
 */
#include "chat_body.h"
#include "http_util.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zjuchat.h>

#define MAX_STOPS 4 /* OpenAI's limit on stop sequences */

/* What the body asks for, borrowed from its parsed tree. */
typedef struct chat_fields {
    json_t *messages;                                /* array, or NULL when not given */
    const char *user, *system, *model;               /* NULL when not given */
    size_t user_len, system_len;                     /* may hold \u0000: not strlen */
    json_t *temperature, *top_p, *max_tokens, *stop; /* NULL when not given */
} chat_fields;

static int fail(srv_chat_body *b, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(srv_chat_body *b, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->msg, sizeof b->msg, fmt, ap);
    va_end(ap);
    return status;
}

/* A member, NULL when absent or null: both mean "not given". */
static json_t *given(json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);
    return json_is_null(v) ? NULL : v;
}

/* The seed's fields and messages' type. Messages' content is the library's
 * to check, while they are added. */
static int check_texts(json_t *root, chat_fields *f, srv_chat_body *b)
{
    f->messages = given(root, "messages");
    if (f->messages && !json_is_array(f->messages))
        return fail(b, 400, "messages must be an array of {role, content} objects");
    json_t *u = json_object_get(root, "user_content");
    /* With a history the new turn may already be its last message. */
    if (!f->messages && (!json_is_string(u) || json_string_length(u) == 0))
        return fail(b, 400, "user_content is required and must be a non-empty string");
    if (f->messages && u && !json_is_null(u) &&
        (!json_is_string(u) || json_string_length(u) == 0))
        return fail(b, 400, "user_content must be a non-empty string");
    f->user = json_string_value(u);
    f->user_len = json_string_length(u);
    json_t *m = given(root, "model");
    if (m && !json_is_string(m))
        return fail(b, 400, "model must be a string");
    f->model = json_string_value(m);
    if (f->model && strlen(f->model) != json_string_length(m))
        return fail(b, 400, "model must not contain NUL"); /* no model id does */
    json_t *s = given(root, "system_content");
    if (s && !json_is_string(s))
        return fail(b, 400, "system_content must be a string");
    f->system = json_string_value(s);
    f->system_len = json_string_length(s);
    s = json_object_get(root, "stream");
    /* Unlike the others, a null stream is an error: the contract wants a
     * boolean whenever the member is present. */
    if (s && !json_is_boolean(s))
        return fail(b, 400, "stream must be a boolean");
    b->stream = json_is_true(s);
    size_t turns = (f->messages ? json_array_size(f->messages) : 0) + (f->user ? 1 : 0) +
                   (f->system_len > 0 ? 1 : 0);
    if (turns == 0)
        return fail(b, 400,
                    "messages is empty and there is no user_content: nothing to send");
    return 0;
}

/* stop: a string or a list of 1..MAX_STOPS, each non-empty. No NUL: the
 * library takes C strings, and no model stops on one. */
static int check_stop(json_t *stop, srv_chat_body *b)
{
    int is_list = json_is_array(stop);
    size_t n = is_list ? json_array_size(stop) : 1;
    int ok = n >= 1 && n <= MAX_STOPS;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *s = is_list ? json_array_get(stop, i) : stop;
        ok = json_is_string(s) && json_string_length(s) > 0;
        if (ok && strlen(json_string_value(s)) != json_string_length(s))
            return fail(b, 400, "stop must not contain NUL");
    }
    if (!ok)
        return fail(b, 400,
                    "stop must be a non-empty string or an array of 1 to %d non-empty "
                    "strings",
                    MAX_STOPS);
    return 0;
}

/* The sampling fields' types and ranges: the library refuses the same
 * values, but without saying which. */
static int check_sampling(json_t *root, chat_fields *f, srv_chat_body *b)
{
    f->temperature = given(root, "temperature");
    double t = json_number_value(f->temperature);
    if (f->temperature && !(json_is_number(f->temperature) && t >= 0 && t <= 2))
        return fail(b, 400, "temperature must be a number from 0 to 2");
    f->top_p = given(root, "top_p");
    double p = json_number_value(f->top_p);
    if (f->top_p && !(json_is_number(f->top_p) && p >= 0 && p <= 1))
        return fail(b, 400, "top_p must be a number from 0 to 1");
    f->max_tokens = given(root, "max_tokens");
    if (f->max_tokens &&
        !(json_is_integer(f->max_tokens) && json_integer_value(f->max_tokens) > 0))
        return fail(b, 400, "max_tokens must be a positive integer");
    f->stop = given(root, "stop");
    return f->stop ? check_stop(f->stop, b) : 0;
}

/* Status for a library refusal of a value that was checked already. */
static int not_built(srv_chat_body *b, zjuchat_code rc)
{
    if (rc == ZJUCHAT_ERR_NOMEM)
        return fail(b, 500, "out of memory");
    return fail(b, 500, "cannot build the upstream request: %s", zjuchat_strerror(rc));
}

/* Each message goes to the library as JSON text, which checks its role and
 * content and keeps the rest as given. */
static int add_history(zjuchat_request *r, json_t *messages, srv_chat_body *b)
{
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        /* ENCODE_ANY: a message that is not an object is the library's to
         * refuse, with its message. */
        char *text = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text)
            return fail(b, 500, "out of memory");
        zjuchat_error err;
        memset(&err, 0, sizeof err);
        zjuchat_code rc = zjuchat_request_add_message_json(r, text, strlen(text), &err);
        free(text);
        if (rc == ZJUCHAT_ERR_INVALID)
            return fail(b, 400, "messages[%zu]: %s", i, err.message);
        if (rc != ZJUCHAT_OK)
            return not_built(b, rc);
    }
    return 0;
}

static zjuchat_code add_sampling(zjuchat_request *r, const chat_fields *f)
{
    zjuchat_code rc = ZJUCHAT_OK;
    if (f->temperature)
        rc = zjuchat_request_set_temperature(r, json_number_value(f->temperature));
    if (rc == ZJUCHAT_OK && f->top_p)
        rc = zjuchat_request_set_top_p(r, json_number_value(f->top_p));
    if (rc == ZJUCHAT_OK && f->max_tokens)
        rc = zjuchat_request_set_max_tokens(r, (long)json_integer_value(f->max_tokens));
    int is_list = json_is_array(f->stop);
    size_t n = is_list ? json_array_size(f->stop) : (f->stop ? 1 : 0);
    for (size_t i = 0; rc == ZJUCHAT_OK && i < n; i++)
        rc = zjuchat_request_add_stop(
            r, json_string_value(is_list ? json_array_get(f->stop, i) : f->stop));
    return rc;
}

/* The upstream request: the seed's fields through the calls of
 * zjuchat_request_new_simple_n in its order (same bytes), the history
 * between system and user, the sampling fields last. */
static int build(const chat_fields *f, srv_chat_body *b)
{
    zjuchat_request *r = zjuchat_request_new();
    if (!r)
        return fail(b, 500, "out of memory");
    int status = 0;
    zjuchat_code rc = *f->model ? zjuchat_request_set_model(r, f->model) : ZJUCHAT_OK;
    if (rc == ZJUCHAT_OK && f->system_len > 0)
        rc = zjuchat_request_add_message_n(r, "system", f->system, f->system_len);
    if (rc == ZJUCHAT_OK && f->messages)
        status = add_history(r, f->messages, b);
    if (rc == ZJUCHAT_OK && status == 0 && f->user)
        rc = zjuchat_request_add_message_n(r, "user", f->user, f->user_len);
    if (rc == ZJUCHAT_OK && status == 0)
        rc = add_sampling(r, f);
    if (status == 0 && rc != ZJUCHAT_OK)
        status = not_built(b, rc);
    if (status == 0 && !(b->upstream = zjuchat_request_to_json(r, b->stream)))
        status = fail(b, 500, "out of memory");
    if (status == 0)
        b->upstream_len = strlen(b->upstream); /* a NUL is written \u0000 */
    zjuchat_request_free(r);
    return status;
}

int srv_chat_body_parse(const char *content_type, const char *bytes, size_t len,
                        const srv_config *cfg, srv_chat_body *b)
{
    memset(b, 0, sizeof *b);
    if (!srv_http_is_json_type(content_type))
        return fail(b, 415, "Content-Type must be application/json");
    if (len > cfg->max_body)
        return fail(b, 413, "request body too large");
    json_error_t jerr;
    /* \u0000 is valid JSON: the texts keep it (their lengths go upstream). */
    json_t *root = json_loadb(bytes ? bytes : "", len, JSON_ALLOW_NUL, &jerr);
    if (!root)
        return fail(b, 400, "request body is not valid JSON: %s (line %d, column %d)",
                    jerr.text, jerr.line, jerr.column);
    chat_fields f;
    memset(&f, 0, sizeof f);
    int status =
        json_is_object(root) ? 0 : fail(b, 400, "request body must be a JSON object");
    if (status == 0)
        status = check_texts(root, &f, b);
    if (status == 0)
        status = check_sampling(root, &f, b);
    if (status == 0) {
        if (!f.model || !*f.model)
            f.model = cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL;
        snprintf(b->model, sizeof b->model, "%s", f.model);
        status = build(&f, b);
    }
    json_decref(root);
    return status;
}

void srv_chat_body_free(srv_chat_body *b)
{
    free(b->upstream);
    b->upstream = NULL;
    b->upstream_len = 0;
}
