/*
 * h1_exchange.c - one request and its answer on a connection of the HTTP/1.1
 * transport (h1.h): the request head (the bytes libcurl sent) and body in
 * one send, the answer parsed by libhttp-parser (status, headers,
 * Content-Length, chunked and close-delimited bodies; never by hand) and fed
 * to reply.c's steps, which are libcurl's callbacks' too. Pausing the call
 * pauses the parser and stops reading the socket (backpressure upstream);
 * an answer that ends cleanly returns its connection to the pool, any other
 * end closes it.
 */
#include "h1.h"

#include <errno.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* libcurl's receive buffer was 8 KB too (easy.c: measured against RSS). */
#define RBUF_SIZE 8192

/* PARSED_PAUSED: the caller paused the call; the rest waits in rbuf. */
enum parsed { PARSED_MORE, PARSED_STOP, PARSED_PAUSED };

static size_t put(char *dst, const char *src, size_t n)
{
    memcpy(dst, src, n);
    return n;
}

static size_t put_ulong(char *dst, unsigned long v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

/* ---------------------------------------------------------------- */
/* the answer, through the parser                                   */
/* ---------------------------------------------------------------- */

static void flush_header(struct zjuchat__h1conn *conn)
{
    zjuchat_call *call = conn->call;
    conn->in_value = 0;
    if (conn->hname_len > sizeof conn->hname)
        return; /* a name longer than any we read */
    /* Header values end up in error messages: mask an echoed key first. */
    const char *key = call->client->api_key;
    zjuchat_redact(conn->hval, conn->hval_len, key);
    if (conn->hval_cut)
        zjuchat__redact_tail(conn->hval, conn->hval_len, key);
    if (conn->hname_len == 17 && strncasecmp(conn->hname, "transfer-encoding", 17) == 0) {
        /* The parser decodes chunked and reads anything else to the end;
         * a coding we cannot undo (gzip...) is a reply we cannot read, as
         * libcurl refused it (CURLE_BAD_CONTENT_ENCODING). */
        const char *v = conn->hval, *end = conn->hval + conn->hval_len;
        while (v < end) {
            while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
                v++;
            const char *t = v;
            while (v < end && *v != ',' && *v != ' ' && *v != '\t')
                v++;
            if (v > t && !((size_t)(v - t) == 7 && strncasecmp(t, "chunked", 7) == 0))
                conn->bad = "a Transfer-Encoding it cannot decode";
        }
    }
    zjuchat__reply_header(call, conn->hname, conn->hname_len, conn->hval, conn->hval_len);
}

static int on_message_begin(http_parser *p)
{
    struct zjuchat__h1conn *conn = p->data;
    conn->in_value = 0;
    conn->hname_len = conn->hval_len = 0;
    conn->hval_cut = 0;
    conn->bad = NULL;
    zjuchat__reply_begin(conn->call, 0);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct zjuchat__h1conn *conn = p->data;
    if (conn->in_value) {
        flush_header(conn);
        conn->hname_len = conn->hval_len = 0;
        conn->hval_cut = 0;
    }
    if (conn->hname_len == 0 && len > 0 && (at[0] == ' ' || at[0] == '\t')) {
        /* The parser takes a folded line with no header before it for a
         * name; libcurl refused it, and so do we. */
        conn->bad = "a folded header line with no header before it";
        return -1;
    }
    if (conn->hname_len + len <= sizeof conn->hname)
        memcpy(conn->hname + conn->hname_len, at, len);
    conn->hname_len += len; /* > sizeof hname: too long to be one we read */
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct zjuchat__h1conn *conn = p->data;
    conn->in_value = 1;
    size_t room = sizeof conn->hval - conn->hval_len;
    if (len > room) {
        len = room;
        conn->hval_cut = 1;
    }
    memcpy(conn->hval + conn->hval_len, at, len);
    conn->hval_len += len;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct zjuchat__h1conn *conn = p->data;
    zjuchat_call *call = conn->call;
    if (conn->in_value)
        flush_header(conn);
    if (p->status_code / 100 == 1)
        return 0; /* interim (100 Continue...): the real answer follows */
    if (conn->bad)
        return -1;
    call->status = p->status_code;
    if (zjuchat__reply_headers_end(call))
        return -1;
    if (call->paused) /* by on_accepted */
        http_parser_pause(p, 1);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct zjuchat__h1conn *conn = p->data;
    zjuchat_call *call = conn->call;
    /* The bytes are in rbuf, ours to write: the SSE policy masks the key in
     * place. */
    if (zjuchat__reply_body(call, (char *)at, len))
        return -1;
    if (call->paused)
        http_parser_pause(p, 1);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct zjuchat__h1conn *conn = p->data;
    if (p->status_code / 100 == 1)
        return 0;
    conn->complete = 1;
    conn->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1); /* whatever follows is not this answer's */
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* The whole answer came: the connection goes back to the pool when it may
 * carry another (keep-alive, nothing after the answer), and the call hears. */
static void exchange_done(struct zjuchat__h1conn *conn)
{
    zjuchat_call *call = conn->call;
    /* Bytes after the answer (in rbuf, or read ahead by TLS) are nobody's:
     * such a connection is closed, not pooled. */
    int reuse = conn->keep_alive && conn->rpos == conn->rlen &&
                conn->state == H1_READING && !(conn->ssl && SSL_has_pending(conn->ssl));
    call->h1 = NULL;
    if (conn->out) {
        memset(conn->out, 0, conn->out_len);
        free(conn->out);
        conn->out = NULL;
    }
    if (reuse)
        zjuchat__h1conn_release(conn);
    else
        zjuchat__h1conn_close(conn);
    zjuchat__attempt_ended(call, NULL);
}

static void malformed(struct zjuchat__h1conn *conn, const char *why)
{
    zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_PROTOCOL, ZJUCHAT_DETAIL_NONE,
                         "upstream sent a malformed HTTP response: %s", why);
}

