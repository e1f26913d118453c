/*
 * zju-mock-upstream: command line, listening socket(s), worker processes, TLS
 * and clean shutdown of the fake ZJU Chat API. See mock.h for the pieces, and
 * usage() below (--help) for the routes, the directives and the controls.
 *
 *   zju-mock-upstream [--host 127.0.0.1] [--port 0] [--key KEY] [--events N]
 *       [--reasoning N] [--delay-ms D] [--tls-cert FILE --tls-key FILE]
 *       [--workers N] [--quiet]
 *
 * It speaks the OpenAI-compatible protocol of the upstream: chat completions
 * (stream or not, multimodal content parts, stream_options.include_usage),
 * embeddings (bge-m3, deterministic vectors: embeddings.c), the model list and
 * one model by id, and OpenAI's error shape {"error":{message,type,param,code}}.
 */
#include "mock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/listener.h>
#include <openssl/err.h>

#define BACKLOG 8192
#define MAX_WORKERS 64
#define MAX_ALSO 16

struct mock_server mock;

struct options {
    const char *host;
    int port;
    const char *cert, *keyfile;
    int workers;
    const char *also[MAX_ALSO]; /* --also-host: more addresses, the same port */
    int nalso;
};

static void usage(FILE *f)
{
    fprintf(
        f, "usage: zju-mock-upstream [--host 127.0.0.1] [--port 0] [--key KEY]\n"
           "         [--events N] [--reasoning N] [--delay-ms D]\n"
           "         [--tls-cert FILE --tls-key FILE] [--workers N] [--quiet]\n"
           "         [--also-host ADDR]...  (the same port on more IPv4 addresses)\n"
           "\n"
           "A fake ZJU Chat API (OpenAI-compatible) for tests. Any path prefix works\n"
           "(/v1/..., /api/ai/v1/...); the API routes want 'Authorization: Bearer KEY'\n"
           "(--key: that key, else any) and answer errors as\n"
           "{\"error\":{\"message\",\"type\",\"param\",\"code\"}}.\n"
           "  POST .../chat/completions  stream or not; unknown fields ignored, known\n"
           "      ones type-checked; content a string or text/image_url parts (images:\n"
           "      llava-onevision-qwen2-7b-ov, mock-*); stream_options.include_usage:\n"
           "      \"usage\":null in every chunk, then a \"choices\":[] usage chunk\n"
           "  POST .../embeddings  bge-m3 (or mock-*), input a string or strings:\n"
           "      1024 deterministic floats each; encoding_format float or base64\n"
           "  GET  .../models, .../models/{id}  the upstream's models (404 unknown)\n"
           "Per request (chat, embeddings): \"model\": \"NAME#key=v,...\" or the header\n"
           "X-Mock: key=v,...  keys: events reasoning delay think first status body\n"
           "  retry_after echo_key after split fault=hang_headers+hang_mid+drop_mid+\n"
           "  rst_mid+garbage+no_done+truncate+not_sse+endless_line+big_error+crlf\n"
           "  text=mock|hostile|think|markdown (the answer: default, script-laden\n"
           "  Markdown, inline <think> tags split across deltas, plain Markdown)\n"
           "Control (no auth): GET /_mock/stats, GET /_mock/last (last chat or\n"
           "embeddings request), POST /_mock/reset-stats, GET|POST /_mock/config\n"
           "  {the keys above, fail_next, fail_status, reset,\n"
           "   models: list|empty|hang|garbage|STATUS, models_think: MS}\n");
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

/* Fills o and mock.cli from argv; returns 0, 1 for --help, -1 on error. */
static int parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longopts[] = {{"host", required_argument, NULL, 'h'},
                                             {"port", required_argument, NULL, 'p'},
                                             {"key", required_argument, NULL, 'k'},
                                             {"events", required_argument, NULL, 'e'},
                                             {"reasoning", required_argument, NULL, 'r'},
                                             {"delay-ms", required_argument, NULL, 'd'},
                                             {"tls-cert", required_argument, NULL, 'c'},
                                             {"tls-key", required_argument, NULL, 'K'},
                                             {"workers", required_argument, NULL, 'w'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"also-host", required_argument, NULL, 'A'},
                                             {"help", no_argument, NULL, 'H'},
                                             {NULL, 0, NULL, 0}};
    int c, bad = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            o->host = optarg;
            break;
        case 'p':
            bad |= parse_int(optarg, 0, 65535, &o->port);
            break;
        case 'k':
            mock.key = optarg;
            break;
        case 'e':
            bad |= parse_int(optarg, 0, 10000000, &mock.cli.events);
            break;
        case 'r':
            bad |= parse_int(optarg, 0, 10000000, &mock.cli.reasoning);
            break;
        case 'd':
            bad |= parse_int(optarg, 0, 3600000, &mock.cli.delay_ms);
            break;
        case 'c':
            o->cert = optarg;
            break;
        case 'K':
            o->keyfile = optarg;
            break;
        case 'w':
            bad |= parse_int(optarg, 1, MAX_WORKERS, &o->workers);
            break;
        case 'q':
            mock.quiet = 1;
            break;
        case 'A':
            if (o->nalso == MAX_ALSO)
                bad = -1;
            else
                o->also[o->nalso++] = optarg;
            break;
        case 'H':
            return 1;
        default:
            return -1;
        }
    }
    if (bad || optind != argc || (!o->cert != !o->keyfile))
        return -1;
    return 0;
}

