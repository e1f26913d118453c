/*
 * reply.c - reading the upstream's answer as libcurl hands it over: the
 * status line, Content-Type and Retry-After from the headers, accepting or
 * refusing the reply once its headers are in, and the body: a 2xx body
 * collected up to max_body, an error body up to ERROR_BODY_CAP, a stream's
 * bytes fed to the SSE parser (whose events sse_policy.c judges). These are
 * libcurl callbacks: no curl_multi_* call in here, and an end is only
 * recorded (call.h).
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
        size_t want = call->buf_cap ? call->buf_cap * 2 : 4096;
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
        call->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        call->content_type[0] = '\0';
        call->retry_after_ms = -1;
        return len;
    }
    if (len <= 2 && (ptr[0] == '\r' || ptr[0] == '\n')) {
        if (call->status >= 200 || call->status == 0)
            headers_complete(call);
        return call->abort ? 0 : len;
    }
    char line[256];
    size_t l = len < sizeof line - 1 ? len : sizeof line - 1;
    memcpy(line, ptr, l);
    while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == '\n'))
        l--;
    line[l] = '\0';
    if (strncasecmp(line, "content-type:", 13) == 0) {
        const char *v = line + 13;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strnlen(v, sizeof call->content_type - 1);
        memcpy(call->content_type, v, vl);
        call->content_type[vl] = '\0';
    } else if (strncasecmp(line, "retry-after:", 12) == 0) {
        call->retry_after_ms = parse_retry_after(line + 12);
    }
    return len;
}

size_t zjuchat__reply_write_cb(char *ptr, size_t size, size_t n, void *userdata)
{
    zjuchat_call *call = userdata;
    zjuchat_client *client = call->client;
    size_t len = size * n;
    if (call->abort)
        return 0;
    if (call->phase == PHASE_IDLE && !call->paused &&
        client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE] > 0)
        zjuchat__add_timer_ms(call->phase_timer,
                              client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE]);
    if (!call->accepted) {
        /* Error body: keep the head, stop reading once it is capped. */
        size_t room = call->buf_len < ERROR_BODY_CAP ? ERROR_BODY_CAP - call->buf_len : 0;
        if (append(call, ptr, len < room ? len : room, ERROR_BODY_CAP) == -2) {
            zjuchat__call_set_pending(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                      "out of memory");
            return 0;
        }
        if (len > room) {
            zjuchat_error e;
            zjuchat__call_api_error(call, &e);
            call->pending = e;
            call->has_pending = 1;
            call->abort = 1;
            return 0;
        }
        return len;
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
            return 0;
        }
        return len;
    }
    int r = zjuchat__sse_feed(call->sse, ptr, len);
    if (r == ZJUCHAT__SSE_TOO_LONG)
        zjuchat__call_set_pending(call, ZJUCHAT_ERR_PROTOCOL, ZJUCHAT_DETAIL_NONE,
                                  "upstream event or line exceeds the size limit");
    else if (r == ZJUCHAT__SSE_NOMEM)
        zjuchat__call_set_pending(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                  "out of memory");
    return call->abort ? 0 : len;
}
