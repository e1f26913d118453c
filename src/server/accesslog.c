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
        snprintf(tokens, sizeof tokens, "%ld/%ld/%ld", a->prompt_tokens,
                 a->completion_tokens, a->total_tokens);
    else
        snprintf(tokens, sizeof tokens, "-");
    srv_log("access %s \"%s %s\" %d %zu %ldms model=%s stream=%s ttfb=%s tokens=%s",
            a->client, a->method, a->path, a->status, a->bytes, dur_ms, model,
            a->stream < 0 ? "-" : (a->stream ? "true" : "false"), ttfb, tokens);
}
