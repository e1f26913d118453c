/*
 * Delivery of a planned answer: whole replies, and SSE streams written event by
 * event from timers (delay between events, 1 ms between split pieces), never
 * blocking, with backpressure (stop above a high-water mark, resume when the
 * connection's output drained) and the mid-stream faults.
 */
#include "mock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIGH_WATER (256u << 10)
#define ENDLESS_PIECE (64u << 10)
#define ENDLESS_TOTAL (8u << 20)

static void pump(struct mock_req *m);

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mock_req *m = arg;
    switch (m->timer_why) {
    case MOCK_T_THINK:
        mock_req_answer(m);
        break;
    case MOCK_T_CLOSE:
        mock_conn_close(m, m->closing);
        break;
    default: /* the delay or the split pause is over */
        pump(m);
    }
}

void mock_req_arm(struct mock_req *m, int why, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (!m->timer)
        m->timer = evtimer_new(mock.base, timer_cb, m);
    if (!m->timer)
        return;
    m->timer_why = why;
    evtimer_add(m->timer, &tv);
}

static struct evbuffer *conn_output(struct mock_req *m)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(m->req);
    return evcon ? bufferevent_get_output(evhttp_connection_get_bufferevent(evcon))
                 : NULL;
}

/* Called by evhttp when the connection's output buffer is empty again. */
static void drained(struct evhttp_connection *evcon, void *arg)
{
    struct mock_req *m = arg;
    if (m->closing) {
        mock_req_arm(m, MOCK_T_CLOSE, 0); /* never free evcon from its own callback */
    } else if (m->waiting_drain) {
        m->waiting_drain = 0;
        pump(m);
    }
}

/* A content delta whose text needs JSON escaping (quotes, newlines): jansson
 * writes the string. The default text needs none and skips this cost, which
 * the benchmarks would see. */
static void content_escaped(struct evbuffer *b, const char *text, const char *tail)
{
    json_t *s = json_string(text);
    char *quoted = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
    evbuffer_add_printf(b,
                        "[{\"index\":0,\"delta\":{\"content\":%s},"
                        "\"finish_reason\":null}]%s",
                        quoted ? quoted : "\"\"", tail);
    free(quoted);
    json_decref(s);
}

/*
 * Appends the next SSE item to m->pending; returns 0 at the end of the stream.
 * Items: the role chunk, the reasoning deltas, the content deltas, the finish
 * chunk (with the usage, unless include_usage), with include_usage OpenAI's
 * extra chunk of "choices":[] and the usage (every other chunk then carries
 * "usage":null), and [DONE].
 */
static int next_stream_item(struct mock_req *m)
{
    const char *nl = m->d.faults & MOCK_FAULT_CRLF ? "\r\n" : "\n";
    int r = m->d.reasoning, n = m->d.events, idx = m->item;
    int has_finish = !(m->d.faults & MOCK_FAULT_TRUNCATE);
    int has_usage = has_finish && m->include_usage;
    int has_done = has_finish && !(m->d.faults & MOCK_FAULT_NO_DONE);
    int last = r + n + has_finish + has_usage + has_done; /* items are 0..last */
    const char *tail = m->include_usage ? ",\"usage\":null}" : "}";
    struct evbuffer *b = m->pending;

    if (idx > last)
        return 0;
    m->item++;
    if (idx > 0 && (m->d.faults & MOCK_FAULT_GARBAGE))
        evbuffer_add_printf(b, ": mock comment %d%sdata: not json%s%sevent: ping%s%s",
                            idx, nl, nl, nl, nl, nl);
    if (idx == r + n + 1 + has_finish + has_usage) {
        evbuffer_add_printf(b, "data: [DONE]%s%s", nl, nl);
        return 1;
    }
    evbuffer_add_printf(
        b,
        "data: {\"id\":\"chatcmpl-%llu\",\"object\":\"chat.completion.chunk\","
        "\"created\":%lld,\"model\":%s,\"choices\":",
        m->id, m->created, m->model_json ? m->model_json : "\"\"");
    if (idx == r + n + 2) /* the usage chunk */
        evbuffer_add_printf(b,
                            "[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,"
                            "\"total_tokens\":%d}}",
                            m->prompt_tokens, r + n, m->prompt_tokens + r + n);
    else if (idx == 0)
        evbuffer_add_printf(
            b,
            "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
            "\"finish_reason\":null}]%s",
            tail);
    else if (idx <= r)
        evbuffer_add_printf(b,
                            "[{\"index\":0,\"delta\":{\"reasoning_content\":\"%s\"},"
                            "\"finish_reason\":null}]%s",
                            mock_reasoning_delta(idx - 1), tail);
    else if (idx <= r + n && m->d.text != MOCK_TEXT_MOCK)
        content_escaped(b, mock_content_delta(m->d.text, idx - 1 - r), tail);
    else if (idx <= r + n)
        evbuffer_add_printf(b,
                            "[{\"index\":0,\"delta\":{\"content\":\"%s\"},"
                            "\"finish_reason\":null}]%s",
                            mock_content_delta(MOCK_TEXT_MOCK, idx - 1 - r), tail);
    else if (m->include_usage)
        evbuffer_add_printf(
            b, "[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]%s", tail);
    else
        evbuffer_add_printf(
            b,
            "[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{"
            "\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}}",
            m->prompt_tokens, r + n, m->prompt_tokens + r + n);
    evbuffer_add_printf(b, "%s%s", nl, nl);
    return 1;
}

