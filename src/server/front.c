/*
 * front.c - the HTTP/1.x front (see front.h for what it promises).
 *
 * A connection is a socket bufferevent (BEV_OPT_CLOSE_ON_FREE: the
 * descriptor is closed only after the bufferevent deleted its events, so a
 * descriptor number reused by the next accept never meets stale epoll state,
 * the fault behind docs/FAULTS.md's first "Deployment" row) and an
 * http_parser. Its phases:
 *   READING   bytes go to the parser; the request deadline runs;
 *   HANDLING  the request is with the handler; the socket is still read so a
 *             client that leaves is noticed (pipelined bytes wait, bounded);
 *   FLUSHING  the reply is complete and being written;
 *   LINGERING our side is shut down; input is discarded until the client
 *             closes (nginx's lingering close), then the connection is freed.
 * The parser is paused at the end of each message, so one request is handled
 * at a time; it resumes on the same connection after the reply is written.
 */
#include "front.h"
#include "accesslog.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define ACCEPT_RETRY_MS 200
#define PIPELINE_CAP (64 * 1024) /* input held while a request is handled */
#define LINGER_TIMEOUT_S 5       /* nginx's lingering_timeout */
#define LINGER_TOTAL_S 30        /* nginx's lingering_time */
#define READ_CHUNK 16384         /* bytes asked of one recv() */
#define PEND_KEEP 16384          /* room kept between replies for their ends */

enum phase { READING, HANDLING, FLUSHING, LINGERING };
enum rstate { R_PARSING, R_HANDLER, R_STREAMING, R_ENDED };

/* A header's name and value: offsets of NUL-terminated texts in the
 * request's text arena (NO_TEXT: no value yet). */
typedef struct header {
    size_t name, value;
} header;

#define NO_TEXT ((size_t)-1)
#define INLINE_HEADERS 16
#define INLINE_TEXT 1024

typedef struct srv_conn srv_conn;

struct srv_request {
    srv_conn *conn;
    enum rstate state;
    char method[16];
    char *uri;
    size_t uri_len;
    char *path;   /* the URI up to '?' or '#', set with the headers */
    header *hdrs; /* hdrs_inline until there are more */
    size_t nhdr, caphdr;
    int in_value; /* the parser's last header callback was a value */
    /* the headers' texts, one after the other: a few allocations per
     * request instead of two reallocs per header */
    char *text; /* text_inline until it outgrows it */
    size_t text_len, text_cap;
    header hdrs_inline[INLINE_HEADERS];
    char text_inline[INLINE_TEXT];
    struct evbuffer *body;
    int minor;      /* HTTP/1.minor */
    int head;       /* HEAD: no body in the reply */
    int keep_alive; /* http_should_keep_alive, and no error */
    int chunked;    /* streamed reply uses chunked encoding */
    /* the reply's headers as added, "Name: value\r\n" each: in hdr_inline
     * unless they outgrow it */
    char *out_hdr;
    size_t out_len, out_cap;
    char hdr_inline[512];
    /* A stream's head until its first piece (srv_req_start): iovecs into
     * held_line, the Date line (fixed width: rewritten in place at worst
     * with a later second), out_hdr and constants. Nothing is copied or
     * allocated: a malloc'd copy freed after the first write cost S4
     * 0.6 KB per held stream (15.2 -> 15.8 KB, heap holes), one kept in
     * the connection 4 KB (19.4 KB). */
    struct iovec held[6];
    int nheld;
    char held_line[64];
    srv_gone_cb on_gone;
    srv_drained_cb on_drained;
    void *watch_arg;
    size_t high_water;
    int above; /* output went above high_water; on_drained owed */
};

struct srv_conn {
    srv_front *f;
    srv_conn *prev, *next;
    struct bufferevent *bev; /* writes; its input buffer holds what rd read */
    struct event *rd;        /* reads: see on_readable */
    evutil_socket_t fd;
    http_parser parser;
    enum phase phase;
    srv_request *req;
    size_t head_bytes, body_bytes;
    int error_status; /* set by a parser callback that refused the request */
    const char *error_msg;
    int message_done;
    struct event *deadline; /* REQUEST_TIMEOUT while READING */
    struct event *resume;   /* continues with buffered input after a reply */
    time_t linger_end;
    /* the end of a reply (a whole non-stream answer, a stream's last chunk),
     * sent by on_resume once the handler has returned, so that its access
     * line is written before the client can see the answer; kept for the
     * connection's next replies */
    char *pend;
    size_t pend_len, pend_cap;
    struct sockaddr_storage peer;
    char peer_text[64];
    int nodelay; /* TCP_NODELAY set: the connection has streamed */
    /* Bytes went to the bufferevent's output, which may still hold some:
     * only then is its length looked at. Held streams write straight to
     * the socket, and reading a cold bufferevent and evbuffer per relayed
     * event cost cache misses at thousands of streams (perf). */
    int queued;
};

