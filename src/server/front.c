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

enum phase { READING, HANDLING, FLUSHING, LINGERING };
enum rstate { R_PARSING, R_HANDLER, R_STREAMING, R_ENDED };

typedef struct header {
    char *name, *value;
} header;

typedef struct srv_conn srv_conn;

struct srv_request {
    srv_conn *conn;
    enum rstate state;
    char method[16];
    char *uri;
    size_t uri_len;
    char *path; /* the URI up to '?' or '#', set with the headers */
    header *hdrs;
    size_t nhdr, caphdr;
    int in_value; /* the parser's last header callback was a value */
    struct evbuffer *body;
    int minor;      /* HTTP/1.minor */
    int head;       /* HEAD: no body in the reply */
    int keep_alive; /* http_should_keep_alive, and no error */
    int chunked;    /* streamed reply uses chunked encoding */
    struct evbuffer *out_headers;
    srv_gone_cb on_gone;
    srv_drained_cb on_drained;
    void *watch_arg;
    size_t high_water;
    int above; /* output went above high_water; on_drained owed */
};

struct srv_conn {
    srv_front *f;
    srv_conn *prev, *next;
    struct bufferevent *bev;
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
    struct sockaddr_storage peer;
    char peer_text[64];
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
    r->out_headers = evbuffer_new();
    if (!r->body || !r->out_headers) {
        if (r->body)
            evbuffer_free(r->body);
        if (r->out_headers)
            evbuffer_free(r->out_headers);
        free(r);
        return NULL;
    }
    snprintf(r->method, sizeof r->method, "GET");
    return r;
}

static void request_free(srv_request *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nhdr; i++) {
        free(r->hdrs[i].name);
        free(r->hdrs[i].value);
    }
    free(r->hdrs);
    free(r->uri);
    free(r->path);
    evbuffer_free(r->body);
    evbuffer_free(r->out_headers);
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

const char *srv_req_header(const srv_request *r, const char *name)
{
    for (size_t i = 0; i < r->nhdr; i++)
        if (r->hdrs[i].name && strcasecmp(r->hdrs[i].name, name) == 0)
            return r->hdrs[i].value ? r->hdrs[i].value : "";
    return NULL;
}

