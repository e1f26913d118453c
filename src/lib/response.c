/*
 * response.c - accessors over upstream answers: the whole chat.completion of
 * a non-stream call, the chunks of a stream, and the model list.
 * Raw bytes are kept exactly as received; the parsed tree only serves the
 * accessors.
 */
#include "internal.h"

#include <stdlib.h>

zjuchat_response *zjuchat__response_new(char *body, size_t len, long status, json_t *json)
{
    zjuchat_response *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->body = body;
    r->len = len;
    r->status = status;
    r->json = json;
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

int zjuchat__usage(json_t *root, long *prompt, long *completion, long *total)
{
    json_t *u = json_object_get(root, "usage");
    if (!json_is_object(u))
        return -1;
    json_t *p = json_object_get(u, "prompt_tokens");
    json_t *c = json_object_get(u, "completion_tokens");
    json_t *t = json_object_get(u, "total_tokens");
    if (!json_is_integer(p) && !json_is_integer(c) && !json_is_integer(t))
        return -1;
    if (prompt)
        *prompt = json_is_integer(p) ? (long)json_integer_value(p) : -1;
    if (completion)
        *completion = json_is_integer(c) ? (long)json_integer_value(c) : -1;
    if (total)
        *total = json_is_integer(t) ? (long)json_integer_value(t) : -1;
    return 0;
}

const char *zjuchat_response_content(const zjuchat_response *resp, size_t *len)
{
    return zjuchat__choice_string(resp ? resp->json : NULL, "message", "content", len);
}

const char *zjuchat_response_reasoning(const zjuchat_response *resp, size_t *len)
{
    return zjuchat__choice_string(resp ? resp->json : NULL, "message",
                                  "reasoning_content", len);
}

const char *zjuchat_response_finish_reason(const zjuchat_response *resp)
{
    return zjuchat__choice_finish(resp ? resp->json : NULL);
}

int zjuchat_response_usage(const zjuchat_response *resp, long *prompt, long *completion,
                           long *total)
{
    return zjuchat__usage(resp ? resp->json : NULL, prompt, completion, total);
}

size_t zjuchat_response_model_count(const zjuchat_response *resp)
{
    json_t *data = json_object_get(resp ? resp->json : NULL, "data");
    return json_is_array(data) ? json_array_size(data) : 0;
}

const char *zjuchat_response_model_id(const zjuchat_response *resp, size_t i)
{
    json_t *data = json_object_get(resp ? resp->json : NULL, "data");
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
    return zjuchat__choice_string(chunk ? chunk->json : NULL, "delta", "content", len);
}

const char *zjuchat_chunk_reasoning(const zjuchat_chunk *chunk, size_t *len)
{
    return zjuchat__choice_string(chunk ? chunk->json : NULL, "delta",
                                  "reasoning_content", len);
}

const char *zjuchat_chunk_finish_reason(const zjuchat_chunk *chunk)
{
    return zjuchat__choice_finish(chunk ? chunk->json : NULL);
}

int zjuchat_chunk_usage(const zjuchat_chunk *chunk, long *prompt, long *completion,
                        long *total)
{
    return zjuchat__usage(chunk ? chunk->json : NULL, prompt, completion, total);
}