struct srv_front {
    struct event_base *base;
    srv_front_limits lim;
    srv_request_cb on_request;
    srv_error_cb on_error;
    void *arg;
    struct evconnlistener *listener;
    struct event *accept_retry;
    srv_conn *conns;
    int draining;
    long open; /* requests dispatched, reply not yet written */
    void (*on_done)(void *arg);
};

static http_parser_settings settings;

/* ------------------------------------------------------------ requests */

static srv_request *request_new(srv_conn *c)
{
    srv_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->conn = c;
    r->body = evbuffer_new();
    if (!r->body) {
        free(r);
        return NULL;
    }
    r->out_hdr = r->hdr_inline;
    r->out_cap = sizeof r->hdr_inline;
    r->hdrs = r->hdrs_inline;
    r->caphdr = INLINE_HEADERS;
    r->text = r->text_inline;
    r->text_cap = INLINE_TEXT;
    memcpy(r->method, "GET", 4);
    return r;
}

static void request_free(srv_request *r)
{
    if (!r)
        return;
    if (r->hdrs != r->hdrs_inline)
        free(r->hdrs);
    if (r->text != r->text_inline)
        free(r->text);
    free(r->uri);
    free(r->path);
    evbuffer_free(r->body);
    if (r->out_hdr != r->hdr_inline)
        free(r->out_hdr);
    free(r);
}

static int append(char **s, size_t *len, const char *at, size_t n)
{
    char *grown = realloc(*s, *len + n + 1);
    if (!grown)
        return -1;
    memcpy(grown + *len, at, n);
    *len += n;
    grown[*len] = '\0';
    *s = grown;
    return 0;
}

const char *srv_req_method(const srv_request *r)
{
    return r->method;
}

int srv_req_is(const srv_request *r, const char *method)
{
    return strcmp(r->method, method) == 0;
}

const char *srv_req_uri(const srv_request *r)
{
    return r->uri ? r->uri : "";
}

const char *srv_req_path(const srv_request *r)
{
    return r->path ? r->path : "";
}

static const char *header_value(const srv_request *r, size_t i)
{
    return r->hdrs[i].value == NO_TEXT ? "" : r->text + r->hdrs[i].value;
}

const char *srv_req_header(const srv_request *r, const char *name)
{
    for (size_t i = 0; i < r->nhdr; i++)
        if (strcasecmp(r->text + r->hdrs[i].name, name) == 0)
            return header_value(r, i);
    return NULL;
}

char *srv_req_header_joined(const srv_request *r, const char *name)
{
    char *joined = NULL;
    size_t len = 0;
    for (size_t i = 0; i < r->nhdr; i++) {
        if (strcasecmp(r->text + r->hdrs[i].name, name) != 0)
            continue;
        const char *v = header_value(r, i);
        if ((len && append(&joined, &len, ",", 1) < 0) ||
            append(&joined, &len, v, strlen(v)) < 0) {
            free(joined); /* a partial list could name the wrong client */
            return NULL;
        }
    }
    return joined;
}

const char *srv_req_body(const srv_request *r, size_t *len)
{
    *len = evbuffer_get_length(r->body);
    const char *p = (const char *)evbuffer_pullup(r->body, -1);
    return p ? p : "";
}

const struct sockaddr *srv_req_peer(const srv_request *r)
{
    return (const struct sockaddr *)&r->conn->peer;
}

const char *srv_req_peer_text(const srv_request *r)
{
    return r->conn->peer_text;
}

/* ------------------------------------------------------------ parser callbacks */

static int count_head(srv_conn *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > c->f->lim.max_header_bytes) {
        c->error_status = 431;
        c->error_msg = "request headers too large";
        return -1;
    }
    return 0;
}

static int on_message_begin(http_parser *p)
{
    srv_conn *c = p->data;
    if (!c->req)
        c->req = request_new(c);
    return c->req ? 0 : -1;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    srv_conn *c = p->data;
    if (count_head(c, n) < 0)
        return -1;
    return append(&c->req->uri, &c->req->uri_len, at, n);
}

