/*
 * reply.c - reading the upstream's answer, whichever transport read it (the
 * zjuchat__reply_* steps: libcurl's header and write callbacks below, and
 * h1_exchange.c's parser callbacks): the status, Content-Type and
 * Retry-After from the headers, accepting or refusing the reply once its
 * headers are in, and the body: a 2xx body collected up to max_body, an
 * error body up to ERROR_BODY_CAP, a stream's bytes fed to the SSE parser
 * (whose events sse_policy.c judges). They run inside a transport's
 * callbacks: no curl_multi_* call in here, and an end is only recorded
 * (call.h).
 */
#include "call.h"
#include "evtime.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int append(zjuchat_call *call, const char *p, size_t len, size_t cap)
{
    if (call->buf_len + len > cap)
        return -1;
    if (call->buf_len + len + 1 > call->buf_cap) {
        /* First 1 KB: most non-stream answers fit, and glibc keeps blocks
         * that small in its per-thread cache; a 4 KB first block took the
         * slow path of malloc and free on every request (callgrind). */
        size_t want = call->buf_cap ? call->buf_cap * 2 : 1024;
        while (want < call->buf_len + len + 1)
            want *= 2;
        if (want > cap + 1)
            want = cap + 1;
        char *nb = realloc(call->buf, want);
        if (!nb)
            return -2;
        call->buf = nb;
        call->buf_cap = want;
    }
    memcpy(call->buf + call->buf_len, p, len);
    call->buf_len += len;
    call->buf[call->buf_len] = '\0';
    return 0;
}

static void headers_complete(zjuchat_call *call)
{
    zjuchat_client *client = call->client;
    call->headers_done = 1;
    call->stats.http_status = call->status;
    call->stats.first_byte_ms = zjuchat__ms_since(&call->attempt_start);
    evtimer_del(call->phase_timer);
    call->phase = PHASE_IDLE;
    if (client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE] > 0 && !call->paused)
        zjuchat__add_timer_ms(call->phase_timer,
                              client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE]);
    if (call->status < 200 || call->status > 299)
        return; /* an error: its body is collected, then reported */
    if (call->stream && strncasecmp(call->content_type, "text/event-stream", 17) != 0) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "upstream answered a stream request with Content-Type \"%s\", "
                 "not text/event-stream",
                 call->content_type);
        zjuchat__call_set_pending(call, ZJUCHAT_ERR_PROTOCOL, ZJUCHAT_DETAIL_NONE, msg);
        return;
    }
    call->accepted = 1;
    if (call->cb.on_accepted) {
        call->in_callback++;
        call->cb.on_accepted(call, call->userdata);
        call->in_callback--;
    }
}

static long parse_retry_after(const char *v)
{
    while (*v == ' ' || *v == '\t')
        v++;
    if (*v >= '0' && *v <= '9') {
        char *end;
        long s = strtol(v, &end, 10);
        return s > 86400 ? 86400L * 1000 : s * 1000;
    }
    time_t when = curl_getdate(v, NULL);
    if (when < 0)
        return -1;
    time_t now = time(NULL);
    return when > now ? (long)(when - now) * 1000 : 0;
}

void zjuchat__reply_begin(zjuchat_call *call, long status)
{
    call->status = status;
    call->content_type[0] = '\0';
    call->retry_after_ms = -1;
}

void zjuchat__reply_header(zjuchat_call *call, const char *name, size_t name_len,
                           const char *value, size_t value_len)
{
    while (value_len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        value_len--;
    }
    while (value_len > 0 &&
           (value[value_len - 1] == '\r' || value[value_len - 1] == '\n' ||
            value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
        value_len--;
    if (name_len == 12 && strncasecmp(name, "content-type", 12) == 0) {
        size_t vl = value_len < sizeof call->content_type - 1
                        ? value_len
                        : sizeof call->content_type - 1;
        memcpy(call->content_type, value, vl);
        call->content_type[vl] = '\0';
    } else if (name_len == 11 && strncasecmp(name, "retry-after", 11) == 0) {
        char v[64];
        size_t vl = value_len < sizeof v - 1 ? value_len : sizeof v - 1;
        memcpy(v, value, vl);
        v[vl] = '\0';
        call->retry_after_ms = parse_retry_after(v);
    }
}

int zjuchat__reply_headers_end(zjuchat_call *call)
{
    if (call->abort)
        return -1;
    if (call->status >= 200 || call->status == 0)
        headers_complete(call);
    return call->abort ? -1 : 0;
}

/* libcurl hands over each header line whole, with its CRLF. */
size_t zjuchat__reply_header_cb(char *ptr, size_t size, size_t n, void *userdata)
{
    zjuchat_call *call = userdata;
    size_t len = size * n;
    if (call->abort)
        return 0;
    /* Header values end up in error messages: mask an echoed key first. */
    zjuchat_redact(ptr, len, call->client->api_key);
    if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        /* A new status line: an interim 1xx may come before the real one. */
        const char *sp = memchr(ptr, ' ', len);
        zjuchat__reply_begin(call, sp ? strtol(sp + 1, NULL, 10) : 0);
        return len;
    }
    if (len <= 2 && (ptr[0] == '\r' || ptr[0] == '\n'))
        return zjuchat__reply_headers_end(call) ? 0 : len;
    const char *colon = memchr(ptr, ':', len < 256 ? len : 256);
    if (colon)
        zjuchat__reply_header(call, ptr, (size_t)(colon - ptr), colon + 1,
                              (size_t)(ptr + (len < 256 ? len : 256) - colon - 1));
    return len;
}

int zjuchat__reply_body(zjuchat_call *call, char *ptr, size_t len)
{
    zjuchat_client *client = call->client;
    if (call->abort)
        return -1;
    if (call->phase == PHASE_IDLE)
        zjuchat__call_touch_idle(call);
    if (!call->accepted) {
        /* Error body: keep the head, stop reading once it is capped. */
        size_t room = call->buf_len < ERROR_BODY_CAP ? ERROR_BODY_CAP - call->buf_len : 0;
        if (append(call, ptr, len < room ? len : room, ERROR_BODY_CAP) == -2) {
            zjuchat__call_set_pending(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                      "out of memory");
            return -1;
        }
        if (len > room) {
            zjuchat_error e;
            zjuchat__call_api_error(call, &e);
            call->pending = e;
            call->has_pending = 1;
            call->abort = 1;
            return -1;
        }
        return 0;
    }
    if (!call->stream) {
        int r = append(call, ptr, len, client->max_body);
        if (r) {
            char msg[120];
            snprintf(msg, sizeof msg, "upstream response exceeds %zu bytes",
                     client->max_body);
            zjuchat__call_set_pending(
                call, r == -2 ? ZJUCHAT_ERR_NOMEM : ZJUCHAT_ERR_PROTOCOL,
                ZJUCHAT_DETAIL_NONE, r == -2 ? "out of memory" : msg);
            return -1;
        }
        return 0;
    }
    int r = zjuchat__sse_feed(call->sse, ptr, len);
    if (r == ZJUCHAT__SSE_TOO_LONG)
        zjuchat__call_set_pending(call, ZJUCHAT_ERR_PROTOCOL, ZJUCHAT_DETAIL_NONE,
                                  "upstream event or line exceeds the size limit");
    else if (r == ZJUCHAT__SSE_NOMEM)
        zjuchat__call_set_pending(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                  "out of memory");
    return call->abort ? -1 : 0;
}

size_t zjuchat__reply_write_cb(char *ptr, size_t size, size_t n, void *userdata)
{
    size_t len = size * n;
    return zjuchat__reply_body(userdata, ptr, len) ? 0 : len;
}
