/*
 * request.c - the chat request: model, messages, sampling options and the
 * raw escape hatch, serialised to the JSON body sent upstream.
 * The serialiser escapes, so any valid UTF-8 (Chinese, emoji, U+2028,
 * control characters, NUL through the _n functions) round-trips; invalid
 * UTF-8 is refused up front.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>

struct zjuchat_request {
    json_t *root; /* model + sampling fields + extra members */
    json_t *messages;
};

zjuchat_request *zjuchat_request_new(void)
{
    zjuchat_request *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->root = json_object();
    req->messages = json_array();
    if (!req->root || !req->messages ||
        json_object_set_new(req->root, "model", json_string(ZJUCHAT_DEFAULT_MODEL))) {
        zjuchat_request_free(req);
        return NULL;
    }
    return req;
}

void zjuchat_request_free(zjuchat_request *req)
{
    if (!req)
        return;
    json_decref(req->root);
    json_decref(req->messages);
    free(req);
}

zjuchat_request *zjuchat_request_new_simple(const char *model, const char *user_content,
                                            const char *system_content)
{
    if (!user_content)
        return NULL;
    return zjuchat_request_new_simple_n(model, user_content, strlen(user_content),
                                        system_content,
                                        system_content ? strlen(system_content) : 0);
}

zjuchat_request *zjuchat_request_new_simple_n(const char *model, const char *user_content,
                                              size_t user_len, const char *system_content,
                                              size_t system_len)
{
    if (!user_content)
        return NULL;
    zjuchat_request *req = zjuchat_request_new();
    if (!req)
        return NULL;
    if ((model && *model && zjuchat_request_set_model(req, model)) ||
        (system_content && system_len > 0 &&
         zjuchat_request_add_message_n(req, "system", system_content, system_len)) ||
        zjuchat_request_add_message_n(req, "user", user_content, user_len)) {
        zjuchat_request_free(req);
        return NULL;
    }
    return req;
}

static zjuchat_code set_member(zjuchat_request *req, const char *key, json_t *value)
{
    if (!value)
        return ZJUCHAT_ERR_NOMEM;
    return json_object_set_new(req->root, key, value) ? ZJUCHAT_ERR_NOMEM : ZJUCHAT_OK;
}

zjuchat_code zjuchat_request_set_model(zjuchat_request *req, const char *model)
{
    if (!req || !model || !*model)
        return ZJUCHAT_ERR_INVALID;
    json_t *s = json_string(model);
    if (!s) /* NULL also for invalid UTF-8 */
        return ZJUCHAT_ERR_INVALID;
    return set_member(req, "model", s);
}

const char *zjuchat_request_model(const zjuchat_request *req)
{
    return req ? json_string_value(json_object_get(req->root, "model")) : NULL;
}

zjuchat_code zjuchat_request_add_message(zjuchat_request *req, const char *role,
                                         const char *content)
{
    if (!content)
        return ZJUCHAT_ERR_INVALID;
    return zjuchat_request_add_message_n(req, role, content, strlen(content));
}

/* role[0..len) is one the API takes. By length: a role parsed from JSON may
 * hold a NUL ("user\u0000x"), which strcmp would take for "user". */
static int role_known(const char *role, size_t len)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool"};
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
        if (strlen(roles[i]) == len && !memcmp(role, roles[i], len))
            return 1;
    return 0;
}

zjuchat_code zjuchat_request_add_message_n(zjuchat_request *req, const char *role,
                                           const char *content, size_t len)
{
    if (!req || !role || !content)
        return ZJUCHAT_ERR_INVALID;
    if (!role_known(role, strlen(role)))
        return ZJUCHAT_ERR_INVALID;
    /* Explicit length: a NUL inside the text is kept (YAJL writes it as
     * \u0000), not taken for the end. */
    json_t *text = json_stringn(content, len);
    if (!text)
        return ZJUCHAT_ERR_INVALID;
    json_t *msg = json_pack("{s:s, s:o}", "role", role, "content", text);
    if (!msg)
        return ZJUCHAT_ERR_NOMEM;
    return json_array_append_new(req->messages, msg) ? ZJUCHAT_ERR_NOMEM : ZJUCHAT_OK;
}

static zjuchat_code invalid_message(zjuchat_error *err, const char *why)
{
    zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE, "%s", why);
    return ZJUCHAT_ERR_INVALID;
}

/* The shape every OpenAI-compatible API accepts: checked here so that a
 * caller learns which member is wrong instead of getting the upstream's
 * 400. What the parts say (which types, image URLs) is the upstream's
 * business: a model decides what it takes. */