/* Appends at[0..n) to the arena as a new text (its offset in *off) or, when
 * off is NULL, to the last text (the one the parser is still delivering). */
static int text_add(srv_request *r, const char *at, size_t n, size_t *off)
{
    if (!off && r->text_len > 0)
        r->text_len--; /* continue the last text: over its NUL */
    size_t need = r->text_len + n + 1;
    if (need > r->text_cap) {
        size_t cap = need * 2;
        char *grown = r->text == r->text_inline ? malloc(cap) : realloc(r->text, cap);
        if (!grown)
            return -1;
        if (r->text == r->text_inline)
            memcpy(grown, r->text_inline, r->text_len);
        r->text = grown;
        r->text_cap = cap;
    }
    if (off)
        *off = r->text_len;
    memcpy(r->text + r->text_len, at, n);
    r->text_len += n;
    r->text[r->text_len++] = '\0';
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    srv_conn *c = p->data;
    srv_request *r = c->req;
    if (count_head(c, n) < 0)
        return -1;
    if (r->nhdr > 0 && !r->in_value)
        return text_add(r, at, n, NULL); /* the name goes on */
    if (r->nhdr == r->caphdr) {
        size_t cap = r->caphdr * 2;
        header *h = r->hdrs == r->hdrs_inline ? malloc(cap * sizeof *h)
                                              : realloc(r->hdrs, cap * sizeof *h);
        if (!h)
            return -1;
        if (r->hdrs == r->hdrs_inline)
            memcpy(h, r->hdrs_inline, sizeof r->hdrs_inline);
        r->hdrs = h;
        r->caphdr = cap;
    }
    header *h = &r->hdrs[r->nhdr];
    h->value = NO_TEXT;
    if (text_add(r, at, n, &h->name) < 0)
        return -1;
    r->nhdr++;
    r->in_value = 0;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    srv_conn *c = p->data;
    srv_request *r = c->req;
    if (count_head(c, n) < 0)
        return -1;
    if (r->nhdr == 0)
        return -1;
    header *h = &r->hdrs[r->nhdr - 1];
    int more = r->in_value; /* the value goes on */
    r->in_value = 1;
    return text_add(r, at, n, more ? NULL : &h->value);
}

static int on_headers_complete(http_parser *p)
{
    srv_conn *c = p->data;
    srv_request *r = c->req;
    const char *m = http_method_str(p->method);
    size_t ml = strnlen(m, sizeof r->method - 1);
    memcpy(r->method, m, ml);
    r->method[ml] = '\0';
    const char *u = srv_req_uri(r);
    r->path = strndup(u, strcspn(u, "?#"));
    r->minor = p->http_major == 1 ? p->http_minor : 1;
    r->head = p->method == HTTP_HEAD;
    r->keep_alive = http_should_keep_alive(p);
    if (p->http_major != 1) {
        c->error_status = 505;
        c->error_msg = "HTTP version not supported";
        return -1;
    }
    /* Decided before any body byte is read: the client that asked with
     * Expect: 100-continue sends nothing more, the others are discarded
     * while the connection lingers. */
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->f->lim.max_body_bytes) {
        c->error_status = 413;
        c->error_msg = "request body too large";
        return -1;
    }
    const char *expect = srv_req_header(r, "Expect");
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0) {
            c->error_status = 417;
            c->error_msg = "unsupported Expect header";
            return -1;
        }
        if (r->minor >= 1) {
            bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            c->queued = 1;
        }
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    srv_conn *c = p->data;
    c->body_bytes += n;
    if (c->body_bytes > c->f->lim.max_body_bytes) { /* chunked, or lying */
        c->error_status = 413;
        c->error_msg = "request body too large";
        return -1;
    }
    return evbuffer_add(c->req->body, at, n);
}

static int on_message_complete(http_parser *p)
{
    srv_conn *c = p->data;
    c->message_done = 1;
    http_parser_pause(p, 1);
    return 0;
}

/* ------------------------------------------------------------ connections */

static void conn_free(srv_conn *c);
static void conn_process(srv_conn *c);
static void start_linger(srv_conn *c);

static void arm_deadline(srv_conn *c)
{
    struct timeval tv = {c->f->lim.request_timeout_s, 0};
    if (c->f->lim.request_timeout_s > 0)
        event_add(c->deadline, &tv);
}