/* Feed data[0..len) (data NULL: the connection ended). User callbacks run in
 * here: the call is only ended once the parser has returned (call.h). */
static enum parsed parse(struct zjuchat__h1conn *conn, char *data, size_t len)
{
    zjuchat_call *call = conn->call;
    http_parser *p = &conn->parser;
    call->in_callback++;
    size_t n = http_parser_execute(p, &settings, data, len);
    call->in_callback--;
    if (call->has_pending) {
        zjuchat__call_finish(call, &call->pending); /* closes conn */
        return PARSED_STOP;
    }
    conn->rpos += n;
    if (conn->rpos >= conn->rlen)
        conn->rpos = conn->rlen = 0;
    enum http_errno e = HTTP_PARSER_ERRNO(p);
    if (e == HPE_PAUSED) {
        if (conn->complete) {
            exchange_done(conn);
            return PARSED_STOP;
        }
        return PARSED_PAUSED;
    }
    if (!data)
        return PARSED_MORE; /* the end came early: the caller says so */
    if (conn->bad) {
        malformed(conn, conn->bad);
        return PARSED_STOP;
    }
    if (e != HPE_OK) {
        malformed(conn, http_errno_description(e));
        return PARSED_STOP;
    }
    if (p->upgrade) {
        malformed(conn, "an upgrade to another protocol");
        return PARSED_STOP;
    }
    return PARSED_MORE;
}

static void closed_early(struct zjuchat__h1conn *conn, int err)
{
    zjuchat_call *call = conn->call;
    /* A kept-alive connection the upstream had already closed: nothing of
     * the answer came, so the request is sent again on a new one. */
    if (zjuchat__h1conn_retry_stale(conn) == 0)
        return;
    const char *why = err ? strerror(err)
                      : !conn->got_bytes
                          ? "Empty reply from server"
                          : "transfer closed with outstanding read data remaining";
    zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NETWORK, ZJUCHAT_NET_RESET, "%s: %s",
                         call->accepted ? "upstream connection closed mid-reply"
                                        : "upstream closed the connection",
                         why);
}