char *srv_req_header_joined(const srv_request *r, const char *name)
{
    char *joined = NULL;
    size_t len = 0;
    for (size_t i = 0; i < r->nhdr; i++) {
        if (!r->hdrs[i].name || strcasecmp(r->hdrs[i].name, name) != 0)
            continue;
        const char *v = r->hdrs[i].value ? r->hdrs[i].value : "";
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

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    srv_conn *c = p->data;
    srv_request *r = c->req;
    if (count_head(c, n) < 0)
        return -1;
    if (r->nhdr == 0 || r->in_value) {
        if (r->nhdr == r->caphdr) {
            size_t cap = r->caphdr ? r->caphdr * 2 : 16;
            header *h = realloc(r->hdrs, cap * sizeof *h);
            if (!h)
                return -1;
            r->hdrs = h;
            r->caphdr = cap;
        }
        r->hdrs[r->nhdr].name = NULL;
        r->hdrs[r->nhdr].value = NULL;
        r->nhdr++;
        r->in_value = 0;
    }
    header *h = &r->hdrs[r->nhdr - 1];
    size_t len = h->name ? strlen(h->name) : 0;
    return append(&h->name, &len, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    srv_conn *c = p->data;
    srv_request *r = c->req;
    if (count_head(c, n) < 0)
        return -1;
    if (r->nhdr == 0)
        return -1;
    r->in_value = 1;
    header *h = &r->hdrs[r->nhdr - 1];
    size_t len = h->value ? strlen(h->value) : 0;
    return append(&h->value, &len, at, n);
}

static int on_headers_complete(http_parser *p)
{
    srv_conn *c = p->data;
    srv_request *r = c->req;
    snprintf(r->method, sizeof r->method, "%s", http_method_str(p->method));
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
        if (r->minor >= 1)
            bufferevent_write(c->bev, "HTTP/1.1 100 Continue\r\n\r\n", 25);
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
    bufferevent_enable(c->bev, EV_READ);
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

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    srv_conn *c = arg;
    if (c->phase == FLUSHING && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        finish_request(c);
    else if (c->phase == READING)
        conn_process(c);
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
            bufferevent_disable(bev, EV_READ);
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
    if (c->phase == HANDLING && r && r->above &&
        evbuffer_get_length(bufferevent_get_output(bev)) <= r->high_water / 2) {
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

static void start_linger(srv_conn *c)
{
    c->phase = LINGERING;
    event_del(c->deadline);
    shutdown(c->fd, SHUT_WR);
    c->linger_end = time(NULL) + LINGER_TOTAL_S;
    struct timeval t = {LINGER_TIMEOUT_S, 0};
    bufferevent_set_timeouts(c->bev, &t, NULL);
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_enable(c->bev, EV_READ);
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
    bufferevent_free(c->bev); /* deletes its events, then closes the socket */
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
    if (!c->bev || !c->deadline || !c->resume) {
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
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
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
    evbuffer_add_printf(r->out_headers, "%s: %s\r\n", name, value);
}

static void write_head(srv_request *r, int status, const char *framing)
{
    srv_conn *c = r->conn;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (c->f->draining)
        r->keep_alive = 0;
    evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\n", r->minor, status, reason(status));
    const char *date = date_line();
    evbuffer_add(out, date, strlen(date));
    evbuffer_add_buffer(out, r->out_headers);
    evbuffer_add(out, framing, strlen(framing));
    if (!r->keep_alive)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (r->minor == 0)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
}

static void reply_done(srv_request *r)
{
    srv_conn *c = r->conn;
    r->state = R_ENDED;
    r->on_gone = NULL;
    r->on_drained = NULL;
    c->phase = FLUSHING;
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    struct timeval t = {
        c->f->lim.request_timeout_s > 0 ? c->f->lim.request_timeout_s : 60, 0};
    bufferevent_set_timeouts(c->bev, NULL, &t);
    bufferevent_enable(c->bev, EV_WRITE);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        event_active(c->resume, EV_TIMEOUT, 0); /* nothing to wait for */
}

void srv_req_reply(srv_request *r, int status, const char *body, size_t len)
{
    if (r->state != R_HANDLER)
        return;
    char framing[48] = "";
    /* RFC 9110 8.6: never in a 204; in a 304 only the 200's length, which
     * a revalidation does not have at hand (neither has a body). */
    if (status != 204 && status != 304)
        snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", len);
    else
        len = 0;
    write_head(r, status, framing);
    if (!r->head && len)
        bufferevent_write(r->conn->bev, body, len);
    reply_done(r);
}

void srv_req_start(srv_request *r, int status)
{
    if (r->state != R_HANDLER)
        return;
    r->chunked = r->minor >= 1;
    if (!r->chunked)
        r->keep_alive = 0; /* the end of the body is the end of the connection */
    write_head(r, status, r->chunked ? "Transfer-Encoding: chunked\r\n" : "");
    r->state = R_STREAMING;
}

static void check_high_water(srv_request *r)
{
    struct bufferevent *bev = r->conn->bev;
    if (r->high_water && !r->above &&
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

void srv_req_write_buffer(srv_request *r, struct evbuffer *buf)
{
    size_t n = evbuffer_get_length(buf);
    if (r->state != R_STREAMING || n == 0 || r->head) {
        evbuffer_drain(buf, n);
        return;
    }
    if (r->chunked) {
        char head[24];
        size_t hl = chunk_head(head, n);
        evbuffer_prepend(buf, head, hl);
        evbuffer_add(buf, "\r\n", 2);
    }
    struct bufferevent *bev = r->conn->bev;
    struct evbuffer *out = bufferevent_get_output(bev);
    /* With nothing queued, write straight to the socket: going through the
     * bufferevent arms and disarms its write event (two epoll_ctl calls) for
     * every piece. What the socket does not take is queued, in order. */
    if (evbuffer_get_length(out) == 0)
        evbuffer_write(buf, r->conn->fd);
    if (evbuffer_get_length(buf) > 0)
        bufferevent_write_buffer(bev, buf);
    check_high_water(r);
}

void srv_req_end(srv_request *r)
{
    if (r->state != R_STREAMING)
        return;
    if (r->chunked && !r->head)
        bufferevent_write(r->conn->bev, "0\r\n\r\n", 5);
    reply_done(r);
}

size_t srv_req_output_pending(const srv_request *r)
{
    return evbuffer_get_length(bufferevent_get_output(r->conn->bev));
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
