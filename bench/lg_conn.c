/* The connection driver of zju-loadgen: C slots, each one a raw HTTP/1.1
 * connection on a libevent bufferevent that sends the same prebuilt request
 * again and again (keep-alive) and checks every response as it streams in.
 * Raw bufferevents rather than evhttp's client: the body is parsed in place
 * from the input buffer without copies or per-event allocation. */
#include "loadgen.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

struct run;

struct slot {
    struct run *run;
    int idx;
    int connected;
    int busy;      /* a stream is in flight on this slot */
    int got_first; /* the stream has seen its first event */
    int cold;      /* the stream opened its connection */
    struct bufferevent *bev;
    uint64_t t_start;
    struct lg_resp resp;
};

struct run {
    struct event_base *base;
    const struct lg_opts *o;
    struct lg_stats *st;
    struct sockaddr_in dst;
    char *req;
    size_t req_len;
    struct slot *slots;
    int started; /* slots started so far (ramp) */
    int live;    /* slots started and not retired */
    int stopping;
    int finished;
    double ramp_credit;
    struct event *ramp_ev, *stop_ev, *hard_ev;
};

static void slot_next(struct slot *s);

uint64_t lg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int can_issue(const struct run *R)
{
    return !R->stopping && (R->o->count == 0 || R->st->issued < R->o->count);
}

static void maybe_finish(struct run *R)
{
    if (R->finished || R->live > 0)
        return;
    if (R->started < R->o->concurrency && can_issue(R))
        return; /* the ramp still has slots to start */
    R->finished = 1;
    event_base_loopbreak(R->base);
}

static void close_conn(struct slot *s)
{
    if (s->bev) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    s->connected = 0;
}

/* Records the end of the stream in flight; fail is LG_F_COUNT for success. */
static void stream_end(struct slot *s, enum lg_fail fail)
{
    struct run *R = s->run;
    struct lg_stats *st = R->st;
    s->busy = 0;
    if (s->got_first && st->active > 0)
        st->active--;
    if (fail == LG_F_COUNT) {
        uint64_t n = st->completed++;
        if (!R->o->stream && n >= R->o->warmup)
            lg_hist_add(&st->ttfe, lg_now_us() - s->t_start);
        if (n >= R->o->warmup)
            lg_hist_add(&st->dur, lg_now_us() - s->t_start);
    } else {
        st->failed++;
        st->fails[fail]++;
    }
    st->events += s->resp.events;
    st->done_events += s->resp.done_events;
}

static enum lg_fail check(const struct run *R, const struct lg_resp *r)
{
    const struct lg_opts *o = R->o;
    if (r->status != 200)
        return LG_F_STATUS;
    if (!o->stream)
        return LG_F_COUNT;
    if (!r->is_sse)
        return LG_F_CTYPE;
    if (lg_resp_partial_event(r))
        return LG_F_UNCLEAN;
    if (r->done_events && !o->allow_done)
        return LG_F_DONE;
    if (o->expect_events >= 0 && r->events != (uint64_t)o->expect_events)
        return LG_F_EVENTS;
    return LG_F_COUNT;
}

/* The response is complete or broken: account for it, then go on. */
static void response_over(struct slot *s, enum lg_fail fail)
{
    if (fail == LG_F_COUNT)
        fail = check(s->run, &s->resp);
    int reuse = fail == LG_F_COUNT && s->run->o->keepalive && !s->resp.conn_close &&
                s->resp.state == LG_R_DONE &&
                evbuffer_get_length(bufferevent_get_input(s->bev)) == 0;
    stream_end(s, fail);
    if (!reuse)
        close_conn(s);
    slot_next(s);
}