/* The events of this read have all reached on_chunk: the caller that asked
 * (zjuchat__call_on_read_end) sends them on. Outside the parser, but under
 * call.h's rule all the same: an end it causes is finished here. */
static void read_ended(zjuchat_call *call)
{
    if (!call->on_read_end)
        return;
    call->in_callback++;
    call->on_read_end(call, call->userdata);
    call->in_callback--;
    if (call->has_pending)
        zjuchat__call_finish(call, &call->pending); /* closes conn */
}

void zjuchat__h1x_on_readable(struct zjuchat__h1conn *conn)
{
    zjuchat_call *call = conn->call;
    int parsed = 0;
    if (call->paused) {
        event_del(conn->rev); /* no more reads until resumed */
        return;
    }
    if (conn->rpos < conn->rlen) { /* left by a pause */
        parsed = 1;
        enum parsed e = parse(conn, conn->rbuf + conn->rpos, conn->rlen - conn->rpos);
        if (e != PARSED_MORE) {
            if (e == PARSED_PAUSED)
                read_ended(call);
            return;
        }
    }
    for (;;) {
        ssize_t n = zjuchat__h1conn_recv(conn, conn->rbuf, RBUF_SIZE);
        if (n > 0) {
            conn->got_bytes = 1;
            conn->rpos = 0;
            conn->rlen = (size_t)n;
            parsed = 1;
            enum parsed e = parse(conn, conn->rbuf, (size_t)n);
            if (e != PARSED_MORE) {
                if (e == PARSED_PAUSED)
                    read_ended(call);
                return;
            }
            /* Level-triggered: the loop comes back for the rest of the
             * socket; only TLS may hold bytes the loop cannot see (decrypted,
             * or records read ahead). */
            if (!conn->ssl || !SSL_has_pending(conn->ssl)) {
                read_ended(call);
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (parsed)
                read_ended(call);
            return;
        }
        if (n < 0 || !conn->got_bytes) {
            closed_early(conn, n < 0 ? errno : 0);
            return;
        }
        /* The end of the connection: the end of a close-delimited body. */
        if (parse(conn, NULL, 0) != PARSED_MORE)
            return;
        closed_early(conn, 0);
        return;
    }
}

/* ---------------------------------------------------------------- */
/* the request                                                      */
/* ---------------------------------------------------------------- */

void zjuchat__h1x_send(struct zjuchat__h1conn *conn)
{
    zjuchat_call *call = conn->call;
    size_t body_len = conn->ssl ? 0 : call->body_len; /* over TLS: in out */
    ssize_t n;
    if (conn->ssl) {
        zjuchat__tls_clear_errors();
        int w = SSL_write(conn->ssl, conn->out + conn->out_sent,
                          (int)(conn->out_len - conn->out_sent));
        if (w > 0) {
            n = w;
        } else {
            int e = SSL_get_error(conn->ssl, w);
            ERR_clear_error();
            n = -1;
            errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN
                    : e == SSL_ERROR_SYSCALL && errno                     ? errno
                                                                          : EPIPE;
        }
    } else {
        struct iovec iov[2];
        int niov = 0;
        if (conn->out_sent < conn->out_len) {
            iov[niov].iov_base = conn->out + conn->out_sent;
            iov[niov++].iov_len = conn->out_len - conn->out_sent;
        }
        if (conn->body_sent < body_len) {
            iov[niov].iov_base = call->body + conn->body_sent;
            iov[niov++].iov_len = body_len - conn->body_sent;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
        n = sendmsg(conn->fd, &msg, MSG_NOSIGNAL);
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            conn->state = H1_WRITING;
            if (zjuchat__h1conn_want_write(conn))
                zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                     "out of memory");
            return;
        }
        closed_early(conn, errno);
        return;
    }
    size_t head_left = conn->out_len - conn->out_sent;
    if ((size_t)n >= head_left) {
        conn->out_sent = conn->out_len;
        conn->body_sent += (size_t)n - head_left;
    } else {
        conn->out_sent += (size_t)n;
    }
    if (conn->out_sent < conn->out_len || conn->body_sent < body_len) {
        conn->state = H1_WRITING;
        if (zjuchat__h1conn_want_write(conn))
            zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                 "out of memory");
        return;
    }
    if (conn->state == H1_WRITING && conn->wev)
        event_del(conn->wev);
    conn->state = H1_READING;
    memset(conn->out, 0, conn->out_len); /* holds the key */
    free(conn->out);
    conn->out = NULL;
    conn->out_len = conn->out_sent = 0;
}

