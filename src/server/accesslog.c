/*
 * accesslog.c - log lines on stderr. Each line goes out in one write() so
 * lines from several worker processes never interleave. Client-controlled
 * text (path, model) is escaped so it cannot forge lines, and every line is
 * passed through zjuchat_redact so the key cannot leak even when a client
 * sends it back to us.
 */
#include "accesslog.h"
#include "front.h"
#include "proxies.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <zjuchat.h>

#define LOG_LINE_MAX 2048

static const char *secret;

void srv_log_set_secret(const char *key)
{
    secret = key;
}

static const srv_proxies *proxies;
static int json_lines;

void srv_access_set_json(int on)
{
    json_lines = on;
}

void srv_access_set_proxies(const srv_proxies *p)
{
    proxies = p;
}

/* getpid() is a system call on every line otherwise (glibc stopped caching
 * it); forgotten in a forked child so that each worker logs its own. */
static pid_t log_pid;

static void forget_pid(void)
{
    log_pid = 0;
}

static long current_pid(void)
{
    if (!log_pid) {
        static int registered;
        if (!registered && pthread_atfork(NULL, NULL, forget_pid) == 0)
            registered = 1;
        log_pid = getpid();
    }
    return (long)log_pid;
}

static size_t stamp(char *buf, size_t cap)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(buf + n, cap - n, ".%03ldZ [%ld] ", (long)tv.tv_usec / 1000,
                     current_pid());
    return n + (m > 0 ? (size_t)m : 0);
}

static void emit(char *line, size_t n)
{
    if (n >= LOG_LINE_MAX - 1)
        n = LOG_LINE_MAX - 2;
    line[n++] = '\n';
    zjuchat_redact(line, n, secret);
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w; /* nowhere to report a failed log write */
}

void srv_log(const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    size_t n = stamp(line, sizeof line);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m > 0)
        n += (size_t)m < sizeof line - n - 1 ? (size_t)m : sizeof line - n - 2;
    emit(line, n);
}

/* Copy src into dst escaping anything outside printable ASCII and quotes. */
static void safe_copy(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p && o + 5 < cap; p++) {
        if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
            dst[o++] = (char)*p;
        else
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", *p);
    }
    dst[o] = '\0';
}

void srv_access_begin(srv_access *a, const srv_request *req)
{
    memset(a, 0, sizeof *a);
    gettimeofday(&a->start, NULL);
    a->stream = -1;
    a->ttfb_ms = -1;
    a->prompt_tokens = a->completion_tokens = a->total_tokens = -1;
    a->ttft_ms = -1;
    snprintf(a->client, sizeof a->client, "%s", srv_req_peer_text(req));
    const struct sockaddr *peer = srv_req_peer(req);
    srv_proxies_client_addr(NULL, peer, NULL, NULL, a->addr, sizeof a->addr);
    if (srv_proxies_trusts(proxies, peer)) {
        char *xff = srv_req_header_joined(req, "X-Forwarded-For");
        char *xri = srv_req_header_joined(req, "X-Real-IP");
        char ip[SRV_PROXIES_ADDR_MAX];
        if (srv_proxies_client_addr(proxies, peer, xff, xri, ip, sizeof ip) == 1) {
            snprintf(a->client, sizeof a->client, "%s", ip);
            snprintf(a->addr, sizeof a->addr, "%s", ip);
        }
        free(xff);
        free(xri);
    }
    safe_copy(a->method, sizeof a->method, srv_req_method(req));
    safe_copy(a->path, sizeof a->path, srv_req_uri(req)[0] ? srv_req_uri(req) : "-");
}

/* Unknown numbers are null; texts are the escaped ones of the text line
 * (printable ASCII: a JSON string whatever the client sent). */
static json_t *number_or_null(long v)
{
    return v >= 0 ? json_integer(v) : json_null();
}

static void write_json(const srv_access *a, long dur_ms, const char *model,
                       const char *name)
{
    char path[sizeof a->path * 4], ts[64];
    safe_copy(path, sizeof path, a->path);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", (long)tv.tv_usec / 1000);
    json_t *o = json_pack(
        "{s:s, s:I, s:s, s:s, s:s, s:i, s:I, s:I, s:s, s:o, s:o, s:o, s:o, s:o, s:b, "
        "s:s}",
        "time", ts, "pid", (json_int_t)current_pid(), "client", a->client, "method",
        a->method, "path", path, "status", a->status, "bytes", (json_int_t)a->bytes,
        "duration_ms", (json_int_t)dur_ms, "model", a->model[0] ? model : "-", "stream",
        a->stream < 0 ? json_null() : json_boolean(a->stream), "ttfb_ms",
        number_or_null(a->ttfb_ms), "prompt_tokens", number_or_null(a->prompt_tokens),
        "completion_tokens", number_or_null(a->completion_tokens), "total_tokens",
        number_or_null(a->total_tokens), "tokens_estimated", a->tokens_estimated,
        "token_name", a->token_name[0] ? name : "-");
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return;
    char line[LOG_LINE_MAX];
    size_t len = strlen(text);
    if (len > sizeof line - 2)
        len = sizeof line - 2; /* cannot happen: every field is bounded */
    memcpy(line, text, len);
    free(text);
    emit(line, len);
}

void srv_access_write(const srv_access *a)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    long dur_ms = (long)(now.tv_sec - a->start.tv_sec) * 1000 +
                  (long)(now.tv_usec - a->start.tv_usec) / 1000;
    char model[sizeof a->model * 4];
    safe_copy(model, sizeof model, a->model[0] ? a->model : "-");
    char ttfb[32], tokens[64];
    if (a->ttfb_ms >= 0)
        snprintf(ttfb, sizeof ttfb, "%ldms", a->ttfb_ms);
    else
        snprintf(ttfb, sizeof ttfb, "-");
    if (a->total_tokens >= 0)
        snprintf(tokens, sizeof tokens, "%s%ld/%ld/%ld", a->tokens_estimated ? "~" : "",
                 a->prompt_tokens, a->completion_tokens, a->total_tokens);
    else
        snprintf(tokens, sizeof tokens, "-");
    char name[sizeof a->token_name * 4];
    safe_copy(name, sizeof name, a->token_name[0] ? a->token_name : "-");
    if (json_lines) {
        write_json(a, dur_ms, model, name);
        return;
    }
    srv_log("access %s \"%s %s\" %d %zu %ldms model=%s stream=%s ttfb=%s tokens=%s "
            "token_name=%s",
            a->client, a->method, a->path, a->status, a->bytes, dur_ms, model,
            a->stream < 0 ? "-" : (a->stream ? "true" : "false"), ttfb, tokens, name);
}