/* Ready for the next request on this connection. */
static void reset_for_request(srv_conn *c)
{
    c->phase = READING;
    c->head_bytes = c->body_bytes = 0;
    c->message_done = 0;
    c->error_status = 0;
    c->error_msg = NULL;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    event_add(c->rd, NULL); /* already there between requests: no epoll_ctl */
    arm_deadline(c);
}

static void dispatch(srv_conn *c)
{
    srv_request *r = c->req;
    c->phase = HANDLING;
    event_del(c->deadline);
    r->state = R_HANDLER;
    if (c->f->draining)
        r->keep_alive = 0;
    c->f->open++;
    c->f->on_request(r, c->f->arg);
}

/* A request the front refuses itself: answered through the error hook,
 * then the connection ends (lingering). */
static void refuse(srv_conn *c, int status, const char *msg)
{
    if (!c->req)
        c->req = request_new(c);
    if (!c->req) {
        conn_free(c);
        return;
    }
    c->phase = HANDLING;
    event_del(c->deadline);
    c->req->state = R_HANDLER;
    c->req->keep_alive = 0;
    c->f->open++;
    c->f->on_error(c->req, status, msg, c->f->arg);
}

static int parse_status(srv_conn *c)
{
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->error_status)
        return c->error_status;
    if (e == HPE_HEADER_OVERFLOW)
        return 431;
    if (e == HPE_INVALID_VERSION)
        return 505;
    return 400;
}

/* Feed what was read to the parser until a request is complete. */
static void conn_process(srv_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->phase == READING && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t n = http_parser_execute(&c->parser, &settings, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (c->message_done) {
            dispatch(c);
            return;
        }
        if (e != HPE_OK) {
            int st = parse_status(c);
            const char *msg = c->error_msg ? c->error_msg : http_errno_description(e);
            if (st == 400 && !c->req) { /* not even a request line */
                conn_free(c);
                return;
            }
            refuse(c, st, msg);
            return;
        }
    }
}

static void request_done(srv_front *f)
{
    f->open--;
    if (f->on_done)
        f->on_done(f->arg);
}

/* After a reply: the next request, or the end of the connection. */
static void finish_request(srv_conn *c)
{
    srv_request *r = c->req;
    int keep = r && r->keep_alive && !c->f->draining;
    c->req = NULL;
    request_free(r);
    if (r)
        request_done(c->f);
    if (!keep) {
        start_linger(c);
        return;
    }
    reset_for_request(c);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        event_active(c->resume, EV_TIMEOUT, 0); /* not from inside the handler */
}

