/*
 * redact.c - keep the API key out of everything the library hands out.
 *
 * The raw-byte pass (zjuchat_redact) catches a key echoed as is. An upstream
 * can also echo it JSON-escaped ("\u0073k-..."), which a browser or an
 * accessor would decode back into the key, so parsed JSON is checked on its
 * decoded strings too. That walk only runs when the raw bytes contain a
 * backslash, the only way an escape can hide the key.
 *
 * Matching is exact, so it is only safe for a long key: a short one would
 * also star out innocent text that contains it (model names, timestamps).
 * zjuchat_client_new and the server refuse keys shorter than
 * ZJUCHAT_MIN_KEY_LEN for that reason.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

size_t zjuchat_redact(char *buf, size_t len, const char *secret)
{
    if (!buf || !secret || !*secret)
        return 0;
    /* memchr for the key's first byte and memcmp where it matches: the lines
     * masked are short (an access line, an answer) and the key's first byte
     * is rare in them, while glibc's memmem prepares a two-way search on
     * every call (~330 instructions, twice per request: callgrind). */
    size_t slen = strlen(secret), count = 0;
    char *p = buf, *end = buf + len;
    while ((size_t)(end - p) >= slen) {
        char *hit = memchr(p, secret[0], (size_t)(end - p) - slen + 1);
        if (!hit)
            break;
        if (memcmp(hit + 1, secret + 1, slen - 1) != 0) {
            p = hit + 1;
            continue;
        }
        memset(hit, '*', slen);
        p = hit + slen;
        count++;
    }
    return count;
}

size_t zjuchat__redact_tail(char *buf, size_t len, const char *secret)
{
    if (!buf || !secret || !*secret)
        return 0;
    size_t slen = strlen(secret);
    /* Longest proper prefix of the secret that ends the buffer. */
    for (size_t n = slen - 1 < len ? slen - 1 : len; n >= 4; n--) {
        if (memcmp(buf + len - n, secret, n) == 0) {
            memset(buf + len - n, '*', n);
            return n;
        }
    }
    return 0;
}

/* Returns a new string value with the secret masked, or NULL if the string
 * does not contain it. */
static json_t *masked_string(const char *s, size_t len, const char *secret)
{
    if (!memmem(s, len, secret, strlen(secret)))
        return NULL;
    char *copy = malloc(len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, s, len);
    copy[len] = '\0';
    zjuchat_redact(copy, len, secret);
    json_t *v = json_stringn_nocheck(copy, len);
    free(copy);
    return v;
}

static int redact_tree(json_t *node, const char *secret)
{
    int changed = 0;
    if (json_is_array(node)) {
        size_t i;
        json_t *v;
        json_array_foreach(node, i, v)
        {
            json_t *m = json_is_string(v) ? masked_string(json_string_value(v),
                                                          json_string_length(v), secret)
                                          : NULL;
            if (m) {
                json_array_set_new(node, i, m);
                changed = 1;
            } else {
                changed |= redact_tree(v, secret);
            }
        }
    } else if (json_is_object(node)) {
        const char *key;
        size_t klen;
        json_t *v;
        void *tmp;
        json_t *renamed = NULL;
        json_object_keylen_foreach_safe(node, tmp, key, klen, v)
        {
            json_t *m = json_is_string(v) ? masked_string(json_string_value(v),
                                                          json_string_length(v), secret)
                                          : NULL;
            if (m) {
                json_object_setn_new_nocheck(node, key, klen, m);
                v = m;
                changed = 1;
            } else {
                changed |= redact_tree(v, secret);
            }
            json_t *mk = masked_string(key, klen, secret);
            if (mk) {
                if (!renamed)
                    renamed = json_object();
                if (renamed)
                    json_object_setn_nocheck(renamed, json_string_value(mk),
                                             json_string_length(mk), v);
                json_decref(mk);
                json_object_deln(node, key, klen);
                changed = 1;
            }
        }
        if (renamed) {
            json_object_update(node, renamed);
            json_decref(renamed);
        }
    }
    return changed;
}

char *zjuchat__redact_json(const char *raw, size_t len, json_t *json, const char *secret,
                           size_t *out_len)
{
    if (!secret || !*secret || !memchr(raw, '\\', len) || !redact_tree(json, secret))
        return NULL;
    char *out = json_dumps(json, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (out)
        *out_len = strlen(out);
    return out;
}
