/*
 * fuzz_http.c - libFuzzer driver for the server's HTTP front as a whole:
 * the input is written as raw bytes on a loopback TCP connection to a
 * worker running in this process (the front's http-parser, the pipeline and
 * its routes: /healthz, CORS preflight, /api/chat and /v1 validation, the
 * relay's error replies).
 *
 * The worker is built by the server's own code (srv_worker_setup, worker.h:
 * same front limits, same handlers) and bound to 127.0.0.1 on an ephemeral
 * port. Its upstream is 127.0.0.1:1, which
 * refuses at once (retries off), so a valid chat request costs one refused
 * connect and ends in the JSON 503 path. The client side writes the input,
 * shuts its write side and reads until the server closes.
 *
 * Checked: the server closes every connection after the client's EOF (no
 * hang), whatever it sends starts like an HTTP reply, and no upstream
 * call is left counted once the connection is gone.
 */
#include "listeners.h"
#include "worker.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zjuchat.h>

#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>

#define HANG_S 5 /* far beyond a refused connect; far below -timeout */
#define REPLY_CAP (1 << 20)

static srv_config cfg;
static srv_worker w;
static struct sockaddr_in addr;

typedef struct {
    int fd;
    int done, hung;
    size_t got;
    char head[16]; /* first bytes of the reply */
} conn;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_http: invariant broken: %s\n", what);
    /* run.sh closes stderr for this target (access log): leave the reason
     * next to the crash input too. */
    FILE *f = fopen("fuzz_http.why", "a");
    if (f) {
        fprintf(f, "invariant broken: %s\n", what);
        fclose(f);
    }
    abort();
}

static void on_client_read(evutil_socket_t fd, short what, void *arg)
{
    conn *c = arg;
    char buf[16384];
    if (what & EV_TIMEOUT) {
        c->hung = c->done = 1;
        event_base_loopbreak(w.base);
        return;
    }
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
        size_t keep = c->got < sizeof c->head ? sizeof c->head - c->got : 0;
        if (keep > (size_t)n)
            keep = (size_t)n;
        if (keep > 0) /* c->head + c->got is out of bounds past 16 bytes */
            memcpy(c->head + c->got, buf, keep);
        c->got += (size_t)n;
        if (c->got > REPLY_CAP)
            die("reply larger than any the server should send");
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    c->done = 1; /* EOF or reset: the server let go of the connection */
    event_base_loopbreak(w.base);
}

static void init(void)
{
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.host, sizeof cfg.host, "127.0.0.1");
    cfg.port = 0;
    cfg.workers = 1;
    cfg.api_key = "sk-fuzzkey0123456789";
    cfg.default_embedding_model = "bge-m3"; /* as srv_config_from_env sets it */
    cfg.base_url = "http://127.0.0.1:1/v1";
    cfg.cors_origins = "https://a.example, https://b.example";
    cfg.connect_ms = 500;
    cfg.first_byte_ms = 1000;
    cfg.idle_ms = 1000;
    cfg.total_ms = 2000;
    cfg.heartbeat_ms = 15000;
    cfg.max_body = 2048; /* small, so the 413 paths are reachable */
    cfg.max_headers = 4096;
    cfg.max_connections = 4096;
    cfg.drain_timeout_s = 30;
    cfg.request_timeout_s = 30;
    memset(&w, 0, sizeof w);
    w.cfg = &cfg;
    signal(SIGPIPE, SIG_IGN);
    /* The worker accepts on a socket the supervisor opened (listeners.c). */
    if (srv_listeners_open(&cfg, &w.listen_fd, 1) < 0)
        die("cannot open the listening socket");
    if (srv_worker_setup(&w) < 0)
        die("worker setup failed");
    zjuchat_client_set_retries(w.client, 0, 1);
    socklen_t al = sizeof addr;
    if (getsockname(w.listen_fd, (struct sockaddr *)&addr, &al))
        die("getsockname");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!w.base)
        init();
    conn c;
    memset(&c, 0, sizeof c);
    /* Hundreds of thousands of loopback connections exhaust the ephemeral
     * ports (TIME_WAIT): a failed connect is the harness's limit, not the
     * server's, so wait for ports to free up and try again. */
    for (int attempt = 0;; attempt++) {
        c.fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c.fd >= 0 && connect(c.fd, (struct sockaddr *)&addr, sizeof addr) == 0)
            break;
        if (c.fd >= 0)
            close(c.fd);
        if (attempt == 200)
            die("connect to the worker");
        usleep(50 * 1000);
    }
    /* The input fits the loopback buffers, so a blocking write never waits
     * for the (same-thread) server. */
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(c.fd, data + off, size - off);
        if (n <= 0)
            break; /* the server may close early (limits): not an error */
        off += (size_t)n;
    }
    shutdown(c.fd, SHUT_WR);
    evutil_make_socket_nonblocking(c.fd);
    struct event *ev = event_new(w.base, c.fd, EV_READ | EV_PERSIST, on_client_read, &c);
    struct timeval tv = {HANG_S, 0};
    event_add(ev, &tv);
    while (!c.done)
        event_base_dispatch(w.base);
    event_free(ev);
    /* Reset instead of FIN: no TIME_WAIT left on the client's port. */
    struct linger lg = {1, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c.fd);
    if (c.hung)
        die("server kept the connection open after the client's EOF");
    /* The front answers in HTTP/1.0 or HTTP/1.1 (its error replies too), so only
     * the protocol name is checked. */
    if (c.got > 0 && strncmp(c.head, "HTTP/", c.got < 5 ? c.got : 5) != 0)
        die("reply does not start with HTTP/");
    /* Let the server finish its side (close callbacks, cancelled calls). */
    for (int i = 0; i < 4; i++)
        event_base_loop(w.base, EVLOOP_NONBLOCK);
    if (w.calls != 0)
        die("an upstream call outlived its client connection");
    return 0;
}
