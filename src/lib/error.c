/*
 * error.c - error classes, their names, and the rules that keep the API key
 * out of every message the library produces.
 */
#include "internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *zjuchat_strerror(zjuchat_code code)
{
    switch (code) {
    case ZJUCHAT_OK:
        return "success";
    case ZJUCHAT_ERR_CONFIG:
        return "configuration error";
    case ZJUCHAT_ERR_NETWORK:
        return "network error";
    case ZJUCHAT_ERR_TIMEOUT:
        return "timeout";
    case ZJUCHAT_ERR_API:
        return "API error";
    case ZJUCHAT_ERR_PROTOCOL:
        return "protocol error";
    case ZJUCHAT_ERR_CANCELLED:
        return "cancelled";
    case ZJUCHAT_ERR_NOMEM:
        return "out of memory";
    case ZJUCHAT_ERR_INVALID:
        return "invalid argument";
    }
    return "unknown error";
}

const char *zjuchat_detail_name(zjuchat_detail detail)
{
    switch (detail) {
    case ZJUCHAT_DETAIL_NONE:
        return "none";
    case ZJUCHAT_NET_DNS:
        return "dns";
    case ZJUCHAT_NET_CONNECT:
        return "connect";
    case ZJUCHAT_NET_TLS:
        return "tls";
    case ZJUCHAT_NET_RESET:
        return "reset";
    case ZJUCHAT_TIMEOUT_CONNECT:
        return "connect";
    case ZJUCHAT_TIMEOUT_FIRST_BYTE:
        return "first-byte";
    case ZJUCHAT_TIMEOUT_IDLE:
        return "idle";
    case ZJUCHAT_TIMEOUT_TOTAL:
        return "total";
    }
    return "unknown";
}

void zjuchat__error_set(zjuchat_error *err, zjuchat_code code, zjuchat_detail detail,
                        const char *fmt, ...)
{
    if (!err)
        return;
    err->code = code;
    err->detail = detail;
    err->http_status = 0;
    err->retry_after_ms = -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

zjuchat_code zjuchat__nomem(zjuchat_error *err)
{
    zjuchat__error_set(err, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE, "out of memory");
    return ZJUCHAT_ERR_NOMEM;
}

/* Copy at most cap-1 bytes of printable text, collapsing whitespace runs, so
 * an HTML page or a binary body cannot break a log line or a JSON string. */
static void copy_clean(char *out, size_t cap, const char *src, size_t len)
{
    size_t o = 0;
    int space = 0;
    for (size_t i = 0; i < len && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c < 0x20 || c == 0x7f) {
            space = 1;
            continue;
        }
        if (c == ' ') {
            space = 1;
            continue;
        }
        if (space && o > 0 && o + 2 < cap)
            out[o++] = ' ';
        space = 0;
        out[o++] = (char)c;
    }
    /* Do not end inside a UTF-8 sequence. */
    while (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80)
        o--;
    if (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0xC0)
        o--;
    out[o] = '\0';
}

void zjuchat__api_message(const char *body, size_t len, const char *content_type,
                          long status, const char *secret, char *out, size_t cap)
{
    char text[400] = "";
    json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    if (root) {
        json_t *e = json_object_get(root, "error");
        json_t *m = NULL;
        if (json_is_object(e))
            m = json_object_get(e, "message");
        else if (json_is_string(e))
            m = e;
        if (!m)
            m = json_object_get(root, "message");
        if (!m)
            m = json_object_get(root, "detail");
        if (json_is_string(m)) {
            /* Mask the decoded text before it is cut, so no prefix of an
             * escaped key survives at the cut. */
            size_t mlen = json_string_length(m);
            char *copy = malloc(mlen + 1);
            if (copy) {
                memcpy(copy, json_string_value(m), mlen + 1);
                zjuchat_redact(copy, mlen, secret);
                copy_clean(text, sizeof text, copy, mlen);
                free(copy);
            }
        }
        json_decref(root);
    }
    if (!*text && body && len && content_type &&
        strncasecmp(content_type, "text/plain", 10) == 0)
        copy_clean(text, sizeof text, body, len);
    if (*text)
        snprintf(out, cap, "upstream answered HTTP %ld: %s", status, text);
    else
        snprintf(out, cap, "upstream answered HTTP %ld (%s body, %zu bytes)", status,
                 content_type && *content_type ? content_type : "no", len);
    zjuchat_redact(out, strlen(out), secret);
}