/* A bound, listening, non-blocking socket on host:port with SO_REUSEPORT. */
static int listen_socket(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1;
    int fd;
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "zju-mock-upstream: bad IPv4 host '%s'\n", host);
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, BACKLOG) < 0) {
        fprintf(stderr, "zju-mock-upstream: cannot listen on %s:%d: %s\n", host, port,
                strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        mock.nconns = rl.rlim_cur > 1000000 ? 1000000 : (int)rl.rlim_cur;
    else
        mock.nconns = 1024;
}

static SSL_CTX *make_ssl_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        fprintf(stderr, "zju-mock-upstream: cannot load %s / %s: %s\n", cert, key,
                ERR_error_string(ERR_get_error(), NULL));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static struct event *accept_retry;
static int ready_fd = -1; /* a worker child writes one byte here once listening */
static sigset_t stop_signals;

static struct evconnlistener *listeners[1 + MAX_ALSO];
static int nlisteners;

/* Out of descriptors the listeners would spin on accept(): pause them 100 ms. */
static void accept_error(struct evconnlistener *l, void *arg)
{
    struct timeval tv = {0, 100000};
    if (!mock.quiet)
        fprintf(stderr, "zju-mock-upstream: accept: %s\n", strerror(errno));
    for (int i = 0; i < nlisteners; i++)
        evconnlistener_disable(listeners[i]);
    evtimer_add(accept_retry, &tv);
}

static void accept_resume(evutil_socket_t fd, short what, void *arg)
{
    for (int i = 0; i < nlisteners; i++)
        evconnlistener_enable(listeners[i]);
}

/* A listener on addr:port bound to evhttp (which frees it), or NULL. */
static struct evconnlistener *bind_listener(const char *addr, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "zju-mock-upstream: bad IPv4 host '%s'\n", addr);
        return NULL;
    }
    struct evconnlistener *l =
        evconnlistener_new_bind(mock.base, NULL, NULL,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
                                    LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT,
                                BACKLOG, (struct sockaddr *)&sa, sizeof(sa));
    if (!l) {
        fprintf(stderr, "zju-mock-upstream: cannot listen on %s:%d: %s\n", addr, port,
                strerror(errno));
        return NULL;
    }
    if (!evhttp_bind_listener(mock.http, l)) {
        evconnlistener_free(l);
        return NULL;
    }
    return l;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopbreak(mock.base);
}