static void flush_pending(srv_conn *c);

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    srv_conn *c = arg;
    if (c->phase == FLUSHING) {
        flush_pending(c);
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
            finish_request(c); /* all sent */
            return;
        }
        /* the rest goes with the bufferevent; on_write ends the request */
        struct timeval t = {
            c->f->lim.request_timeout_s > 0 ? c->f->lim.request_timeout_s : 60, 0};
        bufferevent_set_timeouts(c->bev, NULL, &t);
        bufferevent_enable(c->bev, EV_WRITE);
    } else if (c->phase == READING) {
        conn_process(c);
    }
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    srv_conn *c = arg;
    srv_log("connection %s sent no complete request within REQUEST_TIMEOUT; closing it",
            c->peer_text);
    conn_free(c);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    srv_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    switch (c->phase) {
    case READING:
        conn_process(c);
        break;
    case HANDLING:
    case FLUSHING:
        /* Pipelined requests wait for the reply before them; a client that
         * floods us stops being read (its leaving is then noticed when a
         * write fails). */
        if (evbuffer_get_length(in) > PIPELINE_CAP)
            event_del(c->rd);
        break;
    case LINGERING:
        evbuffer_drain(in, evbuffer_get_length(in));
        if (time(NULL) >= c->linger_end)
            conn_free(c);
        break;
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    srv_conn *c = arg;
    srv_request *r = c->req;
    if (c->phase == FLUSHING) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            finish_request(c);
        return;
    }
    size_t left = evbuffer_get_length(bufferevent_get_output(bev));
    if (left == 0)
        c->queued = 0;
    if (c->phase == HANDLING && r && r->above && left <= r->high_water / 2) {
        r->above = 0;
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        if (r->on_drained)
            r->on_drained(r, r->watch_arg);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    srv_conn *c = arg;
    if (c->phase == FLUSHING && (what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
        /* The client finished sending; it may still read the reply. */
        if (c->req)
            c->req->keep_alive = 0;
        return;
    }
    conn_free(c);
}

/* The socket is readable (or, lingering, silent too long). Read with one
 * recv() into the bufferevent's input buffer: the bufferevent's own read
 * (evbuffer_read) asks the kernel with ioctl(FIONREAD) first, one more
 * system call per request. EOF and errors reach on_event as they did from
 * the bufferevent, which never reads itself (its EV_READ stays disabled). */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    srv_conn *c = arg;
    if (what & EV_TIMEOUT) {
        on_event(c->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, c);
        return;
    }
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer_iovec v;
    ssize_t n = -1;
    if (evbuffer_reserve_space(in, READ_CHUNK, &v, 1) == 1) {
        do
            n = recv(fd, v.iov_base, v.iov_len, 0);
        while (n < 0 && errno == EINTR);
        v.iov_len = n > 0 ? (size_t)n : 0;
        evbuffer_commit_space(in, &v, 1);
        if (n > 0) {
            on_read(c->bev, c); /* may free c */
            return;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
    }
    event_del(c->rd); /* as the bufferevent did: no more reading after EOF */
    on_event(c->bev, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
}

static void start_linger(srv_conn *c)
{
    c->phase = LINGERING;
    event_del(c->deadline);
    shutdown(c->fd, SHUT_WR);
    c->linger_end = time(NULL) + LINGER_TOTAL_S;
    struct timeval t = {LINGER_TIMEOUT_S, 0};
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    bufferevent_disable(c->bev, EV_WRITE);
    event_add(c->rd, &t); /* silence for this long ends it (on_readable) */
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void conn_free(srv_conn *c)
{
    srv_front *f = c->f;
    srv_request *r = c->req;
    c->req = NULL;
    if (r && (r->state == R_HANDLER || r->state == R_STREAMING) && r->on_gone)
        r->on_gone(r, r->watch_arg);
    int was_open = r && r->state != R_PARSING;
    request_free(r);
    if (c->prev)
        c->prev->next = c->next;
    else
        f->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->deadline);
    event_free(c->resume);
    event_free(c->rd);        /* before the socket closes */
    bufferevent_free(c->bev); /* deletes its events, then closes the socket */
    free(c->pend);
    free(c);
    if (was_open)
        request_done(f);
}

static void peer_to_text(srv_conn *c)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (c->peer.ss_family == AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&c->peer;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
        port = ntohs(s->sin_port);
        snprintf(c->peer_text, sizeof c->peer_text, "%s:%u", ip, port);
    } else if (c->peer.ss_family == AF_INET6) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&c->peer;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
        port = ntohs(s->sin6_port);
        snprintf(c->peer_text, sizeof c->peer_text, "[%s]:%u", ip, port);
    } else {
        snprintf(c->peer_text, sizeof c->peer_text, "-");
    }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    srv_front *f = arg;
    srv_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    c->f = f;
    c->fd = fd;
    if (salen > 0 && (size_t)salen <= sizeof c->peer)
        memcpy(&c->peer, sa, (size_t)salen);
    peer_to_text(c);
    c->bev = bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->deadline = evtimer_new(f->base, on_deadline, c);
    c->resume = event_new(f->base, -1, 0, on_resume, c);
    c->rd = event_new(f->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    if (!c->bev || !c->deadline || !c->resume || !c->rd) {
        if (c->rd)
            event_free(c->rd);
        if (c->bev)
            bufferevent_free(c->bev);
        else
            close(fd);
        if (c->deadline)
            event_free(c->deadline);
        if (c->resume)
            event_free(c->resume);
        free(c);
        return;
    }
    c->next = f->conns;
    if (f->conns)
        f->conns->prev = c;
    f->conns = c;
    bufferevent_setcb(c->bev, NULL, on_write, on_event, c); /* reads: on_readable */
    /* the bufferevent keeps its input's end frozen for its own reads */
    evbuffer_unfreeze(bufferevent_get_input(c->bev), 0);
    reset_for_request(c);
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    srv_front *f = arg;
    if (f->listener)
        evconnlistener_enable(f->listener);
}

/* Out of descriptors, accept() fails at once on every loop turn: pause
 * accepting for a moment instead of spinning (docs/STACK.md pitfall 6). */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    srv_front *f = arg;
    srv_log("accept failed: %s; pausing accepts for %dms",
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()), ACCEPT_RETRY_MS);
    evconnlistener_disable(l);
    struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
    event_add(f->accept_retry, &tv);
}

