/*
 * passthrough.c - the gateway's front door: a POST of the caller's own JSON
 * body to a path of its choosing, and the model listing, both on the
 * caller's event loop. They run through the same transport as every call
 * (call.c); what is here is checking what the caller hands in.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int bound(zjuchat_client *client, const char *fn, zjuchat_error *err)
{
    if (client && client->evented)
        return 1;
    zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                       "%s needs a client bound to an event base "
                       "(zjuchat_client_use_event_base)",
                       fn);
    return 0;
}

/* RFC 3986 pchar (percent escapes included) plus '/': what a path may hold
 * without escaping. Spaces, controls, quotes, '#', '\\' and bytes above 0x7f
 * are refused, not escaped: the caller names an endpoint, not user text. */
static const unsigned char path_chars[256] = {
    ['a' ... 'z'] = 1, ['A' ... 'Z'] = 1, ['0' ... '9'] = 1, ['-'] = 1, ['.'] = 1,
    ['_'] = 1,         ['~'] = 1,         ['!'] = 1,         ['$'] = 1, ['&'] = 1,
    ['\''] = 1,        ['('] = 1,         [')'] = 1,         ['*'] = 1, ['+'] = 1,
    [','] = 1,         [';'] = 1,         ['='] = 1,         [':'] = 1, ['@'] = 1,
    ['%'] = 1,         ['/'] = 1,
};

static int path_char(unsigned char c)
{
    return path_chars[c]; /* a table: strchr per byte was a third of the checks */
}

/* A "." or ".." segment, also spelt %2e: libcurl (and a server behind the
 * upstream's proxy) would resolve it, leaving the base URL's path. */
static int dot_segment(const char *s, size_t n)
{
    int dots = 0;
    for (size_t i = 0; i < n; dots++) {
        if (s[i] == '.')
            i++;
        else if (n - i >= 3 && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] | 0x20) == 'e')
            i += 3;
        else
            return 0;
    }
    return dots == 1 || dots == 2;
}

/* 0 when path (leading '/' dropped) names something under the base URL. */
static int check_path(const char *path, zjuchat_error *err)
{
    const char *p = path;
    while (*p == '/')
        p++;
    const char *query = strchr(p, '?');
    size_t plen = query ? (size_t)(query - p) : strlen(p);
    const char *why = NULL;
    if (plen == 0)
        why = "is empty";
    for (size_t i = 0; !why && i < plen; i++)
        if (!path_char((unsigned char)p[i]))
            why = "holds a character that is not allowed in a URL path";
    for (const char *q = query; !why && q && *q; q++)
        if (*q != '?' && !path_char((unsigned char)*q))
            why = "holds a character that is not allowed in a URL query";
    for (size_t i = 0; !why && i < plen;) {
        size_t n = strcspn(p + i, "/?");
        if (n > plen - i)
            n = plen - i;
        if (dot_segment(p + i, n))
            why = "has a \".\" or \"..\" segment";
        i += n + 1;
    }
    if (!why)
        return 0;
    /* The path is the caller's, never upstream's: safe to quote, but cut. */
    zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                       "upstream path \"%.64s\" %s", path, why);
    return -1;
}

zjuchat_call *zjuchat_call_start_raw(zjuchat_client *client, const char *path,
                                     const char *body, size_t body_len, unsigned flags,
                                     const zjuchat_callbacks *cb, void *userdata,
                                     zjuchat_error *err)
{
    if (!bound(client, "zjuchat_call_start_raw", err))
        return NULL;
    if (!path || !body) {
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "zjuchat_call_start_raw: NULL path or body");
        return NULL;
    }
    if ((flags & ~(ZJUCHAT_CALL_STREAM | ZJUCHAT_CALL_PASS_DONE)) ||
        ((flags & ZJUCHAT_CALL_PASS_DONE) && !(flags & ZJUCHAT_CALL_STREAM))) {
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "zjuchat_call_start_raw: bad flags 0x%x (PASS_DONE needs "
                           "STREAM)",
                           flags);
        return NULL;
    }
    if (check_path(path, err))
        return NULL;
    while (*path == '/')
        path++;
    size_t path_len = strlen(path);
    char room[128]; /* most paths: no allocation (zjuchat__call_start copies it) */
    char *slashed = path_len + 2 <= sizeof room ? room : malloc(path_len + 2);
    /* Owned by the call, kept for its retries; NUL-terminated for safety,
     * never measured with strlen (the body may hold a NUL). */
    char *copy = malloc(body_len + 1);
    if (!slashed || !copy) {
        if (slashed != room)
            free(slashed);
        free(copy);
        zjuchat__nomem(err);
        return NULL;
    }
    slashed[0] = '/';
    memcpy(slashed + 1, path, path_len + 1);
    memcpy(copy, body, body_len);
    copy[body_len] = '\0';
    zjuchat_call *call =
        zjuchat__call_start(client, slashed, copy, body_len, flags, cb, userdata, err);
    if (slashed != room)
        free(slashed);
    return call;
}

zjuchat_call *zjuchat_models_start(zjuchat_client *client, const zjuchat_callbacks *cb,
                                   void *userdata, zjuchat_error *err)
{
    if (!bound(client, "zjuchat_models_start", err))
        return NULL;
    return zjuchat__call_start(client, ZJUCHAT__MODELS_PATH, NULL, 0, 0, cb, userdata,
                               err);
}
