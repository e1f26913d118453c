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
#include <netinet/in.h>
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

/* A line under construction: appends stop at the capacity, leaving room
 * for the newline emit() adds. The access line is built with these rather
 * than printf, whose machinery was most of its cost. */
typedef struct line_buf {
    char *p;
    size_t n, cap;
} line_buf;

static void put_n(line_buf *b, const char *s, size_t len)
{
    if (len > b->cap - 1 - b->n)
        len = b->cap - 1 - b->n;
    memcpy(b->p + b->n, s, len);
    b->n += len;
}

static void put_s(line_buf *b, const char *s)
{
    put_n(b, s, strlen(s));
}

static void put_long(line_buf *b, long v)
{
    char d[24];
    size_t k = sizeof d;
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
    do {
        d[--k] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        d[--k] = '-';
    put_n(b, d + k, sizeof d - k);
}

/* "YYYY-MM-DDTHH:MM:SS" changes once a second: formatted then. */
static size_t seconds_text(time_t sec, char *out)
{
    static time_t last = -1;
    static char text[32];
    static size_t len;
    if (sec != last) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        len = strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
        last = sec;
    }
    memcpy(out, text, len);
    return len;
}

/* "2026-11-30T20:31:55.123Z [pid] ": every line's start. */
static size_t stamp(char *buf, size_t cap)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    line_buf b = {buf, seconds_text(tv.tv_sec, buf), cap};
    long ms = (long)tv.tv_usec / 1000;
    char frac[5] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10),
                    (char)('0' + ms % 10), 'Z'};
    put_n(&b, frac, sizeof frac);
    put_n(&b, " [", 2);
    put_long(&b, current_pid());
    put_n(&b, "] ", 2);
    return b.n;
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
        if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\') {
            dst[o++] = (char)*p;
        } else {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = "0123456789abcdef"[*p >> 4];
            dst[o++] = "0123456789abcdef"[*p & 15];
        }
    }
    dst[o] = '\0';
}

/* The rate limits' key for a peer, by its address alone (the port plays no
 * part): the last one is kept, since consecutive requests mostly come from
 * one address (a client's keep-alive connections, a proxy in front). */
static void peer_addr(const struct sockaddr *peer, char *out, size_t cap)
{
    static int family;
    static unsigned char bytes[16];
    static char text[SRV_PROXIES_ADDR_MAX];
    const void *b = NULL;
    size_t n = 0;
    if (peer->sa_family == AF_INET) {
        b = &((const struct sockaddr_in *)peer)->sin_addr;
        n = 4;
    } else if (peer->sa_family == AF_INET6) {
        b = &((const struct sockaddr_in6 *)peer)->sin6_addr;
        n = 16;
    }
    if (!b || peer->sa_family != family || memcmp(b, bytes, n) != 0) {
        srv_proxies_client_addr(NULL, peer, NULL, NULL, text, sizeof text);
        family = b ? peer->sa_family : 0;
        if (b)
            memcpy(bytes, b, n);
    }
    size_t len = strnlen(text, cap - 1);
    memcpy(out, text, len);
    out[len] = '\0';
}

void srv_access_begin(srv_access *a, const srv_request *req)
{
    memset(a, 0, sizeof *a);
    gettimeofday(&a->start, NULL);
    a->stream = -1;
    a->ttfb_ms = -1;
    a->prompt_tokens = a->completion_tokens = a->total_tokens = -1;
    a->ttft_ms = -1;
    const char *peer_text = srv_req_peer_text(req);
    size_t pl = strnlen(peer_text, sizeof a->client - 1);
    memcpy(a->client, peer_text, pl); /* the rest is zero from the memset */
    const struct sockaddr *peer = srv_req_peer(req);
    peer_addr(peer, a->addr, sizeof a->addr);
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
    /* Consecutive requests mostly name one model: its escaped text is kept. */
    static char last_model[sizeof a->model], model[sizeof a->model * 4] = "-";
    if (strcmp(last_model, a->model) != 0) {
        memcpy(last_model, a->model, sizeof last_model);
        safe_copy(model, sizeof model, a->model[0] ? a->model : "-");
    }
    char name[sizeof a->token_name * 4];
    safe_copy(name, sizeof name, a->token_name[0] ? a->token_name : "-");
    if (json_lines) {
        write_json(a, dur_ms, model, name);
        return;
    }
    /* access CLIENT "METHOD PATH" STATUS BYTES DURms model=M stream=S
     * ttfb=Tms|- tokens=[~]P/C/T|- token_name=N */
    char line[LOG_LINE_MAX];
    line_buf b = {line, stamp(line, sizeof line), sizeof line - 1};
    put_n(&b, "access ", 7);
    put_s(&b, a->client);
    put_n(&b, " \"", 2);
    put_s(&b, a->method);
    put_n(&b, " ", 1);
    put_s(&b, a->path);
    put_n(&b, "\" ", 2);
    put_long(&b, a->status);
    put_n(&b, " ", 1);
    put_long(&b, (long)a->bytes);
    put_n(&b, " ", 1);
    put_long(&b, dur_ms);
    put_n(&b, "ms model=", 9);
    put_s(&b, model);
    put_s(&b,
          a->stream < 0 ? " stream=-" : (a->stream ? " stream=true" : " stream=false"));
    put_n(&b, " ttfb=", 6);
    if (a->ttfb_ms >= 0) {
        put_long(&b, a->ttfb_ms);
        put_n(&b, "ms", 2);
    } else {
        put_n(&b, "-", 1);
    }
    put_n(&b, " tokens=", 8);
    if (a->total_tokens >= 0) {
        if (a->tokens_estimated)
            put_n(&b, "~", 1);
        put_long(&b, a->prompt_tokens);
        put_n(&b, "/", 1);
        put_long(&b, a->completion_tokens);
        put_n(&b, "/", 1);
        put_long(&b, a->total_tokens);
    } else {
        put_n(&b, "-", 1);
    }
    put_n(&b, " token_name=", 12);
    put_s(&b, name);
    emit(line, b.n);
}
