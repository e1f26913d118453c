/*
 * http_util.c - headers and error replies common to every response. CORS
 * follows CORS_ORIGINS: "*" answers any origin with "*"; a list echoes the
 * request's Origin when it is listed (with Vary: Origin, since the answer
 * then depends on that header, so caches must key on it), exposing
 * Retry-After to the page. The list was normalised at start to what browsers
 * send in Origin (src/server/config.c: lower case, no default port, no
 * trailing '/'), so comparing whole entries is enough.
 */
#include "http_util.h"
#include "config.h"
#include "front.h"

#include <ctype.h>
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

/* Retry-After (429, 503) is not a CORS-safelisted response header: a page of
 * another origin reads it only when the answer exposes it. */
static void allow_origin(srv_request *req, const char *origin)
{
    srv_req_add_header(req, "Access-Control-Allow-Origin", origin);
    srv_req_add_header(req, "Access-Control-Expose-Headers", "Retry-After");
}

void srv_http_common_headers(srv_request *req, const srv_config *cfg)
{
    srv_req_add_header(req, "X-Content-Type-Options", "nosniff");
    if (cors_any(cfg)) {
        allow_origin(req, "*");
        return;
    }
    srv_req_add_header(req, "Vary", "Origin");
    const char *origin = srv_req_header(req, "Origin");
    if (origin && origin_listed(cfg->cors_origins, origin))
        allow_origin(req, origin);
}

int srv_http_preflight(srv_request *req, const srv_config *cfg)
{
    srv_http_common_headers(req, cfg);
    srv_req_add_header(req, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    const char *want = srv_req_header(req, "Access-Control-Request-Headers");
    /* Echo what the browser asks for only if it is short and printable. */
    int ok = want && strlen(want) < 512;
    for (const char *p = want; ok && *p; p++)
        ok = isprint((unsigned char)*p);
    srv_req_add_header(req, "Access-Control-Allow-Headers", ok ? want : "Content-Type");
    srv_req_add_header(req, "Access-Control-Max-Age", "600");
    srv_req_reply(req, 204, NULL, 0);
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

void srv_http_reply_json(srv_request *req, const srv_config *cfg, int status,
                         const char *json, size_t *bytes)
{
    size_t len = strlen(json);
    srv_http_common_headers(req, cfg);
    srv_req_add_header(req, "Content-Type", "application/json");
    srv_req_reply(req, status, json, len);
    if (bytes)
        *bytes = len;
}

void srv_http_retry_after(srv_request *req, long seconds)
{
    if (seconds < 0)
        return;
    char ra[32];
    snprintf(ra, sizeof ra, "%ld", seconds);
    srv_req_add_header(req, "Retry-After", ra);
}

void srv_http_send_json_error(srv_request *req, const srv_config *cfg, int status,
                              const char *msg, long retry_after_s, size_t *bytes)
{
    srv_http_retry_after(req, retry_after_s);
    char *body = srv_http_error_json(msg);
    srv_http_reply_json(req, cfg, status, body ? body : "{\"error\":\"out of memory\"}",
                        bytes);
    free(body);
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
