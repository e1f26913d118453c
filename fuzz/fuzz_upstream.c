/*
 * fuzz_upstream.c - libFuzzer driver for the library's handling of an
 * upstream response (status line, headers, body; the transport that
 * src/lib/call.h maps, with sse.c, response.c and error.c behind it), end to
 * end through the evented calls' HTTP/1.1 transport (src/lib/h1.h; run with
 * ZJU_UPSTREAM_ENGINE=curl for libcurl's).
 *
 * The input is served as raw bytes by a loopback listener on the same
 * event_base the client runs on (one thread, no races): each request the
 * client sends (its head ends at the first blank line; the JSON body never
 * holds one) is answered with the next reply, and after the last reply the
 * write side is shut, so every input ends in EOF and no call waits for a
 * timer. The call itself is the evented zjuchat_call_start, the path the
 * server uses.
 *
 * Input layout: byte 0 bit 0: stream call; bit 1: pause on every chunk and
 * resume from the loop (backpressure path); bit 2: stop on the second
 * chunk; bit 3: sequence: the rest is up to MAX_REPLIES replies separated
 * by NEXT_REPLY, one call after another on the same client, a connection
 * kept open between replies (so the transport reuses it and its connection
 * state carries from one reply to the next, as in the server);
 * bit 4: one retry allowed (a 429/5xx reply is followed by a second
 * attempt of the same call). Without bit 3 the rest is one reply, sent to
 * every request. The libFuzzer run keeps one client for all inputs, so
 * state also carries across inputs there; bit 3 makes such a finding
 * replay alone (fuzz/regressions/fuzz_upstream/uaf-*).
 *
 * Checked: the call ends exactly once; the API key never reaches the
 * caller, neither in raw bytes nor once JSON escapes are decoded (error
 * message, chunk data and accessors, response body and accessors); chunk
 * data is a JSON object; error messages are NUL-terminated; accessor
 * strings have the length they claim.
 */
#include <zjuchat.h>

#include <event2/event.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define KEY "sk-fuzzkey0123456789"
#define MAX_CONNS 16 /* a call makes at most a few connections */
#define MAX_REPLIES 4
#define NEXT_REPLY "--next-reply--"
/* Time limits for bit 3 and 4 inputs. Short while fuzzing, where speed
 * counts; longer in the replay build (fuzz/build.sh defines FUZZ_REPLAY),
 * where a slow, loaded machine must not turn a committed regression into a
 * timeout that misses the path it guards. */
#ifdef FUZZ_REPLAY
#define SEQ_WAIT_MS 1000
#else
#define SEQ_WAIT_MS 5
#endif

static struct event_base *base;
static zjuchat_client *client;
static zjuchat_request *request;
static evutil_socket_t lfd = -1;
static struct event *accept_ev, *resume_ev;

static struct {
    const uint8_t *p;
    size_t len;
} replies[MAX_REPLIES];
static int nreplies;
static int served;  /* requests answered in this input */
static int verbose; /* FUZZ_UPSTREAM_VERBOSE=1: each call's outcome on stderr */

/* One accepted upstream connection: the tail of what the client sent
 * (a blank line may straddle two reads) and its read event. */
struct conn {
    int fd;
    int shut; /* the last reply went out: nothing more to write */
    char tail[3];
    size_t tail_len;
    struct event *ev;
};
static struct conn conns[MAX_CONNS];
static int nconns;

typedef struct {
    int done;
    int flags;
    int chunks;
    zjuchat_call *call;
} state;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_upstream: invariant broken: %s\n", what);
    abort();
}

static void no_key(const char *s, size_t len, const char *where)
{
    if (s && len >= sizeof KEY - 1 && memmem(s, len, KEY, sizeof KEY - 1)) {
        fprintf(stderr, "fuzz_upstream: API key visible in %s\n", where);
        abort();
    }
}

static void check_str(const char *s, size_t len, const char *where)
{
    if (!s)
        return;
    if (strlen(s) > len)
        die("accessor string longer than its length"); /* may hold NULs */
#ifndef FUZZ_UPSTREAM_SKIP_KNOWN
    /* Known finding (fuzz/regressions/fuzz_upstream/key-escaped-*): a key
     * written with JSON escapes passes the raw-byte redaction. Built with
     * the macro only to fuzz past it. */
    no_key(s, len, where);
#endif
}