static zjuchat_code check_message(json_t *msg, zjuchat_error *err)
{
    if (!json_is_object(msg))
        return invalid_message(err, "a message must be a JSON object");
    json_t *role = json_object_get(msg, "role");
    if (!json_is_string(role) ||
        !role_known(json_string_value(role), json_string_length(role)))
        return invalid_message(
            err, "role must be \"system\", \"user\", \"assistant\" or \"tool\"");
    json_t *content = json_object_get(msg, "content");
    if (json_is_string(content))
        return ZJUCHAT_OK;
    /* An assistant turn that only calls tools carries no content. */
    if ((!content || json_is_null(content)) &&
        !strcmp(json_string_value(role), "assistant") &&
        json_is_array(json_object_get(msg, "tool_calls")))
        return ZJUCHAT_OK;
    if (!json_is_array(content) || json_array_size(content) == 0)
        return invalid_message(
            err, "content must be a string or a non-empty array of content parts");
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        if (!json_is_object(part) || !json_is_string(json_object_get(part, "type"))) {
            zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                               "content[%zu] must be an object with a string \"type\"",
                               i);
            return ZJUCHAT_ERR_INVALID;
        }
    }
    return ZJUCHAT_OK;
}

/* jansson reports an allocation that failed inside its parser as whatever
 * the lexer saw next ("string or '}' expected near ..."), so a text it
 * refuses is checked again by scan.c's YAJL pass, which has its own
 * allocator: valid JSON there means the parse ran out of memory. Only
 * jansson refuses repeated members, a NUL in a key, numbers out of range
 * and too deep nesting; those come with their own error codes. */
static zjuchat_code parse_failure(const char *text, size_t len, const json_error_t *jerr,
                                  zjuchat_error *err)
{
    enum json_error_code code = json_error_code(jerr);
    zjuchat__scan scan;
    if (code == json_error_out_of_memory ||
        (code != json_error_duplicate_key && code != json_error_null_byte_in_key &&
         code != json_error_numeric_overflow && code != json_error_stack_overflow &&
         zjuchat__scan_json(text, len, NULL, &scan) != -1))
        return zjuchat__nomem(err);
    zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                       "message is not valid JSON: %s", jerr->text);
    return ZJUCHAT_ERR_INVALID;
}

zjuchat_code zjuchat_request_add_message_json(zjuchat_request *req,
                                              const char *message_json, size_t len,
                                              zjuchat_error *err)
{
    if (!req || !message_json)
        return invalid_message(err, "message: NULL argument");
    /* Zeroed: jansson leaves the error code alone on some failures. */
    json_error_t jerr;
    memset(&jerr, 0, sizeof jerr);
    /* \u0000 is kept, as add_message_n keeps a NUL; a repeated member would
     * leave it to the upstream's parser which one counts. */
    json_t *msg =
        json_loadb(message_json, len,
                   JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!msg)
        return parse_failure(message_json, len, &jerr, err);
    zjuchat_code rc = check_message(msg, err);
    if (rc != ZJUCHAT_OK) {
        json_decref(msg);
        return rc;
    }
    /* The array takes msg, also when it cannot grow (then it frees it). */
    return json_array_append_new(req->messages, msg) ? zjuchat__nomem(err) : ZJUCHAT_OK;
}

zjuchat_code zjuchat_request_set_temperature(zjuchat_request *req, double t)
{
    if (!req || !(t >= 0.0 && t <= 2.0))
        return ZJUCHAT_ERR_INVALID;
    return set_member(req, "temperature", json_real(t));
}

zjuchat_code zjuchat_request_set_top_p(zjuchat_request *req, double p)
{
    if (!req || !(p >= 0.0 && p <= 1.0))
        return ZJUCHAT_ERR_INVALID;
    return set_member(req, "top_p", json_real(p));
}

zjuchat_code zjuchat_request_set_max_tokens(zjuchat_request *req, long n)
{
    if (!req || n <= 0)
        return ZJUCHAT_ERR_INVALID;
    return set_member(req, "max_tokens", json_integer(n));
}

zjuchat_code zjuchat_request_add_stop(zjuchat_request *req, const char *stop)
{
    if (!req || !stop || !*stop)
        return ZJUCHAT_ERR_INVALID;
    json_t *list = json_object_get(req->root, "stop");
    if (!json_is_array(list)) {
        list = json_array();
        if (set_member(req, "stop", list))
            return ZJUCHAT_ERR_NOMEM;
    }
    json_t *s = json_string(stop);
    if (!s)
        return ZJUCHAT_ERR_INVALID;
    return json_array_append_new(list, s) ? ZJUCHAT_ERR_NOMEM : ZJUCHAT_OK;
}