/* endless_line: one `data: xxx...` line that never ends, 64 KiB per write. */
static int next_endless_item(struct mock_req *m)
{
    char piece[4096];
    size_t want = ENDLESS_PIECE;
    if (m->bytes_sent >= ENDLESS_TOTAL)
        return 0;
    if (m->bytes_sent == 0) {
        evbuffer_add(m->pending, "data: ", 6);
        want -= 6;
    }
    memset(piece, 'x', sizeof(piece));
    for (size_t done = 0; done < want; done += sizeof(piece))
        evbuffer_add(m->pending, piece,
                     sizeof(piece) < want - done ? sizeof(piece) : want - done);
    m->bytes_sent += ENDLESS_PIECE;
    return 1;
}

/* Non-stream answer cut by a *_mid fault: the first half of the body. */
static int next_partial_item(struct mock_req *m)
{
    if (m->item++ > 0)
        return 0;
    evbuffer_remove_buffer(m->body, m->pending, evbuffer_get_length(m->body) / 2);
    return 1;
}

static void send_piece(struct mock_req *m, struct evbuffer *piece)
{
    evhttp_send_reply_chunk_with_cb(m->req, piece, drained, m);
}

/* Ends a stream normally; m is freed by the completion callback later. */
static void finish(struct mock_req *m)
{
    if (m->kind == MOCK_KIND_ENDLESS) {
        m->closing = MOCK_CLOSE_FIN;
        if (evbuffer_get_length(conn_output(m)) == 0)
            mock_req_arm(m, MOCK_T_CLOSE, 0);
        return;
    }
    if (m->counted_stream) {
        m->counted_stream = 0;
        mock.stats.streams_active--;
        mock.stats.streams_completed++;
    }
    m->replied = 1;
    evhttp_send_reply_end(m->req); /* may complete at once: m is gone after this */
}

/* The *_mid fault strikes: hang, or close once what was written is flushed. */
static void strike(struct mock_req *m)
{
    if (m->d.faults & MOCK_FAULT_HANG_MID)
        return; /* silence; the close callback frees m when the client leaves */
    m->closing = m->d.faults & MOCK_FAULT_RST_MID ? MOCK_CLOSE_RST : MOCK_CLOSE_FIN;
    if (evbuffer_get_length(conn_output(m)) == 0)
        mock_req_arm(m, MOCK_T_CLOSE, 0);
}

static void pump(struct mock_req *m)
{
    int after = m->kind == MOCK_KIND_PARTIAL ? 1 : m->d.after;
    for (;;) {
        if (evbuffer_get_length(m->pending) == 0) {
            int produced;
            if ((m->d.faults & MOCK_FAULT_MID) && m->kind != MOCK_KIND_ENDLESS &&
                m->events_sent >= after) {
                strike(m);
                return;
            }
            /* first: the head has gone (evhttp sends it when the loop
             * runs), the first event waits, as a model's first token does */
            if (m->d.first_ms > 0 && m->events_sent == 0 && m->kind == MOCK_KIND_STREAM &&
                m->timer_why != MOCK_T_FIRST) {
                mock_req_arm(m, MOCK_T_FIRST, m->d.first_ms);
                return;
            }
            if (m->d.delay_ms > 0 && m->events_sent > 0 && m->timer_why != MOCK_T_DELAY) {
                mock_req_arm(m, MOCK_T_DELAY, m->d.delay_ms);
                return;
            }
            m->timer_why = MOCK_T_THINK; /* the delay, if any, is used up */
            if (m->kind == MOCK_KIND_ENDLESS)
                produced = next_endless_item(m);
            else if (m->kind == MOCK_KIND_PARTIAL)
                produced = next_partial_item(m);
            else
                produced = next_stream_item(m);
            if (!produced) {
                finish(m);
                return;
            }
            m->events_sent++;
        }
        if (m->d.split > 0 && m->kind == MOCK_KIND_STREAM) {
            struct evbuffer *piece = evbuffer_new();
            if (!piece)
                return;
            evbuffer_remove_buffer(m->pending, piece, (size_t)m->d.split);
            send_piece(m, piece);
            evbuffer_free(piece);
            mock_req_arm(m, MOCK_T_SPLIT, 1);
            return;
        }
        send_piece(m, m->pending);
        if (evbuffer_get_length(conn_output(m)) > HIGH_WATER) {
            m->waiting_drain = 1;
            return;
        }
    }
}

void mock_req_answer(struct mock_req *m)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(m->req);
    mock_req_watch(m, 0);
    m->started = 1;
    if (m->kind == MOCK_KIND_REPLY) {
        char ra[16];
        evhttp_add_header(h, "Content-Type", m->ctype ? m->ctype : "application/json");
        if (m->status >= 400 && m->d.retry_after >= 0) {
            snprintf(ra, sizeof(ra), "%d", m->d.retry_after);
            evhttp_add_header(h, "Retry-After", ra);
        }
        m->replied = 1;
        evhttp_send_reply(m->req, m->status, mock_reason(m->status), m->body);
        return; /* m is freed on completion */
    }
    m->pending = evbuffer_new();
    if (!m->pending) {
        m->replied = 1;
        evhttp_send_reply(m->req, 500, "Internal Server Error", NULL);
        return;
    }
    if (m->kind == MOCK_KIND_PARTIAL) {
        char cl[32];
        snprintf(cl, sizeof(cl), "%zu", evbuffer_get_length(m->body));
        evhttp_add_header(h, "Content-Type", "application/json");
        evhttp_add_header(h, "Content-Length", cl);
    } else {
        evhttp_add_header(h, "Content-Type", "text/event-stream");
        evhttp_add_header(h, "Cache-Control", "no-cache");
        m->counted_stream = 1;
        mock.stats.streams_active++;
    }
    evhttp_send_reply_start(m->req, 200, "OK");
    pump(m);
}
