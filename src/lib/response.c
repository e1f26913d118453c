/*
 * response.c - accessors over upstream answers: the whole chat.completion of
 * a non-stream call, the chunks of a stream, and the model list.
 * Raw bytes are kept exactly as received. Usage comes from the scan made on
 * arrival (scan.c); the other accessors parse with jansson on first use, so
 * a relay that only forwards bytes never builds a tree.
 */
#include "internal.h"

#include <stdlib.h>

zjuchat_response *zjuchat__response_new(char *body, size_t len, long status, json_t *json,
                                        const zjuchat__scan *scan)
{
    zjuchat_response *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->body = body;
    r->len = len;
    r->status = status;
    r->json = json;
    r->parsed = json != NULL;
    r->scan = *scan;
    return r;
}

void zjuchat_response_free(zjuchat_response *resp)
{
    if (!resp)
        return;
    free(resp->body);
    json_decref(resp->json);
    free(resp);
}

/* The tree, parsed on first use. The handle is logically const (its bytes
 * never change), and a response or chunk belongs to one thread. */
static json_t *lazy_tree(int *parsed, json_t **json, const char *data, size_t len)
{
    if (!*parsed) {
        *parsed = 1;
        *json = json_loadb(data ? data : "", len, JSON_ALLOW_NUL, NULL);
    }
    return *json;
}

static json_t *response_json(const zjuchat_response *resp)
{
    zjuchat_response *r = (zjuchat_response *)resp;
    return r ? lazy_tree(&r->parsed, &r->json, r->body, r->len) : NULL;
}

static json_t *chunk_json(const zjuchat_chunk *chunk)
{
    zjuchat_chunk *c = (zjuchat_chunk *)chunk;
    return c ? lazy_tree(&c->parsed, &c->json, c->data, c->len) : NULL;
}

static int usage_from_scan(const zjuchat__scan *scan, long *prompt, long *completion,
                           long *total)
{
    if (!scan->has_usage)
        return -1;
    if (prompt)
        *prompt = scan->prompt;
    if (completion)
        *completion = scan->completion;
    if (total)
        *total = scan->total;
    return 0;
}

const char *zjuchat_response_body(const zjuchat_response *resp, size_t *len)
{
    if (len)
        *len = resp ? resp->len : 0;
    return resp ? resp->body : NULL;
}

long zjuchat_response_status(const zjuchat_response *resp)
{
    return resp ? resp->status : 0;
}

static json_t *first_choice(json_t *root)
{
    json_t *choices = json_object_get(root, "choices");
    return json_is_array(choices) ? json_array_get(choices, 0) : NULL;
}

const char *zjuchat__choice_string(json_t *root, const char *container, const char *field,
                                   size_t *len)
{
    json_t *s = json_object_get(json_object_get(first_choice(root), container), field);
    if (!json_is_string(s)) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = json_string_length(s);
    return json_string_value(s);
}

const char *zjuchat__choice_finish(json_t *root)
{
    return json_string_value(json_object_get(first_choice(root), "finish_reason"));
}

const char *zjuchat_response_content(const zjuchat_response *resp, size_t *len)
{
    return zjuchat__choice_string(response_json(resp), "message", "content", len);
}

const char *zjuchat_response_reasoning(const zjuchat_response *resp, size_t *len)
{
    return zjuchat__choice_string(response_json(resp), "message", "reasoning_content",
                                  len);
}

const char *zjuchat_response_finish_reason(const zjuchat_response *resp)
{
    return zjuchat__choice_finish(response_json(resp));
}

int zjuchat_response_usage(const zjuchat_response *resp, long *prompt, long *completion,
                           long *total)
{
    return resp ? usage_from_scan(&resp->scan, prompt, completion, total) : -1;
}

size_t zjuchat_response_model_count(const zjuchat_response *resp)
{
    json_t *data = json_object_get(response_json(resp), "data");
    return json_is_array(data) ? json_array_size(data) : 0;
}

const char *zjuchat_response_model_id(const zjuchat_response *resp, size_t i)
{
    json_t *data = json_object_get(response_json(resp), "data");
    return json_string_value(json_object_get(json_array_get(data, i), "id"));
}

const char *zjuchat_chunk_data(const zjuchat_chunk *chunk, size_t *len)
{
    if (len)
        *len = chunk ? chunk->len : 0;
    return chunk ? chunk->data : NULL;
}

const char *zjuchat_chunk_content(const zjuchat_chunk *chunk, size_t *len)
{
    return zjuchat__choice_string(chunk_json(chunk), "delta", "content", len);
}

const char *zjuchat_chunk_reasoning(const zjuchat_chunk *chunk, size_t *len)
{
    return zjuchat__choice_string(chunk_json(chunk), "delta", "reasoning_content", len);
}

size_t zjuchat_chunk_text_length(const zjuchat_chunk *chunk)
{
    return chunk ? chunk->scan.text_len : 0;
}

const char *zjuchat_chunk_finish_reason(const zjuchat_chunk *chunk)
{
    /* Most chunks have none: only parse those the scan found one in. */
    return chunk && chunk->scan.finish ? zjuchat__choice_finish(chunk_json(chunk)) : NULL;
}

int zjuchat_chunk_usage(const zjuchat_chunk *chunk, long *prompt, long *completion,
                        long *total)
{
    return chunk ? usage_from_scan(&chunk->scan, prompt, completion, total) : -1;
}

int zjuchat_chunk_is_done(const zjuchat_chunk *chunk)
{
    return chunk ? chunk->done : 0;
}