zjuchat_code zjuchat_request_set_extra(zjuchat_request *req, const char *json_object,
                                       zjuchat_error *err)
{
    if (!req || !json_object) {
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "extra fields: NULL argument");
        return ZJUCHAT_ERR_INVALID;
    }
    json_error_t jerr;
    json_t *extra = json_loads(json_object, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(extra)) {
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "extra fields must be a JSON object%s%s", extra ? "" : ": ",
                           extra ? "" : jerr.text);
        json_decref(extra);
        return ZJUCHAT_ERR_INVALID;
    }
    if (json_object_get(extra, "messages") || json_object_get(extra, "stream")) {
        json_decref(extra);
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "extra fields may not set \"messages\" or \"stream\"");
        return ZJUCHAT_ERR_INVALID;
    }
    int rc = json_object_update(req->root, extra);
    json_decref(extra);
    return rc ? zjuchat__nomem(err) : ZJUCHAT_OK;
}

/* The body is written by YAJL's generator from the jansson tree: the same
 * bytes as json_dumps wrote (checked on reals, large integers, control
 * characters, emoji, U+2028), for half the instructions: json_dumps escapes
 * a character at a time through a callback (callgrind, the server's body:
 * 17k -> 8.5k per request). Strings were checked for UTF-8 when they entered
 * the tree. */
static int gen_value(yajl_gen g, json_t *v);

static int gen_str(yajl_gen g, const char *s, size_t len)
{
    return yajl_gen_string(g, (const unsigned char *)s, len) == yajl_gen_status_ok ? 0
                                                                                   : -1;
}

static int gen_members(yajl_gen g, json_t *obj)
{
    const char *key;
    size_t key_len;
    json_t *member;
    json_object_keylen_foreach(obj, key, key_len, member)
    {
        if (gen_str(g, key, key_len) || gen_value(g, member))
            return -1;
    }
    return 0;
}

static int gen_value(yajl_gen g, json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        if (yajl_gen_map_open(g) != yajl_gen_status_ok || gen_members(g, v))
            return -1;
        return yajl_gen_map_close(g) == yajl_gen_status_ok ? 0 : -1;
    case JSON_ARRAY: {
        if (yajl_gen_array_open(g) != yajl_gen_status_ok)
            return -1;
        for (size_t i = 0; i < json_array_size(v); i++)
            if (gen_value(g, json_array_get(v, i)))
                return -1;
        return yajl_gen_array_close(g) == yajl_gen_status_ok ? 0 : -1;
    }
    case JSON_STRING:
        return gen_str(g, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return yajl_gen_integer(g, json_integer_value(v)) == yajl_gen_status_ok ? 0 : -1;
    case JSON_REAL: {
        /* jansson's own text for a real (17 digits, always a '.' or 'e'). */
        char *text = json_dumps(v, JSON_ENCODE_ANY);
        int rc =
            text && yajl_gen_number(g, text, strlen(text)) == yajl_gen_status_ok ? 0 : -1;
        free(text);
        return rc;
    }
    case JSON_TRUE:
    case JSON_FALSE:
        return yajl_gen_bool(g, json_is_true(v)) == yajl_gen_status_ok ? 0 : -1;
    case JSON_NULL:
        return yajl_gen_null(g) == yajl_gen_status_ok ? 0 : -1;
    }
    return -1;
}

char *zjuchat__request_body(const zjuchat_request *req, int stream)
{
    /* The request itself is not touched, so it stays reusable: messages and
     * stream follow the other members, as json_object_set would append them. */
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g)
        return NULL;
    char *out = NULL;
    const unsigned char *buf;
    size_t len;
    if (yajl_gen_map_open(g) == yajl_gen_status_ok && !gen_members(g, req->root) &&
        !gen_str(g, "messages", 8) && !gen_value(g, req->messages) &&
        !gen_str(g, "stream", 6) && yajl_gen_bool(g, stream) == yajl_gen_status_ok &&
        yajl_gen_map_close(g) == yajl_gen_status_ok &&
        yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok &&
        (out = malloc(len + 1))) {
        memcpy(out, buf, len);
        out[len] = '\0';
    }
    yajl_gen_free(g);
    return out;
}

char *zjuchat_request_to_json(const zjuchat_request *req, int stream)
{
    return req ? zjuchat__request_body(req, stream) : NULL;
}