srv_front *srv_front_new(struct event_base *base, const srv_front_limits *lim,
                         srv_request_cb on_request, srv_error_cb on_error, void *arg)
{
    if (!settings.on_message_complete) {
        http_parser_settings_init(&settings);
        settings.on_message_begin = on_message_begin;
        settings.on_url = on_url;
        settings.on_header_field = on_header_field;
        settings.on_header_value = on_header_value;
        settings.on_headers_complete = on_headers_complete;
        settings.on_body = on_body;
        settings.on_message_complete = on_message_complete;
    }
    srv_front *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->base = base;
    f->lim = *lim;
    f->on_request = on_request;
    f->on_error = on_error;
    f->arg = arg;
    f->accept_retry = evtimer_new(base, on_accept_retry, f);
    if (!f->accept_retry) {
        free(f);
        return NULL;
    }
    return f;
}

int srv_front_listen(srv_front *f, int listen_fd)
{
    evutil_make_socket_nonblocking(listen_fd);
    f->listener =
        evconnlistener_new(f->base, on_accept, f,
                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, listen_fd);
    if (!f->listener)
        return -1;
    evconnlistener_set_error_cb(f->listener, on_accept_error);
    return 0;
}

void srv_front_drain(srv_front *f)
{
    f->draining = 1;
    if (f->listener) {
        evconnlistener_free(f->listener); /* closes the socket: new connections refused */
        f->listener = NULL;
    }
    srv_conn *c = f->conns;
    while (c) {
        srv_conn *next = c->next;
        if (c->phase == READING && c->head_bytes == 0 &&
            evbuffer_get_length(bufferevent_get_input(c->bev)) == 0)
            conn_free(c); /* idle between requests: nothing is lost */
        c = next;
    }
}

void srv_front_free(srv_front *f)
{
    if (!f)
        return;
    while (f->conns)
        conn_free(f->conns);
    if (f->listener)
        evconnlistener_free(f->listener);
    event_free(f->accept_retry);
    free(f);
}

long srv_front_open_requests(const srv_front *f)
{
    return f ? f->open : 0;
}

void srv_front_on_request_done(srv_front *f, void (*cb)(void *arg))
{
    f->on_done = cb;
}

/* ------------------------------------------------------------ replies */

static const char *reason(int status)
{
    const char *s = http_status_str((enum http_status)status);
    return s && *s && strcmp(s, "<unknown>") != 0 ? s : "Unknown";
}

/* "Date: ..." for the current second, formatted once per second. */
static const char *date_line(void)
{
    static time_t last;
    static char line[64];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(line, sizeof line, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        last = now;
    }
    return line;
}

