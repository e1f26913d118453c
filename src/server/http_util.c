/*
 * http_util.c - headers and error replies common to every response. CORS
 * follows CORS_ORIGINS: "*" answers any origin with "*"; a list echoes the
 * request's Origin when it is listed (with Vary: Origin, since the answer
 * then depends on that header, so caches must key on it). The list was
 * normalised at start to what browsers send in Origin (src/server/config.c:
 * lower case, no default port, no trailing '/'), so comparing whole entries
 * is enough.
 */
#include "http_util.h"
#include "config.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Is `origin` one of the comma-separated entries of `list`? */
static int origin_listed(const char *list, const char *origin)
{
    size_t olen = strlen(origin);
    const char *p = list;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && isspace((unsigned char)t[-1]))
            t--;
        if ((size_t)(t - p) == olen && olen > 0 && strncasecmp(p, origin, olen) == 0)
            return 1;
        p = e;
    }
    return 0;
}

static int cors_any(const srv_config *cfg)
{
    return strcmp(cfg->cors_origins, "*") == 0 || origin_listed(cfg->cors_origins, "*");
}

void srv_http_common_headers(struct evhttp_request *req, const srv_config *cfg)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
    if (cors_any(cfg)) {
        evhttp_add_header(out, "Access-Control-Allow-Origin", "*");
        return;
    }
    evhttp_add_header(out, "Vary", "Origin");
    const char *origin =
        evhttp_find_header(evhttp_request_get_input_headers(req), "Origin");
    if (origin && origin_listed(cfg->cors_origins, origin))
        evhttp_add_header(out, "Access-Control-Allow-Origin", origin);
}

int srv_http_preflight(struct evhttp_request *req, const srv_config *cfg)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    srv_http_common_headers(req, cfg);
    evhttp_add_header(out, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    const char *want = evhttp_find_header(in, "Access-Control-Request-Headers");
    /* Echo what the browser asks for only if it is short and printable. */
    int ok = want && strlen(want) < 512;
    for (const char *p = want; ok && *p; p++)
        ok = isprint((unsigned char)*p);
    evhttp_add_header(out, "Access-Control-Allow-Headers", ok ? want : "Content-Type");
    evhttp_add_header(out, "Access-Control-Max-Age", "600");
    evhttp_send_reply(req, 204, "No Content", NULL);
    return 204;
}

char *srv_http_error_json(const char *msg)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_t *s = json_string(msg);
    if (!s) /* not valid UTF-8: say so rather than fail */
        s = json_string("error (message not valid UTF-8)");
    json_object_set_new(o, "error", s);
    char *out = json_dumps(o, JSON_ENSURE_ASCII);
    json_decref(o);
    return out;
}

void srv_http_send_json_error(struct evhttp_request *req, const srv_config *cfg,
                              int status, const char *msg, long retry_after_s,
                              size_t *bytes)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    srv_http_common_headers(req, cfg);
    evhttp_add_header(out, "Content-Type", "application/json");
    if (retry_after_s >= 0) {
        char ra[32];
        snprintf(ra, sizeof ra, "%ld", retry_after_s);
        evhttp_add_header(out, "Retry-After", ra);
    }
    char *body = srv_http_error_json(msg);
    const char *b = body ? body : "{\"error\":\"out of memory\"}";
    size_t len = strlen(b);
    struct evbuffer *buf = evbuffer_new();
    if (buf)
        evbuffer_add(buf, b, len);
    evhttp_send_reply(req, status, srv_http_reason(status), buf);
    if (buf)
        evbuffer_free(buf);
    free(body);
    if (bytes)
        *bytes = buf ? len : 0;
}

int srv_http_is_json_type(const char *ct)
{
    if (!ct)
        return 0;
    while (isspace((unsigned char)*ct))
        ct++;
    static const char want[] = "application/json";
    size_t n = sizeof want - 1;
    if (strncasecmp(ct, want, n) != 0)
        return 0;
    ct += n;
    while (isspace((unsigned char)*ct))
        ct++;
    return *ct == '\0' || *ct == ';';
}

const char *srv_http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}
