/* Incremental HTTP/1.1 response parser for zju-loadgen. It consumes every byte
 * it is given (no copy of the body, no growing buffer), decodes chunked or
 * length-delimited bodies, and counts SSE events on the fly by looking only
 * at the first bytes of each line: that keeps the load generator cheap
 * enough that it is not the bottleneck of the benchmark it drives. */
#include "loadgen.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const lg_fail_names[LG_F_COUNT] = {
    "connect",     "status",   "content_type", "event_count", "done_seen",
    "unclean_end", "protocol", "timeout",      "cut_at_end",
};

void lg_resp_reset(struct lg_resp *r)
{
    /* The line buffer does not need clearing: only llen bytes are read. */
    size_t keep = offsetof(struct lg_resp, line);
    memset(r, 0, keep);
    r->content_length = -1;
    r->state = LG_R_STATUS;
    r->sse_len = 0;
    r->sse_last = 0;
    r->ev_has_data = r->ev_is_done = 0;
    r->events = r->done_events = 0;
}

static void fail(struct lg_resp *r, const char *why)
{
    r->state = LG_R_ERROR;
    r->error = why;
}

/* Ends one SSE line (without its LF). Only the first 16 bytes were kept, which
 * is enough to tell "data:" lines and "data: [DONE]" apart. */
static void sse_line(struct lg_resp *r)
{
    size_t len = r->sse_len;
    if (len > 0 && r->sse_last == '\r')
        len--;
    if (len == 0) {
        if (r->ev_has_data) {
            if (r->ev_is_done)
                r->done_events++;
            else
                r->events++;
        }
        r->ev_has_data = r->ev_is_done = 0;
    } else if (len >= 5 && memcmp(r->sse_head, "data:", 5) == 0) {
        size_t off = 5;
        if (len > 5 && r->sse_head[5] == ' ')
            off = 6;
        /* A second data line in one event makes it a multi-line event, whose
         * data is no longer exactly "[DONE]". */
        r->ev_is_done = !r->ev_has_data && len - off == 6 &&
                        off + 6 <= sizeof r->sse_head &&
                        memcmp(r->sse_head + off, "[DONE]", 6) == 0;
        r->ev_has_data = 1;
    }
    r->sse_len = 0;
}

static void sse_feed(struct lg_resp *r, const char *p, size_t n)
{
    r->body_bytes += n;
    if (!r->is_sse)
        return;
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (r->sse_len < sizeof r->sse_head) {
            size_t room = sizeof r->sse_head - r->sse_len;
            memcpy(r->sse_head + r->sse_len, p, take < room ? take : room);
        }
        if (take > 0)
            r->sse_last = p[take - 1];
        r->sse_len += take;
        if (!nl)
            return;
        sse_line(r);
        p += take + 1;
        n -= take + 1;
    }
}

int lg_resp_partial_event(const struct lg_resp *r)
{
    return r->is_sse && (r->sse_len > 0 || r->ev_has_data);
}

static void header_line(struct lg_resp *r, char *s, size_t len)
{
    char *colon = memchr(s, ':', len);
    if (!colon)
        return;
    *colon = '\0';
    char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (strcasecmp(s, "content-type") == 0) {
        r->is_sse = strncasecmp(v, "text/event-stream", 17) == 0;
    } else if (strcasecmp(s, "transfer-encoding") == 0) {
        r->chunked = strcasestr(v, "chunked") != NULL;
    } else if (strcasecmp(s, "content-length") == 0) {
        r->content_length = strtoll(v, NULL, 10);
    } else if (strcasecmp(s, "connection") == 0) {
        if (strcasestr(v, "close"))
            r->conn_close = 1;
    }
}

/* Headers are complete: pick how the body is delimited. */
static void start_body(struct lg_resp *r)
{
    if (r->status == 204 || r->status == 304 || (r->status >= 100 && r->status < 200)) {
        r->state = LG_R_DONE;
    } else if (r->chunked) {
        r->state = LG_R_CHUNK_SIZE;
    } else if (r->content_length >= 0) {
        r->left = (uint64_t)r->content_length;
        r->state = r->left ? LG_R_LENGTH : LG_R_DONE;
    } else {
        r->conn_close = 1;
        r->state = LG_R_UNTIL_EOF;
    }
}

/* Handles one complete line (CRLF stripped) in a line-based state. */
static void on_line(struct lg_resp *r, char *s, size_t len)
{
    s[len] = '\0';
    switch (r->state) {
    case LG_R_STATUS:
        if (len < 12 || strncmp(s, "HTTP/1.", 7) != 0)
            return fail(r, "bad status line");
        r->status = atoi(s + 9);
        if (s[7] == '0')
            r->conn_close = 1; /* HTTP/1.0 unless it says keep-alive: be safe */
        r->state = LG_R_HEADERS;
        break;
    case LG_R_HEADERS:
        if (len == 0)
            start_body(r);
        else
            header_line(r, s, len);
        break;
    case LG_R_CHUNK_SIZE: {
        char *end;
        unsigned long long sz = strtoull(s, &end, 16);
        if (end == s)
            return fail(r, "bad chunk size");
        if (sz == 0) {
            r->state = LG_R_TRAILERS;
        } else {
            r->left = sz;
            r->state = LG_R_CHUNK_DATA;
        }
        break;
    }
    case LG_R_CHUNK_CRLF:
        if (len != 0)
            return fail(r, "chunk not followed by CRLF");
        r->state = LG_R_CHUNK_SIZE;
        break;
    case LG_R_TRAILERS:
        if (len == 0)
            r->state = LG_R_DONE;
        break;
    default:
        break;
    }
}

size_t lg_resp_feed(struct lg_resp *r, const char *p, size_t n)
{
    size_t used = 0;
    while (used < n && r->state != LG_R_DONE && r->state != LG_R_ERROR) {
        const char *q = p + used;
        size_t avail = n - used;
        switch (r->state) {
        case LG_R_CHUNK_DATA:
        case LG_R_LENGTH: {
            size_t take = avail < r->left ? avail : (size_t)r->left;
            sse_feed(r, q, take);
            r->left -= take;
            used += take;
            if (r->left == 0)
                r->state = r->state == LG_R_LENGTH ? LG_R_DONE : LG_R_CHUNK_CRLF;
            break;
        }
        case LG_R_UNTIL_EOF:
            sse_feed(r, q, avail);
            used += avail;
            break;
        default: {
            const char *nl = memchr(q, '\n', avail);
            size_t take = nl ? (size_t)(nl - q) : avail;
            if (r->llen + take >= LG_LINE_CAP) {
                fail(r, "header or chunk-size line too long");
                break;
            }
            memcpy(r->line + r->llen, q, take);
            r->llen += take;
            used += nl ? take + 1 : take;
            if (nl) {
                size_t len = r->llen;
                if (len > 0 && r->line[len - 1] == '\r')
                    len--;
                r->llen = 0;
                on_line(r, r->line, len);
            }
            break;
        }
        }
    }
    return used;
}

void lg_resp_eof(struct lg_resp *r)
{
    if (r->state == LG_R_UNTIL_EOF)
        r->state = LG_R_DONE;
    else if (r->state != LG_R_DONE && r->state != LG_R_ERROR)
        fail(r, "connection closed before the end of the response");
}