static void on_first_event(struct slot *s)
{
    struct run *R = s->run;
    struct lg_stats *st = R->st;
    uint64_t ttfe = lg_now_us() - s->t_start;
    s->got_first = 1;
    if (++st->active > st->peak_active)
        st->peak_active = st->active;
    if (st->first_ttfe_us == 0)
        st->first_ttfe_us = ttfe ? ttfe : 1;
    if (st->completed + st->failed >= R->o->warmup) {
        lg_hist_add(&st->ttfe, ttfe);
        /* Without the connection setup (client's and the proxy's): what a
         * relay adds to a kept-alive client. */
        if (!s->cold)
            lg_hist_add(&st->ttfe_warm, ttfe);
    }
    if (R->o->slow_readers) {
        /* Stop reading: the server's output now backs up. No read timeout
         * either, since not reading is the point. */
        st->reached_first++;
        bufferevent_disable(s->bev, EV_READ);
        bufferevent_set_timeouts(s->bev, NULL, NULL);
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct slot *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (!s->busy) {
        /* Bytes on an idle keep-alive connection: the server broke framing. */
        s->busy = 1;
        return response_over(s, LG_F_PROTOCOL);
    }
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v[8];
        int nv = evbuffer_peek(in, -1, NULL, v, 8);
        if (nv > 8)
            nv = 8;
        size_t total = 0;
        for (int i = 0; i < nv; i++) {
            size_t used = lg_resp_feed(&s->resp, v[i].iov_base, v[i].iov_len);
            total += used;
            if (used < v[i].iov_len)
                break;
        }
        evbuffer_drain(in, total);
        if (!s->got_first && s->run->o->stream &&
            s->resp.events + s->resp.done_events > 0) {
            on_first_event(s);
            if (s->run->o->slow_readers)
                return;
        }
        if (s->resp.state == LG_R_DONE)
            return response_over(s, evbuffer_get_length(in) ? LG_F_PROTOCOL : LG_F_COUNT);
        if (s->resp.state == LG_R_ERROR)
            return response_over(s, LG_F_PROTOCOL);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct slot *s = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        s->connected = 1;
        return;
    }
    if (!s->busy) {
        /* The server closed an idle keep-alive connection: not a failure. */
        close_conn(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT)
        return response_over(s, LG_F_TIMEOUT);
    if (what & BEV_EVENT_EOF) {
        lg_resp_eof(&s->resp);
        if (s->resp.state == LG_R_DONE)
            return response_over(s, LG_F_COUNT);
        return response_over(s, LG_F_UNCLEAN);
    }
    response_over(s, s->connected ? LG_F_UNCLEAN : LG_F_CONNECT);
}

static int open_conn(struct slot *s)
{
    struct run *R = s->run;
    const struct lg_opts *o = R->o;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (o->rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o->rcvbuf, sizeof o->rcvbuf);
    if (o->src_addrs > 1) {
        /* Several source addresses multiply the ephemeral ports available
         * towards one destination; the port is picked at connect time. */
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(s->idx % o->src_addrs));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            close(fd);
            return -1;
        }
    }
    s->bev = bufferevent_socket_new(R->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev) {
        close(fd);
        return -1;
    }
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    struct timeval tv = {(time_t)o->timeout,
                         (suseconds_t)((o->timeout - (double)(time_t)o->timeout) * 1e6)};
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    bufferevent_enable(s->bev, EV_READ);
    R->st->connections++;
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&R->dst, sizeof R->dst) <
        0) {
        close_conn(s);
        return -1;
    }
    return 0;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    slot_next(arg);
}

/* Starts the next stream on this slot, or retires the slot. */
static void slot_next(struct slot *s)
{
    struct run *R = s->run;
    if (!can_issue(R)) {
        close_conn(s);
        R->live--;
        maybe_finish(R);
        return;
    }
    s->cold = !s->bev;
    if (!s->bev && open_conn(s) < 0) {
        /* Out of descriptors or ports: count it and retry a little later
         * rather than spinning. */
        R->st->failed++;
        R->st->fails[LG_F_CONNECT]++;
        struct timeval later = {0, 10000};
        event_base_once(R->base, -1, EV_TIMEOUT, retry_cb, s, &later);
        return;
    }
    R->st->issued++;
    s->busy = 1;
    s->got_first = 0;
    lg_resp_reset(&s->resp);
    s->t_start = lg_now_us();
    evbuffer_add_reference(bufferevent_get_output(s->bev), R->req, R->req_len, NULL,
                           NULL);
}

static void start_slot(struct run *R)
{
    struct slot *s = &R->slots[R->started++];
    R->live++;
    slot_next(s);
}

static void ramp_cb(evutil_socket_t fd, short what, void *arg)
{
    struct run *R = arg;
    (void)fd;
    (void)what;
    R->ramp_credit += R->o->connect_rate / 100.0;
    while (R->ramp_credit >= 1.0 && R->started < R->o->concurrency && can_issue(R)) {
        R->ramp_credit -= 1.0;
        start_slot(R);
    }
    if (R->started >= R->o->concurrency || !can_issue(R)) {
        event_del(R->ramp_ev);
        maybe_finish(R);
    }
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct run *R = arg;
    (void)fd;
    (void)what;
    R->stopping = 1;
    if (R->o->slow_readers) {
        event_base_loopbreak(R->base);
        return;
    }
    /* Idle slots (between keep-alive streams there are none) retire as their
     * stream ends; a ramp still running stops here. */
    if (R->ramp_ev)
        event_del(R->ramp_ev);
    maybe_finish(R);
}

static void hard_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(((struct run *)arg)->base);
}