void srv_req_add_header(srv_request *r, const char *name, const char *value)
{
    /* Header text comes from our own code; refuse line breaks anyway so a
     * value taken from a request can never split the reply. */
    if (strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
        return;
    size_t nl = strlen(name), vl = strlen(value), need = r->out_len + nl + vl + 4;
    if (need > r->out_cap) {
        size_t cap = need * 2;
        char *grown = malloc(cap);
        if (!grown)
            return;
        memcpy(grown, r->out_hdr, r->out_len);
        if (r->out_hdr != r->hdr_inline)
            free(r->out_hdr);
        r->out_hdr = grown;
        r->out_cap = cap;
    }
    char *o = r->out_hdr + r->out_len;
    memcpy(o, name, nl);
    memcpy(o + nl, ": ", 2);
    memcpy(o + nl + 2, value, vl);
    memcpy(o + nl + 2 + vl, "\r\n", 2);
    r->out_len = need;
}

/* Decimal digits of n at out, no NUL; the count. (Not printf: once or
 * twice per reply on the hot path.) */
static size_t put_decimal(char *out, size_t n)
{
    char digits[24];
    size_t k = 0, len = 0;
    do {
        digits[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    while (k)
        out[len++] = digits[--k];
    return len;
}

/* The reply's head as iovecs into `line` (the status line, at least 64
 * bytes) and constant or request-owned text: status line, Date, the added
 * headers, `framing`, Connection, the blank line. Returns the count (6). */
static int head_iov(srv_request *r, int status, const char *framing, size_t framing_len,
                    char *line, struct iovec *iov)
{
    if (r->conn->f->draining)
        r->keep_alive = 0;
    const char *why = reason(status);
    size_t wl = strlen(why), n = 0;
    if (wl > 40)
        wl = 40; /* http-parser's reasons are shorter; bounds `line` */
    memcpy(line, "HTTP/1.", 7);
    line[7] = r->minor ? '1' : '0';
    line[8] = ' ';
    n = 9 + put_decimal(line + 9, status < 0 || status > 999 ? 500 : (size_t)status);
    line[n++] = ' ';
    memcpy(line + n, why, wl);
    n += wl;
    line[n++] = '\r';
    line[n++] = '\n';
    const char *date = date_line();
    const char *conn = "";
    if (!r->keep_alive)
        conn = "Connection: close\r\n";
    else if (r->minor == 0)
        conn = "Connection: keep-alive\r\n";
    iov[0] = (struct iovec){line, n};
    iov[1] = (struct iovec){(char *)date, strlen(date)};
    iov[2] = (struct iovec){r->out_hdr, r->out_len};
    iov[3] = (struct iovec){(char *)framing, framing_len};
    iov[4] = (struct iovec){(char *)conn, strlen(conn)};
    iov[5] = (struct iovec){"\r\n", 2};
    return 6;
}

/* Sends the pieces in order: straight to the socket in one writev when
 * nothing is queued before them (a bufferevent write would arm and disarm
 * its write event, two epoll_ctl calls per reply), and queues what the
 * socket did not take. A failed write queues everything: the bufferevent's
 * own write then meets the error and ends the connection as before. */
static void send_iov_total(srv_conn *c, struct iovec *iov, int n, size_t total)
{
    size_t sent = 0;
    if (!c->queued || evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        c->queued = 0;
        ssize_t w;
        do
            w = writev(c->fd, iov, n);
        while (w < 0 && errno == EINTR);
        if (w >= 0 && (size_t)w == total)
            return; /* the usual case: all taken */
        sent = w > 0 ? (size_t)w : 0;
    }
    for (int i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;
        if (sent >= len) {
            sent -= len;
            continue;
        }
        bufferevent_write(c->bev, (char *)iov[i].iov_base + sent, len - sent);
        c->queued = 1;
        sent = 0;
    }
}

static void send_iov(srv_conn *c, struct iovec *iov, int n)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    send_iov_total(c, iov, n, total);
}

/* Keeps the pieces for on_resume (copied: the caller's body is freed when
 * the reply call returns). Out of memory: sent now instead. */
static void hold_iov(srv_conn *c, struct iovec *iov, int n)
{
    size_t need = c->pend_len;
    for (int i = 0; i < n; i++)
        need += iov[i].iov_len;
    if (need > c->pend_cap) {
        size_t cap = need < 4096 ? 4096 : need;
        char *grown = realloc(c->pend, cap);
        if (!grown) {
            flush_pending(c);
            send_iov(c, iov, n);
            return;
        }
        c->pend = grown;
        c->pend_cap = cap;
    }
    for (int i = 0; i < n; i++) {
        memcpy(c->pend + c->pend_len, iov[i].iov_base, iov[i].iov_len);
        c->pend_len += iov[i].iov_len;
    }
}

static void flush_pending(srv_conn *c)
{
    if (c->pend_len == 0)
        return;
    struct iovec v = {c->pend, c->pend_len};
    c->pend_len = 0;
    send_iov(c, &v, 1);
    if (c->pend_cap > PEND_KEEP) { /* a large answer's room is not kept */
        free(c->pend);
        c->pend = NULL;
        c->pend_cap = 0;
    }
}

/* The reply is complete: what is held goes out from on_resume, after the
 * handler (and the access line) is done. */
static void reply_done(srv_request *r)
{
    srv_conn *c = r->conn;
    r->state = R_ENDED;
    r->on_gone = NULL;
    r->on_drained = NULL;
    c->phase = FLUSHING;
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    event_active(c->resume, EV_TIMEOUT, 0);
}

void srv_req_reply(srv_request *r, int status, const char *body, size_t len)
{
    if (r->state != R_HANDLER)
        return;
    char line[64], framing[48] = "";
    size_t fl = 0;
    /* RFC 9110 8.6: never in a 204; in a 304 only the 200's length, which
     * a revalidation does not have at hand (neither has a body). */
    if (status != 204 && status != 304) {
        memcpy(framing, "Content-Length: ", 16);
        fl = 16 + put_decimal(framing + 16, len);
        framing[fl++] = '\r';
        framing[fl++] = '\n';
    } else {
        len = 0;
    }
    struct iovec iov[7];
    int n = head_iov(r, status, framing, fl, line, iov);
    if (!r->head && len)
        iov[n++] = (struct iovec){(char *)body, len};
    hold_iov(r->conn, iov, n);
    reply_done(r);
}

void srv_req_start(srv_request *r, int status)
{
    if (r->state != R_HANDLER)
        return;
    r->chunked = r->minor >= 1;
    if (!r->chunked)
        r->keep_alive = 0; /* the end of the body is the end of the connection */
    static const char te[] = "Transfer-Encoding: chunked\r\n";
    r->nheld = head_iov(r, status, r->chunked ? te : "", r->chunked ? sizeof te - 1 : 0,
                        r->held_line, r->held);
    /* A stream is small writes that must leave at once. With Nagle's
     * algorithm the first event after the head waited for the client's
     * delayed ACK (40 ms on Linux). Set when a connection first streams, as
     * nginx does for unbuffered proxying: a non-stream answer is one writev
     * and needs no extra system call. */
    if (!r->conn->nodelay) {
        int one = 1;
        setsockopt(r->conn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        r->conn->nodelay = 1;
    }
    /* Held for the first piece (srv_req_write), srv_req_flush or
     * srv_req_end: a head and the events of the same upstream read leave
     * in one writev, as nginx sends them, and the client wakes once. */
    r->state = R_STREAMING;
}

void srv_req_flush(srv_request *r)
{
    if (r->state != R_STREAMING || r->nheld == 0)
        return;
    send_iov(r->conn, r->held, r->nheld);
    r->nheld = 0;
}

static void check_high_water(srv_request *r)
{
    struct bufferevent *bev = r->conn->bev;
    if (r->high_water && !r->above && r->conn->queued &&
        evbuffer_get_length(bufferevent_get_output(bev)) > r->high_water) {
        r->above = 1;
        bufferevent_setwatermark(bev, EV_WRITE, r->high_water / 2, 0);
    }
}

/* "%zx\r\n" without the printf machinery: once per relayed piece. */
static size_t chunk_head(char *out, size_t n)
{
    char digits[2 * sizeof n];
    size_t k = 0, len = 0;
    do {
        digits[k++] = "0123456789abcdef"[n & 15];
        n >>= 4;
    } while (n);
    while (k)
        out[len++] = digits[--k];
    out[len++] = '\r';
    out[len++] = '\n';
    return len;
}

void srv_req_write(srv_request *r, const char *data, size_t len)
{
    if (r->state != R_STREAMING || len == 0)
        return;
    if (r->head) { /* a HEAD request: its head alone, at once */
        srv_req_flush(r);
        return;
    }
    /* One writev of the chunk's framing and the piece, straight to the
     * socket when nothing is queued (send_iov): building an evbuffer per
     * piece cost more than the piece's own check (callgrind). */
    char head[24];
    struct iovec iov[9];
    int n = 0;
    size_t total = len;
    for (int i = 0; i < r->nheld; i++) { /* the head, with the first piece */
        iov[n++] = r->held[i];
        total += r->held[i].iov_len;
    }
    r->nheld = 0;
    if (r->chunked) {
        size_t hl = chunk_head(head, len);
        iov[n++] = (struct iovec){head, hl};
        total += hl + 2;
    }
    iov[n++] = (struct iovec){(char *)data, len};
    if (r->chunked)
        iov[n++] = (struct iovec){"\r\n", 2};
    send_iov_total(r->conn, iov, n, total);
    check_high_water(r);
}

void srv_req_end(srv_request *r)
{
    if (r->state != R_STREAMING)
        return;
    if (r->nheld) { /* no piece came: the head goes first */
        hold_iov(r->conn, r->held, r->nheld);
        r->nheld = 0;
    }
    if (r->chunked && !r->head) {
        struct iovec end = {"0\r\n\r\n", 5};
        hold_iov(r->conn, &end, 1);
    }
    reply_done(r);
}

size_t srv_req_output_pending(const srv_request *r)
{
    return r->conn->queued ? evbuffer_get_length(bufferevent_get_output(r->conn->bev))
                           : 0;
}

void srv_req_set_write_timeout(srv_request *r, long seconds)
{
    struct timeval t = {seconds, 0};
    bufferevent_set_timeouts(r->conn->bev, NULL, seconds > 0 ? &t : NULL);
}

void srv_req_watch(srv_request *r, srv_gone_cb on_gone, srv_drained_cb on_drained,
                   size_t high_water, void *arg)
{
    r->on_gone = on_gone;
    r->on_drained = on_drained;
    r->high_water = high_water;
    r->watch_arg = arg;
}