void zjuchat__h1x_begin(struct zjuchat__h1conn *conn)
{
    zjuchat_call *call = conn->call;
    struct zjuchat__h1pool *pool = conn->pool;
    http_parser_init(&conn->parser, HTTP_RESPONSE);
    conn->parser.data = conn;
    conn->got_bytes = conn->complete = conn->keep_alive = 0;
    conn->bad = NULL;
    conn->rpos = conn->rlen = 0;
    conn->out_sent = conn->body_sent = 0;
    if (!conn->rbuf && !(conn->rbuf = malloc(RBUF_SIZE))) {
        zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                             "out of memory");
        return;
    }
    const char *method = call->body ? "POST" : "GET";
    const char *target = call->url + pool->target_off;
    const char *fixed = call->stream ? pool->fixed_stream : pool->fixed_json;
    size_t fixed_len = call->stream ? pool->fixed_stream_len : pool->fixed_json_len;
    size_t target_len = strlen(target), host_len = strlen(pool->host_header);
    size_t cap = 4 + 1 + target_len + 11 + 6 + host_len + 2 + fixed_len + 16 + 24 + 2 +
                 (conn->ssl ? call->body_len : 0);
    char *out = malloc(cap);
    if (!out) {
        zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                             "out of memory");
        return;
    }
    /* The bytes libcurl sent for the same call (easy.c, client.c). */
    size_t o = put(out, method, strlen(method));
    out[o++] = ' ';
    if (!*target)
        out[o++] = '/';
    o += put(out + o, target, target_len);
    o += put(out + o, " HTTP/1.1\r\nHost: ", 17);
    o += put(out + o, pool->host_header, host_len);
    o += put(out + o, "\r\n", 2);
    o += put(out + o, fixed, fixed_len);
    if (call->body) {
        o += put(out + o, "Content-Length: ", 16);
        o += put_ulong(out + o, (unsigned long)call->body_len);
        o += put(out + o, "\r\n", 2);
    }
    o += put(out + o, "\r\n", 2);
    if (conn->ssl && call->body_len)
        o += put(out + o, call->body, call->body_len);
    conn->out = out;
    conn->out_len = o;
    conn->state = H1_WRITING;
    zjuchat__h1x_send(conn);
}

void zjuchat__h1_pause(zjuchat_call *call)
{
    struct zjuchat__h1conn *conn = call->h1;
    if (conn && conn->rev && (conn->state == H1_READING || conn->state == H1_WRITING))
        event_del(conn->rev);
}

void zjuchat__h1_resume(zjuchat_call *call)
{
    struct zjuchat__h1conn *conn = call->h1;
    if (!conn || !conn->rev || (conn->state != H1_READING && conn->state != H1_WRITING))
        return;
    event_add(conn->rev, NULL);
    if (HTTP_PARSER_ERRNO(&conn->parser) == HPE_PAUSED)
        http_parser_pause(&conn->parser, 0);
    /* Bytes read before the pause (or held by TLS) are not the socket's to
     * announce: the read handler takes them first. */
    if (conn->rpos < conn->rlen || (conn->ssl && SSL_has_pending(conn->ssl)))
        event_active(conn->rev, EV_READ, 0);
}