/* Serves on fd (a listening socket, or -1 to bind host:port) until a signal. */
static int run_worker(int fd, const struct options *o)
{
    struct evconnlistener *l;
    struct event *sigterm, *sigint;
    int rc = 1;

    mock.base = event_base_new();
    mock.http = mock.base ? evhttp_new(mock.base) : NULL;
    mock.conns = calloc((size_t)mock.nconns, sizeof(*mock.conns));
    if (!mock.http || !mock.conns)
        goto out;
    mock.adopt_ev = event_new(mock.base, -1, 0, mock_conn_adopt, NULL);
    evhttp_set_bevcb(mock.http, mock_conn_bevcb, NULL);
    evhttp_set_gencb(mock.http, mock_http_route, NULL);
    /* Read and write timeouts are one setting in evhttp: long enough for the
     * slowest benchmark stream, short enough to reap abandoned connections. */
    evhttp_set_timeout(mock.http, 600);
    evhttp_set_max_headers_size(mock.http, 64 * 1024);
    evhttp_set_max_body_size(mock.http, 8 * 1024 * 1024);
    evhttp_set_allowed_methods(mock.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
                                              EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                              EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS);
    if (fd >= 0) {
        l = evconnlistener_new(mock.base, NULL, NULL,
                               LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, BACKLOG,
                               fd);
        if (l && !evhttp_bind_listener(mock.http, l)) {
            evconnlistener_free(l);
            l = NULL;
        }
    } else {
        l = bind_listener(o->host, o->port);
    }
    if (!l)
        goto out;
    listeners[nlisteners++] = l;
    /* More addresses on the same port: connections to each are their own
     * 4-tuples, so a client that reaches the mock at one address does not
     * meet another's TIME_WAIT sockets when it picks a local port. */
    for (int i = 0; i < o->nalso; i++) {
        struct evconnlistener *a = bind_listener(o->also[i], o->port);
        if (!a)
            goto out;
        listeners[nlisteners++] = a;
    }
    if (ready_fd >= 0) {
        (void)!write(ready_fd, "r", 1);
        close(ready_fd);
        ready_fd = -1;
    }
    accept_retry = evtimer_new(mock.base, accept_resume, NULL);
    for (int i = 0; i < nlisteners; i++)
        evconnlistener_set_error_cb(listeners[i], accept_error);
    sigterm = evsignal_new(mock.base, SIGTERM, on_signal, NULL);
    sigint = evsignal_new(mock.base, SIGINT, on_signal, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    sigprocmask(SIG_UNBLOCK, &stop_signals, NULL); /* blocked in main until now */

    event_base_dispatch(mock.base);
    rc = 0;
    event_free(sigterm);
    event_free(sigint);
    event_free(accept_retry);
out:
    if (mock.http)
        evhttp_free(mock.http); /* closes every connection: close callbacks free state */
    while (mock.pending) {
        struct mock_conn *c = mock.pending;
        mock.pending = c->next;
        free(c);
    }
    if (mock.adopt_ev)
        event_free(mock.adopt_ev);
    if (mock.base)
        event_base_free(mock.base);
    free(mock.conns);
    free(mock.last);
    if (mock.ssl_ctx)
        SSL_CTX_free(mock.ssl_ctx);
    libevent_global_shutdown();
    return rc;
}

int main(int argc, char **argv)
{
    struct options o = {.host = "127.0.0.1", .port = 0, .workers = 1};
    pid_t kids[MAX_WORKERS];
    int nkids = 0, fd, rc, r;
    struct sockaddr_in sa;
    socklen_t salen = sizeof(sa);

    mock_directives_clear(&mock.cli);
    mock.cli.events = 8;
    mock.cli.reasoning = 4;
    mock.cli.delay_ms = 0;
    mock.cli.think_ms = 0;
    mock.cli.first_ms = 0;
    mock.cli.status = 0;
    mock.cli.body = MOCK_BODY_JSON;
    mock.cli.echo_key = 0;
    mock.cli.after = 2;
    mock.cli.split = 0;
    mock.cli.faults = 0;
    mock.cli.text = MOCK_TEXT_MOCK;
    r = parse_args(argc, argv, &o);
    if (r != 0) {
        usage(r > 0 ? stdout : stderr);
        return r > 0 ? 0 : 2;
    }
    mock.global = mock.cli;
    mock.fail_status = 503;
    signal(SIGPIPE, SIG_IGN);
    /* A SIGTERM that arrives before the loop watches for it stays pending. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_signals, NULL);
    raise_nofile();
    if (o.cert && !(mock.ssl_ctx = make_ssl_ctx(o.cert, o.keyfile)))
        return 1;
    fd = listen_socket(o.host, o.port);
    if (fd < 0) {
        if (mock.ssl_ctx)
            SSL_CTX_free(mock.ssl_ctx);
        return 1;
    }
    getsockname(fd, (struct sockaddr *)&sa, &salen);
    o.port = ntohs(sa.sin_port);
    /* Extra workers bind their own socket to the same port (SO_REUSEPORT), so
     * the kernel spreads connections; no libevent state exists before fork.
     * The port is announced once every worker listens. */
    int ready[2] = {-1, -1};
    if (o.workers > 1 && pipe(ready) < 0)
        o.workers = 1;
    for (int i = 1; i < o.workers; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            close(fd);
            close(ready[0]);
            ready_fd = ready[1];
            return run_worker(-1, &o);
        }
        if (pid > 0)
            kids[nkids++] = pid;
    }
    if (ready[1] >= 0) {
        char b;
        close(ready[1]);
        for (int i = 0; i < nkids && read(ready[0], &b, 1) == 1; i++)
            ;
        close(ready[0]);
    }
    printf("listening on %s://%s:%d\n", mock.ssl_ctx ? "https" : "http", o.host, o.port);
    fflush(stdout);
    rc = run_worker(fd, &o);
    for (int i = 0; i < nkids; i++) {
        int st;
        kill(kids[i], SIGTERM);
        if (waitpid(kids[i], &st, 0) == kids[i] &&
            !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
            rc = 1;
    }
    return rc;
}