/* Answers one request on c with the next reply; the last one (and every
 * one after it) ends with the write side shut. */
static void serve(struct conn *c)
{
    int i = served < nreplies ? served : nreplies - 1;
    served++;
    if (c->shut)
        return;
    /* Blocking write of at most max_len bytes: fits the loopback buffers,
     * so it never waits for the (same-thread) client to read. No SIGPIPE
     * when the client has gone. */
    size_t off = 0;
    while (off < replies[i].len) {
        ssize_t n = send(c->fd, replies[i].p + off, replies[i].len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    if (i == nreplies - 1) {
        shutdown(c->fd, SHUT_WR);
        c->shut = 1;
    }
}

/* Counts request heads ("\r\n\r\n") in what the client sent; each is
 * answered. */
static void on_request_bytes(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    char buf[4096 + sizeof c->tail];
    memcpy(buf, c->tail, c->tail_len);
    ssize_t n = read(fd, buf + c->tail_len, 4096);
    if (n <= 0) {
        event_del(c->ev);
        return;
    }
    size_t len = c->tail_len + (size_t)n;
    const char *p = buf, *end = buf + len, *blank;
    while ((blank = memmem(p, (size_t)(end - p), "\r\n\r\n", 4)) != NULL) {
        serve(c);
        p = blank + 4;
    }
    c->tail_len = (size_t)(end - p) < sizeof c->tail ? (size_t)(end - p) : sizeof c->tail;
    memcpy(c->tail, end - c->tail_len, c->tail_len);
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    int c = accept(fd, NULL, NULL);
    if (c < 0)
        return;
    if (nconns == MAX_CONNS) {
        close(c);
        return;
    }
    struct conn *cn = &conns[nconns++];
    cn->fd = c;
    cn->shut = 0;
    cn->tail_len = 0;
    cn->ev = event_new(base, c, EV_READ | EV_PERSIST, on_request_bytes, cn);
    if (!cn->ev)
        abort();
    event_add(cn->ev, NULL);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    state *s = arg;
    if (!s->done)
        zjuchat_call_resume(s->call);
}

static int on_chunk(zjuchat_call *call, const zjuchat_chunk *chunk, void *arg)
{
    state *s = arg;
    size_t len = 0;
    const char *data = zjuchat_chunk_data(chunk, &len);
    size_t i = 0; /* JSON allows leading whitespace before the object */
    while (data && i < len && strchr(" \t\r\n", data[i]))
        i++;
    if (!data || i == len || data[i] != '{')
        die("chunk data is not a JSON object");
    no_key(data, len, "chunk data");
    const char *t = zjuchat_chunk_content(chunk, &len);
    check_str(t, len, "chunk content");
    t = zjuchat_chunk_reasoning(chunk, &len);
    check_str(t, len, "chunk reasoning");
    t = zjuchat_chunk_finish_reason(chunk);
    check_str(t, t ? strlen(t) : 0, "chunk finish_reason");
    long p, q, r;
    zjuchat_chunk_usage(chunk, &p, &q, &r);
    s->chunks++;
    if (s->flags & 2) {
        zjuchat_call_pause(call);
        event_active(resume_ev, EV_TIMEOUT, 0);
    }
    return (s->flags & 4) && s->chunks == 2 ? ZJUCHAT_STOP : 0;
}

static void on_done(zjuchat_call *call, const zjuchat_error *err,
                    const zjuchat_response *resp, void *arg)
{
    state *s = arg;
    if (s->done)
        die("on_done ran twice");
    s->done = 1;
    if (!memchr(err->message, '\0', sizeof err->message))
        die("error message not NUL-terminated");
    if (verbose)
        fprintf(stderr, "fuzz_upstream: call done: code %d, status %ld: %s\n",
                (int)err->code, err->http_status, err->message);
#ifdef FUZZ_UPSTREAM_SKIP_KNOWN
    /* Known finding (regressions/fuzz_upstream/key-in-content-type-*). */
    if (!strstr(err->message, "not text/event-stream"))
#endif
        no_key(err->message, strlen(err->message), "error message");
    if (err->code == ZJUCHAT_OK && !s->call)
        die("success without a call");
    if (resp) {
        size_t len = 0;
        const char *b = zjuchat_response_body(resp, &len);
        no_key(b, len, "response body");
        const char *t = zjuchat_response_content(resp, &len);
        check_str(t, len, "response content");
        t = zjuchat_response_reasoning(resp, &len);
        check_str(t, len, "response reasoning");
        t = zjuchat_response_finish_reason(resp);
        check_str(t, t ? strlen(t) : 0, "response finish_reason");
        long p, q, r;
        zjuchat_response_usage(resp, &p, &q, &r);
        size_t n = zjuchat_response_model_count(resp);
        for (size_t i = 0; i < n && i < 64; i++) {
            t = zjuchat_response_model_id(resp, i);
            check_str(t, t ? strlen(t) : 0, "model id");
        }
    }
    event_base_loopbreak(base);
}

/* Short limits: an input that makes the library wait is a slow unit that
 * libFuzzer reports, not a hang. Flags 8 and 16 (see the top) shorten them
 * more and allow one retry. */
static void set_limits(int flags)
{
    int seq = (flags & 24) != 0;
    /* A reply that does not say where it ends, on a connection kept open,
     * ends by the idle timer, and a Retry-After is waited out up to the
     * total limit. */
    zjuchat_client_set_timeout(client, ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE,
                               seq ? SEQ_WAIT_MS : 2000);
    zjuchat_client_set_timeout(client, ZJUCHAT_TIMEOUT_OPT_IDLE,
                               seq ? SEQ_WAIT_MS : 2000);
    zjuchat_client_set_timeout(client, ZJUCHAT_TIMEOUT_OPT_TOTAL,
                               seq ? 5 * SEQ_WAIT_MS : 4000);
    zjuchat_client_set_retries(client, (flags & 16) ? 1 : 0, 1);
}

static void setup(void)
{
    verbose = getenv("FUZZ_UPSTREAM_VERBOSE") != NULL;
    base = event_base_new();
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (!base || lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(lfd, 64) != 0 || getsockname(lfd, (struct sockaddr *)&a, &al) != 0)
        abort();
    evutil_make_socket_nonblocking(lfd);
    accept_ev = event_new(base, lfd, EV_READ | EV_PERSIST, on_accept, NULL);
    event_add(accept_ev, NULL);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", ntohs(a.sin_port));
    zjuchat_error err;
    client = zjuchat_client_new(KEY, url, &err);
    if (!client)
        abort();
    zjuchat_client_set_timeout(client, ZJUCHAT_TIMEOUT_OPT_CONNECT, 1000);
    set_limits(0);
    if (zjuchat_client_use_event_base(client, base) != ZJUCHAT_OK)
        abort();
    request = zjuchat_request_new_simple(NULL, "hi", NULL);
    if (!request)
        abort();
}

/* Splits the payload into replies at NEXT_REPLY (bit 3), else one reply. */
static void split_replies(const uint8_t *p, size_t len, int sequence)
{
    nreplies = 0;
    const size_t ml = sizeof NEXT_REPLY - 1;
    const uint8_t *m;
    while (sequence && nreplies < MAX_REPLIES - 1 &&
           (m = memmem(p, len, NEXT_REPLY, ml)) != NULL) {
        replies[nreplies].p = p;
        replies[nreplies++].len = (size_t)(m - p);
        len -= (size_t)(m - p) + ml;
        p = m + ml;
    }
    replies[nreplies].p = p;
    replies[nreplies++].len = len;
}

static void run_call(int flags)
{
    state s = {0, flags, 0, NULL};
    resume_ev = evtimer_new(base, on_resume, &s);
    static const zjuchat_callbacks cb = {NULL, on_chunk, on_done};
    zjuchat_error err;
    s.call = zjuchat_call_start(client, request, flags & 1, &cb, &s, &err);
    if (!s.call)
        die("call did not start");
    while (!s.done)
        if (event_base_dispatch(base) < 0)
            abort();
    event_free(resume_ev);
    resume_ev = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!base)
        setup();
    int flags = data[0];
    split_replies(data + 1, size - 1, flags & 8);
    served = 0;
    nconns = 0;
    set_limits(flags);
    /* One call per reply; a retry may take a reply too. */
    for (int calls = 0; calls < nreplies && served < nreplies; calls++)
        run_call(flags);
    if (verbose)
        fprintf(stderr, "fuzz_upstream: %d request(s) on %d connection(s)\n", served,
                nconns);
    for (int i = 0; i < nconns; i++) {
        event_free(conns[i].ev);
        close(conns[i].fd);
    }
    return 0;
}