/* Escapes s as the inside of a JSON string into out (cap bytes). */
static int json_escape(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[8];
        size_t len;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            len = 2;
        } else if (c < 0x20) {
            len = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", c);
        } else {
            tmp[0] = (char)c;
            len = 1;
        }
        if (n + len + 1 > cap)
            return -1;
        memcpy(out + n, tmp, len);
        n += len;
    }
    out[n] = '\0';
    return 0;
}

static int build_request(struct run *R)
{
    const struct lg_opts *o = R->o;
    char model[512], content[4096], body[8192], hdrs[4096];
    if (json_escape(o->model, model, sizeof model) < 0 ||
        json_escape(o->content, content, sizeof content) < 0) {
        fprintf(stderr, "zju-loadgen: --model or --content too long\n");
        return -1;
    }
    const char *st = o->stream ? "true" : "false";
    int blen;
    if (o->openai_body)
        blen = snprintf(body, sizeof body,
                        "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":"
                        "\"%s\"}],\"stream\":%s}",
                        model, content, st);
    else
        blen = snprintf(body, sizeof body,
                        "{\"user_content\":\"%s\",\"model\":\"%s\",\"stream\":%s}",
                        content, model, st);
    size_t hl = 0;
    hdrs[0] = '\0';
    for (int i = 0; i < o->nheaders; i++) {
        int w = snprintf(hdrs + hl, sizeof hdrs - hl, "%s\r\n", o->headers[i]);
        if (w < 0 || (size_t)w >= sizeof hdrs - hl)
            return -1;
        hl += (size_t)w;
    }
    size_t cap = (size_t)blen + hl + 1024;
    R->req = malloc(cap);
    if (!R->req)
        return -1;
    int n = snprintf(
        R->req, cap,
        "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        "Accept: %s\r\nContent-Length: %d\r\n%s%s\r\n%s",
        o->path, o->host, o->port, o->stream ? "text/event-stream" : "application/json",
        blen, hdrs, o->keepalive ? "" : "Connection: close\r\n", body);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    R->req_len = (size_t)n;
    return 0;
}

static struct timeval tv_of(double sec)
{
    struct timeval tv = {(time_t)sec, (suseconds_t)((sec - (double)(time_t)sec) * 1e6)};
    return tv;
}

int lg_run(struct event_base *base, const struct lg_opts *o, struct lg_stats *st)
{
    struct run R = {.base = base, .o = o, .st = st};
    R.dst.sin_family = AF_INET;
    R.dst.sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, o->host, &R.dst.sin_addr) != 1) {
        fprintf(stderr, "zju-loadgen: --host must be an IPv4 address: %s\n", o->host);
        return -1;
    }
    if (build_request(&R) < 0) {
        fprintf(stderr, "zju-loadgen: cannot build the request\n");
        return -1;
    }
    R.slots = calloc((size_t)o->concurrency, sizeof *R.slots);
    if (!R.slots) {
        free(R.req);
        return -1;
    }
    for (int i = 0; i < o->concurrency; i++) {
        R.slots[i].run = &R;
        R.slots[i].idx = i;
    }
    if (o->duration > 0) {
        struct timeval d = tv_of(o->duration);
        /* Streams in flight at the end get their idle timeout to finish. */
        struct timeval h =
            tv_of(o->slow_readers ? o->duration + 1 : o->duration + o->timeout + 2);
        R.stop_ev = evtimer_new(base, stop_cb, &R);
        R.hard_ev = evtimer_new(base, hard_cb, &R);
        evtimer_add(R.stop_ev, &d);
        evtimer_add(R.hard_ev, &h);
    }
    if (o->connect_rate > 0) {
        struct timeval tick = {0, 10000};
        R.ramp_ev = event_new(base, -1, EV_PERSIST, ramp_cb, &R);
        event_add(R.ramp_ev, &tick);
        R.ramp_credit = 1.0;
    } else {
        while (R.started < o->concurrency && can_issue(&R))
            start_slot(&R);
    }
    maybe_finish(&R);
    if (!R.finished)
        event_base_dispatch(base);
    /* Streams still open here were cut by the deadline (slow readers: held
     * until the end on purpose, so not failures). */
    for (int i = 0; i < o->concurrency; i++) {
        struct slot *s = &R.slots[i];
        if (s->busy && !o->slow_readers) {
            st->failed++;
            st->fails[LG_F_CUT]++;
        }
        close_conn(s);
    }
    if (R.ramp_ev)
        event_free(R.ramp_ev);
    if (R.stop_ev)
        event_free(R.stop_ev);
    if (R.hard_ev)
        event_free(R.hard_ev);
    free(R.slots);
    free(R.req);
    return 0;
}
