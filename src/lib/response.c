/*
 * response.c - accessors over upstream answers: the whole chat.completion of
 * a non-stream call, the chunks of a stream, and the model list.
 * Raw bytes are kept exactly as received. Usage, and where choices[0]'s
 * texts lie, come from the scan made on arrival (scan.c): a text is decoded
 * from its bytes on first use; the other accessors parse with jansson on
 * first use, so a relay that only forwards bytes never builds a tree.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

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
    free(resp->text[0]);
    free(resp->text[1]);
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

/* A text of choices[0] from the scan's span: decoded once into *cache
 * (NUL-terminated, as jansson's strings are), NULL when it is no string. */
static const char *span_text(const char *data, const zjuchat__span *t, char **cache,
                             size_t *len)
{
    if (len)
        *len = 0;
    if (!t->present)
        return NULL;
    if (!*cache) {
        char *s = malloc(t->len + 1); /* the decoding is never longer */
        if (!s)
            return NULL;
        size_t n = t->len;
        if (t->escaped)
            n = zjuchat__json_unescape(data + t->off, t->len, s);
        else
            memcpy(s, data + t->off, n);
        s[n] = '\0';
        *cache = s;
    }
    if (len)
        *len = t->decoded;
    return *cache;
}

/* The scan's spans point into the bytes unless a hidden key made the
 * library replace them by a redacted tree's serialisation (sse_policy.c,
 * outcome.c): then the tree, which holds the masked key, answers. */
static int spans_usable(const zjuchat__scan *scan)
{
    return scan->valid && !scan->secret_seen;
}

static const char *response_text(const zjuchat_response *resp, int which, size_t *len)
{
    zjuchat_response *r = (zjuchat_response *)resp;
    if (r && spans_usable(&r->scan))
        return span_text(r->body, &r->scan.text[ZJUCHAT__MESSAGE][which], &r->text[which],
                         len);
    return zjuchat__choice_string(
        response_json(resp), "message",
        which == ZJUCHAT__CONTENT ? "content" : "reasoning_content", len);
}

const char *zjuchat_response_content(const zjuchat_response *resp, size_t *len)
{
    return response_text(resp, ZJUCHAT__CONTENT, len);
}

const char *zjuchat_response_reasoning(const zjuchat_response *resp, size_t *len)
{
    return response_text(resp, ZJUCHAT__REASONING, len);
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

static const char *chunk_text(const zjuchat_chunk *chunk, int which, size_t *len)
{
    zjuchat_chunk *c = (zjuchat_chunk *)chunk;
    if (c && spans_usable(&c->scan))
        return span_text(c->data, &c->scan.text[ZJUCHAT__DELTA][which], &c->text[which],
                         len);
    return zjuchat__choice_string(
        chunk_json(chunk), "delta",
        which == ZJUCHAT__CONTENT ? "content" : "reasoning_content", len);
}

const char *zjuchat_chunk_content(const zjuchat_chunk *chunk, size_t *len)
{
    return chunk_text(chunk, ZJUCHAT__CONTENT, len);
}

const char *zjuchat_chunk_reasoning(const zjuchat_chunk *chunk, size_t *len)
{
    return chunk_text(chunk, ZJUCHAT__REASONING, len);
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
