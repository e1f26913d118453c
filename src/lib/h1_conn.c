/*
 * h1_conn.c - the connections of the library's HTTP/1.1 transport (h1.h):
 * which clients take it, the origin parsed once, resolving (a numeric host
 * without a lookup; a name through libevent's evdns, which reads
 * /etc/resolv.conf and /etc/hosts, its answer kept for a minute as
 * libcurl's DNS cache does), non-blocking connect over every address,
 * TLS with OpenSSL (SNI, peer and host verification, sessions resumed), and
 * the keep-alive pool. What goes over a connection is h1_exchange.c's.
 */
#include "h1.h"
#include "evtime.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Idle connections kept however long the loop is quiet, as many as one of
 * libcurl's multi handles kept (ZJUCHAT__SHARD_STREAMS); those above it
 * close after the client's shard_idle_ms (60 s), like libcurl's upper multi
 * handles. No idle connection lives longer than libcurl's maxage_conn. */
#define IDLE_KEEP ZJUCHAT__SHARD_STREAMS
#define IDLE_MAX_MS 118000
#define DNS_CACHE_MS 60000

/* ---------------------------------------------------------------- */
/* which clients, and their origin                                  */
/* ---------------------------------------------------------------- */

static int env_set(const char *name)
{
    const char *v = getenv(name);
    return v && *v;
}

/* libcurl takes a proxy from these (http_proxy only in lower case); a call
 * through a proxy stays libcurl's. */
static int proxy_in_env(int tls)
{
    if (env_set("all_proxy") || env_set("ALL_PROXY"))
        return 1;
    return tls ? env_set("https_proxy") || env_set("HTTPS_PROXY") : env_set("http_proxy");
}

static char *fixed_headers(const char *key, const char *accept, size_t *len)
{
    size_t n = strlen(key) + strlen(accept) + 128;
    char *s = malloc(n);
    if (!s)
        return NULL;
    /* The bytes and order libcurl sends for the same request. */
    int w = snprintf(s, n,
                     "User-Agent: libzjuchat/0.1\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nAccept: %s\r\n",
                     key, accept);
    *len = (size_t)w;
    return s;
}

static int numeric_addr(const char *host, int port, struct sockaddr_storage *ss,
                        socklen_t *len)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof *in4;
        return 1;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 1;
    }
    return 0;
}

/* The base URL's parts through libcurl's URL parser (never by hand). 0 when
 * this transport can serve it; a URL with a user, a query or a fragment
 * stays libcurl's. */
static int parse_origin(struct zjuchat__h1pool *pool, const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL, *query = NULL,
         *frag = NULL;
    int ok = u && !curl_url_set(u, CURLUPART_URL, url, 0) &&
             !curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) &&
             !curl_url_get(u, CURLUPART_HOST, &host, 0) &&
             !curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) &&
             curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_NO_USER &&
             curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_NO_QUERY &&
             curl_url_get(u, CURLUPART_FRAGMENT, &frag, 0) == CURLUE_NO_FRAGMENT;
    if (ok) {
        pool->tls = strcasecmp(scheme, "https") == 0;
        pool->port = atoi(port);
        size_t hl = strlen(host);
        int v6 = hl > 2 && host[0] == '[';
        pool->host = v6 ? strndup(host + 1, hl - 2) : strdup(host);
        size_t n = hl + 16;
        pool->host_header = malloc(n);
        if (pool->host_header) {
            if (pool->port == (pool->tls ? 443 : 80))
                snprintf(pool->host_header, n, "%s", host);
            else
                snprintf(pool->host_header, n, "%s:%d", host, pool->port);
        }
        /* The path starts after scheme://authority; the call's URL is the
         * base URL and its path. */
        const char *p = strstr(url, "://");
        p = p ? p + 3 : url;
        p += strcspn(p, "/");
        pool->target_off = (size_t)(p - url);
        ok = pool->host && pool->host_header && pool->port > 0 &&
             v6 == (strchr(host, ':') != NULL);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(user);
    curl_free(query);
    curl_free(frag);
    curl_url_cleanup(u);
    return ok ? 0 : -1;
}

static void on_reap(evutil_socket_t fd, short what, void *arg);

static void pool_free(struct zjuchat__h1pool *pool)
{
    while (pool->idle_head)
        zjuchat__h1conn_close(pool->idle_head);
    if (pool->reaper)
        event_free(pool->reaper);
    if (pool->dns)
        evdns_base_free(pool->dns, 0);
    if (pool->session)
        SSL_SESSION_free(pool->session);
    if (pool->ssl_ctx)
        SSL_CTX_free(pool->ssl_ctx);
    if (pool->fixed_json) {
        memset(pool->fixed_json, 0, pool->fixed_json_len);
        free(pool->fixed_json);
    }
    if (pool->fixed_stream) {
        memset(pool->fixed_stream, 0, pool->fixed_stream_len);
        free(pool->fixed_stream);
    }
    free(pool->addrs);
    free(pool->addr_lens);
    free(pool->host);
    free(pool->host_header);
    free(pool);
}

int zjuchat__h1_init(zjuchat_client *client)
{
    client->h1 = NULL;
    /* Read once per client: ZJU_UPSTREAM_ENGINE=curl keeps every call on
     * libcurl (A/B measurement, an escape hatch); =h1 puts the blocking
     * calls on this transport too (tests); unset, evented calls take it. */
    const char *engine = getenv("ZJU_UPSTREAM_ENGINE");
    if (engine && strcmp(engine, "curl") == 0)
        return 0;
    if (!client->evented && !(engine && strcmp(engine, "h1") == 0))
        return 0;
    struct zjuchat__h1pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return -1;
    pool->client = client;
    if (parse_origin(pool, client->base_url) || proxy_in_env(pool->tls)) {
        pool_free(pool); /* libcurl's */
        return 0;
    }
    pool->fixed_json =
        fixed_headers(client->api_key, "application/json", &pool->fixed_json_len);
    pool->fixed_stream =
        fixed_headers(client->api_key, "text/event-stream", &pool->fixed_stream_len);
    pool->reaper = evtimer_new(client->base, on_reap, pool);
    if (!pool->fixed_json || !pool->fixed_stream || !pool->reaper) {
        pool_free(pool);
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    if (numeric_addr(pool->host, pool->port, &ss, &sl)) {
        pool->addrs = malloc(sizeof ss);
        pool->addr_lens = malloc(sizeof sl);
        if (!pool->addrs || !pool->addr_lens) {
            pool_free(pool);
            return -1;
        }
        pool->addrs[0] = ss;
        pool->addr_lens[0] = sl;
        pool->naddrs = 1;
        pool->numeric = 1;
    }
    client->h1 = pool;
    return 0;
}

static SSL_CTX *tls_ctx(struct zjuchat__h1pool *pool);

/* Loading a CA store of Debian 12's size (145 certificates) took ~48 ms,
 * paid by each worker's first TLS call; here it is paid at start. */
void zjuchat__h1_prepare_tls(zjuchat_client *client)
{
    struct zjuchat__h1pool *pool = client->h1;
    if (pool && pool->tls && !tls_ctx(pool))
        zjuchat__tls_clear_errors();
}

void zjuchat__h1_tls_settings_changed(zjuchat_client *client)
{
    struct zjuchat__h1pool *pool = client->h1;
    if (!pool)
        return;
    if (pool->session) {
        SSL_SESSION_free(pool->session);
        pool->session = NULL;
    }
    if (pool->ssl_ctx) { /* connections hold their own reference */
        SSL_CTX_set_app_data(pool->ssl_ctx, NULL);
        SSL_CTX_free(pool->ssl_ctx);
        pool->ssl_ctx = NULL;
    }
}

void zjuchat__h1_free(zjuchat_client *client)
{
    if (client->h1)
        pool_free(client->h1);
    client->h1 = NULL;
}

/* ---------------------------------------------------------------- */
/* the pool                                                         */
/* ---------------------------------------------------------------- */

static void idle_unlink(struct zjuchat__h1conn *conn)
{
    struct zjuchat__h1pool *pool = conn->pool;
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        pool->idle_head = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    else
        pool->idle_tail = conn->prev;
    conn->prev = conn->next = NULL;
    pool->nidle--;
}

static void arm_reaper(struct zjuchat__h1pool *pool)
{
    long ms =
        pool->nidle > IDLE_KEEP ? pool->client->shard_idle_ms / 2 + 1 : IDLE_MAX_MS / 4;
    zjuchat__add_timer_ms(pool->reaper, ms);
}

/* The oldest idle connections go: above IDLE_KEEP once idle for
 * shard_idle_ms, any once idle for IDLE_MAX_MS. */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct zjuchat__h1pool *pool = arg;
    while (pool->idle_tail) {
        long age = zjuchat__ms_since(&pool->idle_tail->idle_since);
        if (age < IDLE_MAX_MS &&
            (pool->nidle <= IDLE_KEEP || age < pool->client->shard_idle_ms))
            break;
        zjuchat__h1conn_close(pool->idle_tail);
    }
    if (pool->nidle > 0)
        arm_reaper(pool);
}

void zjuchat__h1conn_release(struct zjuchat__h1conn *conn)
{
    struct zjuchat__h1pool *pool = conn->pool;
    conn->call = NULL;
    conn->state = H1_IDLE;
    conn->reused = 1;
    clock_gettime(CLOCK_MONOTONIC, &conn->idle_since);
    conn->prev = NULL;
    conn->next = pool->idle_head;
    if (pool->idle_head)
        pool->idle_head->prev = conn;
    else
        pool->idle_tail = conn;
    pool->idle_head = conn;
    pool->nidle++;
    if (!evtimer_pending(pool->reaper, NULL) || pool->nidle == IDLE_KEEP + 1)
        arm_reaper(pool);
}

/* The most recently used idle connection (its socket is the most likely to
 * be still open upstream). */
static struct zjuchat__h1conn *pool_take(struct zjuchat__h1pool *pool)
{
    struct zjuchat__h1conn *conn;
    while ((conn = pool->idle_head) != NULL) {
        idle_unlink(conn);
        if (zjuchat__ms_since(&conn->idle_since) < IDLE_MAX_MS)
            return conn;
        zjuchat__h1conn_close(conn);
    }
    return NULL;
}

/* ---------------------------------------------------------------- */
/* a connection's life                                              */
/* ---------------------------------------------------------------- */

static void close_socket(struct zjuchat__h1conn *conn)
{
    if (conn->rev) {
        event_free(conn->rev);
        conn->rev = NULL;
    }
    if (conn->wev) {
        event_free(conn->wev);
        conn->wev = NULL;
    }
    if (conn->ssl) {
        SSL_free(conn->ssl);
        conn->ssl = NULL;
    }
    if (conn->fd >= 0)
        close(conn->fd);
    conn->fd = -1;
}

void zjuchat__h1conn_close(struct zjuchat__h1conn *conn)
{
    if (conn->state == H1_IDLE)
        idle_unlink(conn);
    if (conn->dns) {
        struct evdns_getaddrinfo_request *req = conn->dns;
        conn->dns = NULL;
        evdns_getaddrinfo_cancel(req); /* its callback sees EVUTIL_EAI_CANCEL */
    }
    close_socket(conn);
    if (conn->timer)
        event_free(conn->timer);
    if (conn->failure)
        event_free(conn->failure);
    if (conn->out) {
        memset(conn->out, 0, conn->out_len); /* holds the key */
        free(conn->out);
    }
    free(conn->rbuf);
    free(conn->addrs);
    free(conn->addr_lens);
    free(conn);
}

static void on_failure(evutil_socket_t fd, short what, void *arg)
{
    struct zjuchat__h1conn *conn = arg;
    zjuchat_call *call = conn->call;
    zjuchat_error e = conn->fail;
    if (call) {
        call->h1 = NULL;
        conn->call = NULL;
    }
    zjuchat__h1conn_close(conn);
    if (call && !call->finished)
        zjuchat__attempt_ended(call, &e);
}

/* The socket closes now (the upstream sees it at once); the call hears of it
 * from the loop, never from inside a parser or a start. */
void zjuchat__h1conn_fail(struct zjuchat__h1conn *conn, zjuchat_code code,
                          zjuchat_detail detail, const char *fmt, ...)
{
    char msg[sizeof conn->fail.message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    zjuchat__error_set(&conn->fail, code, detail, "%s", msg);
    if (conn->call)
        zjuchat_redact(conn->fail.message, strlen(conn->fail.message),
                       conn->call->client->api_key);
    if (conn->dns) {
        struct evdns_getaddrinfo_request *req = conn->dns;
        conn->dns = NULL;
        evdns_getaddrinfo_cancel(req);
    }
    close_socket(conn);
    evtimer_del(conn->timer);
    event_active(conn->failure, EV_TIMEOUT, 0);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct zjuchat__h1conn *conn = arg;
    zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_TIMEOUT, ZJUCHAT_TIMEOUT_CONNECT,
                         "connecting to upstream timed out: no connection after %ld ms",
                         conn->pool->client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_CONNECT]);
}

static void tls_step(struct zjuchat__h1conn *conn);

static void on_writable(evutil_socket_t fd, short what, void *arg);

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct zjuchat__h1conn *conn = arg;
    switch (conn->state) {
    case H1_IDLE: {
        /* An idle kept-alive socket became readable: the upstream closed it
         * (or sent what nobody asked for). Either way it cannot be reused. */
        char b[64];
        ssize_t n = zjuchat__h1conn_recv(conn, b, sizeof b);
        if (n < 0 && errno == EAGAIN)
            return;
        zjuchat__h1conn_close(conn);
        return;
    }
    case H1_HANDSHAKE:
        tls_step(conn);
        return;
    case H1_WRITING:
        /* The upstream answers before it read the whole request (an early
         * error): read the answer. */
        if (conn->wev)
            event_del(conn->wev);
        conn->state = H1_READING;
        /* fall through */
    case H1_READING:
        zjuchat__h1x_on_readable(conn);
        return;
    default:
        return;
    }
}

static void connect_next(struct zjuchat__h1conn *conn);

static void connected(struct zjuchat__h1conn *conn)
{
    zjuchat_client *client = conn->pool->client;
    if (conn->wev)
        event_del(conn->wev);
    conn->connected = 1;
    client->connections_opened++;
    conn->rev =
        event_new(client->base, conn->fd, EV_READ | EV_PERSIST, on_readable, conn);
    if (!conn->rev || event_add(conn->rev, NULL)) {
        zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                             "out of memory");
        return;
    }
    if (conn->pool->tls) {
        conn->state = H1_HANDSHAKE;
        tls_step(conn);
        return;
    }
    evtimer_del(conn->timer);
    zjuchat__h1x_begin(conn);
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct zjuchat__h1conn *conn = arg;
    switch (conn->state) {
    case H1_CONNECTING: {
        int err = 0;
        socklen_t l = sizeof err;
        if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
            err = errno;
        if (err) {
            conn->last_errno = err;
            event_free(conn->wev);
            conn->wev = NULL;
            close(conn->fd);
            conn->fd = -1;
            connect_next(conn);
            return;
        }
        connected(conn);
        return;
    }
    case H1_HANDSHAKE:
        tls_step(conn);
        return;
    case H1_WRITING:
        zjuchat__h1x_send(conn);
        return;
    case H1_READING:
        if (conn->tls_want_write) /* SSL_read needs to write first */
            zjuchat__h1x_on_readable(conn);
        return;
    default:
        return;
    }
}

int zjuchat__h1conn_want_write(struct zjuchat__h1conn *conn)
{
    if (!conn->wev)
        conn->wev =
            event_new(conn->pool->client->base, conn->fd, EV_WRITE, on_writable, conn);
    return conn->wev && !event_add(conn->wev, NULL) ? 0 : -1;
}

static void connect_next(struct zjuchat__h1conn *conn)
{
    zjuchat_client *client = conn->pool->client;
    while (conn->next_addr < conn->naddrs) {
        int i = conn->next_addr++;
        struct sockaddr *sa = (struct sockaddr *)&conn->addrs[i];
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            conn->last_errno = errno;
            continue;
        }
        int one = 1, idle = 60;
        /* Over TLS the handshake's last flight and the request are two
         * writes, and Nagle's algorithm would hold the second for the
         * first's ACK. In the clear the request leaves in one sendmsg: no
         * option needed, one system call less per connection (nginx sets
         * none upstream either). */
        if (conn->pool->tls)
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        /* Probes after 60 s of silence, as libcurl's CURLOPT_TCP_KEEPALIVE:
         * they keep a NAT's or firewall's mapping alive through a long
         * silence (a 4-minute NAT, the 300 s idle timeout). The probe
         * interval (libcurl's 60 s, the kernel's 75 s) only matters for
         * declaring a peer dead, which the first-byte and idle timeouts do
         * minutes sooner: not set, one system call less. */
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
        conn->fd = fd;
        if (connect(fd, sa, conn->addr_lens[i]) == 0) {
            connected(conn);
            return;
        }
        if (errno == EINPROGRESS) {
            conn->state = H1_CONNECTING;
            conn->wev = event_new(client->base, fd, EV_WRITE, on_writable, conn);
            if (!conn->wev || event_add(conn->wev, NULL)) {
                zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                     "out of memory");
            }
            return;
        }
        conn->last_errno = errno;
        close(fd);
        conn->fd = -1;
    }
    zjuchat__h1conn_fail(
        conn, ZJUCHAT_ERR_NETWORK, ZJUCHAT_NET_CONNECT,
        "cannot connect to upstream: Failed to connect to %s port %d: %s",
        conn->pool->host, conn->pool->port, strerror(conn->last_errno));
}

static int copy_addrs(struct sockaddr_storage **addrs, socklen_t **lens, int *n,
                      const struct sockaddr_storage *from, const socklen_t *from_lens,
                      int count)
{
    free(*addrs);
    free(*lens);
    *addrs = malloc((size_t)count * sizeof **addrs);
    *lens = malloc((size_t)count * sizeof **lens);
    if (!*addrs || !*lens) {
        free(*addrs);
        free(*lens);
        *addrs = NULL;
        *lens = NULL;
        *n = 0;
        return -1;
    }
    memcpy(*addrs, from, (size_t)count * sizeof **addrs);
    memcpy(*lens, from_lens, (size_t)count * sizeof **lens);
    *n = count;
    return 0;
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    if (result == EVUTIL_EAI_CANCEL) {
        if (res)
            evutil_freeaddrinfo(res);
        return; /* the connection is gone */
    }
    struct zjuchat__h1conn *conn = arg;
    struct zjuchat__h1pool *pool = conn->pool;
    conn->dns = NULL;
    int count = 0;
    for (struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next)
        if (ai->ai_addrlen <= sizeof(struct sockaddr_storage))
            count++;
    if (result != 0 || count == 0) {
        if (res)
            evutil_freeaddrinfo(res);
        zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NETWORK, ZJUCHAT_NET_DNS,
                             "cannot resolve upstream host: Could not resolve host: %s",
                             pool->host);
        return;
    }
    struct sockaddr_storage *addrs = calloc((size_t)count, sizeof *addrs);
    socklen_t *lens = calloc((size_t)count, sizeof *lens);
    int i = 0;
    for (struct evutil_addrinfo *ai = res; ai && addrs && lens; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(struct sockaddr_storage))
            continue;
        memcpy(&addrs[i], ai->ai_addr, ai->ai_addrlen);
        lens[i++] = (socklen_t)ai->ai_addrlen;
    }
    evutil_freeaddrinfo(res);
    if (!addrs || !lens ||
        copy_addrs(&conn->addrs, &conn->addr_lens, &conn->naddrs, addrs, lens, count)) {
        free(addrs);
        free(lens);
        zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                             "out of memory");
        return;
    }
    /* Cached for the next connections (a failed copy only means no cache). */
    if (!copy_addrs(&pool->addrs, &pool->addr_lens, &pool->naddrs, addrs, lens, count))
        clock_gettime(CLOCK_MONOTONIC, &pool->resolved_at);
    free(addrs);
    free(lens);
    connect_next(conn);
}

static void resolve_and_connect(struct zjuchat__h1conn *conn)
{
    struct zjuchat__h1pool *pool = conn->pool;
    if (pool->naddrs > 0 &&
        (pool->numeric || zjuchat__ms_since(&pool->resolved_at) < DNS_CACHE_MS)) {
        if (copy_addrs(&conn->addrs, &conn->addr_lens, &conn->naddrs, pool->addrs,
                       pool->addr_lens, pool->naddrs)) {
            zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                 "out of memory");
            return;
        }
        connect_next(conn);
        return;
    }
    if (!pool->dns) {
        /* Reads /etc/resolv.conf and /etc/hosts (DNS_OPTIONS_ALL). */
        pool->dns = evdns_base_new(pool->client->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (!pool->dns) {
            zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NETWORK, ZJUCHAT_NET_DNS,
                                 "cannot resolve upstream host: no resolver for %s",
                                 pool->host);
            return;
        }
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
    char port[16];
    snprintf(port, sizeof port, "%d", pool->port);
    conn->state = H1_RESOLVING;
    /* The callback may run before this returns (a hosts entry); then
     * conn->dns must stay NULL. */
    conn->dns = (void *)1;
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(pool->dns, pool->host, port, &hints, on_resolved, conn);
    if (conn->dns == (void *)1)
        conn->dns = req;
}

static int start_fresh(zjuchat_call *call, zjuchat_error *err)
{
    zjuchat_client *client = call->client;
    struct zjuchat__h1conn *conn = calloc(1, sizeof *conn);
    if (!conn)
        return zjuchat__nomem(err), -1;
    conn->pool = client->h1;
    conn->fd = -1;
    conn->timer = evtimer_new(client->base, on_connect_timeout, conn);
    conn->failure = event_new(client->base, -1, 0, on_failure, conn);
    if (!conn->timer || !conn->failure) {
        zjuchat__h1conn_close(conn);
        return zjuchat__nomem(err), -1;
    }
    conn->call = call;
    call->h1 = conn;
    long connect_ms = client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_CONNECT];
    if (connect_ms > 0)
        zjuchat__add_timer_ms(conn->timer, connect_ms);
    resolve_and_connect(conn);
    return 0;
}

int zjuchat__h1_start(zjuchat_call *call, zjuchat_error *err)
{
    struct zjuchat__h1conn *conn = pool_take(call->client->h1);
    if (!conn)
        return start_fresh(call, err);
    conn->call = call;
    call->h1 = conn;
    zjuchat__h1x_begin(conn);
    return 0;
}

int zjuchat__h1conn_retry_stale(struct zjuchat__h1conn *conn)
{
    zjuchat_call *call = conn->call;
    if (!call || !conn->reused || conn->got_bytes)
        return -1;
    call->h1 = NULL;
    conn->call = NULL;
    zjuchat__h1conn_close(conn);
    zjuchat_error e;
    if (start_fresh(call, &e))
        zjuchat__call_finish(call, &e);
    return 0;
}

void zjuchat__h1_detach(zjuchat_call *call)
{
    struct zjuchat__h1conn *conn = call->h1;
    if (!conn)
        return;
    call->h1 = NULL;
    conn->call = NULL;
    zjuchat__h1conn_close(conn);
}

/* ---------------------------------------------------------------- */
/* TLS                                                              */
/* ---------------------------------------------------------------- */

/* TLS 1.3 hands out sessions after the handshake: keep the newest. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct zjuchat__h1pool *pool = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (!pool) /* a context dropped by a settings change: not resumed */
        return 0;
    if (pool->session)
        SSL_SESSION_free(pool->session);
    pool->session = sess;
    return 1; /* the reference is ours */
}

/* The socket under TLS: OpenSSL's own socket BIO writes with write(2), and
 * a write to a connection the upstream reset raises SIGPIPE, which kills a
 * program that did not ignore it. This one sends with MSG_NOSIGNAL, as the
 * plaintext path does. */
static int bio_write(BIO *b, const char *buf, int len)
{
    ssize_t n = send((int)(intptr_t)BIO_get_data(b), buf, (size_t)len, MSG_NOSIGNAL);
    BIO_clear_retry_flags(b);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)n;
}

static int bio_read(BIO *b, char *buf, int len)
{
    ssize_t n = recv((int)(intptr_t)BIO_get_data(b), buf, (size_t)len, 0);
    BIO_clear_retry_flags(b);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        BIO_set_retry_read(b);
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static BIO *nosignal_bio(int fd)
{
    static BIO_METHOD *method; /* one per process, never freed */
    if (!method) {
        BIO_METHOD *m =
            BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "zjuchat socket");
        if (!m || !BIO_meth_set_write(m, bio_write) || !BIO_meth_set_read(m, bio_read) ||
            !BIO_meth_set_ctrl(m, bio_ctrl)) {
            BIO_meth_free(m);
            return NULL;
        }
        method = m;
    }
    BIO *b = BIO_new(method);
    if (b) {
        BIO_set_data(b, (void *)(intptr_t)fd);
        BIO_set_init(b, 1);
    }
    return b;
}

static SSL_CTX *tls_ctx(struct zjuchat__h1pool *pool)
{
    if (pool->ssl_ctx)
        return pool->ssl_ctx;
    zjuchat_client *client = pool->client;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* Read what the socket holds, not one record's 5-byte header and then
     * its body: a record costs one recv(2), not two, and the answer's last
     * record, which usually came with the first, is decrypted in the same
     * wake-up (h1_exchange.c drains SSL_has_pending) instead of after
     * another round of the loop. The buffer is still released when empty. */
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    SSL_CTX_set_app_data(ctx, pool);
    int ok = 1;
    if (!client->insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        ok = client->ca_file ? SSL_CTX_load_verify_locations(ctx, client->ca_file, NULL)
                             : SSL_CTX_set_default_verify_paths(ctx);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (!ok) {
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    pool->ssl_ctx = ctx;
    return ctx;
}

static void tls_failed(struct zjuchat__h1conn *conn, const char *why)
{
    zjuchat__h1conn_fail(conn, ZJUCHAT_ERR_NETWORK, ZJUCHAT_NET_TLS,
                         "TLS with upstream failed: %s", why);
}

static void tls_step(struct zjuchat__h1conn *conn)
{
    struct zjuchat__h1pool *pool = conn->pool;
    if (!conn->ssl) {
        SSL_CTX *ctx = tls_ctx(pool);
        if (!ctx) {
            tls_failed(conn, pool->client->ca_file ? "cannot read the CA file"
                                                   : "cannot set up TLS");
            return;
        }
        conn->ssl = SSL_new(ctx);
        BIO *bio = conn->ssl ? nosignal_bio(conn->fd) : NULL;
        if (!bio) {
            tls_failed(conn, "cannot set up TLS");
            return;
        }
        SSL_set_bio(conn->ssl, bio, bio); /* the SSL owns it */
        struct sockaddr_storage ss;
        socklen_t sl;
        int ip = numeric_addr(pool->host, pool->port, &ss, &sl);
        if (!ip)
            SSL_set_tlsext_host_name(conn->ssl, pool->host); /* SNI: names only */
        if (!pool->client->insecure) {
            if (ip)
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(conn->ssl), pool->host);
            else
                SSL_set1_host(conn->ssl, pool->host);
        }
        if (pool->session)
            SSL_set_session(conn->ssl, pool->session);
    }
    zjuchat__tls_clear_errors();
    int r = SSL_connect(conn->ssl);
    if (r == 1) {
        if (conn->wev)
            event_del(conn->wev);
        evtimer_del(conn->timer);
        zjuchat__h1x_begin(conn);
        return;
    }
    int e = SSL_get_error(conn->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        if (conn->wev)
            event_del(conn->wev);
        return; /* rev is registered */
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        if (!conn->wev)
            conn->wev =
                event_new(pool->client->base, conn->fd, EV_WRITE, on_writable, conn);
        if (!conn->wev || event_add(conn->wev, NULL))
            tls_failed(conn, "out of memory");
        return;
    }
    char why[256];
    long vr = SSL_get_verify_result(conn->ssl);
    if (vr != X509_V_OK)
        snprintf(why, sizeof why, "certificate verification failed: %s",
                 X509_verify_cert_error_string(vr));
    else if (ERR_peek_error())
        ERR_error_string_n(ERR_get_error(), why, sizeof why);
    else
        snprintf(why, sizeof why, "handshake failed (%s)",
                 e == SSL_ERROR_SYSCALL ? "connection closed" : "protocol error");
    ERR_clear_error();
    tls_failed(conn, why);
}

/* recv(2) or SSL_read: > 0 bytes, 0 at the end, -1 with errno (EAGAIN:
 * nothing now; for TLS a wanted write has been asked for). */
ssize_t zjuchat__h1conn_recv(struct zjuchat__h1conn *conn, char *buf, size_t cap)
{
    if (!conn->ssl)
        return recv(conn->fd, buf, cap, 0);
    zjuchat__tls_clear_errors();
    conn->tls_want_write = 0;
    int n = SSL_read(conn->ssl, buf, (int)(cap > 1 << 30 ? 1 << 30 : cap));
    if (n > 0)
        return n;
    switch (SSL_get_error(conn->ssl, n)) {
    case SSL_ERROR_WANT_READ:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE: /* a renegotiation or key update */
        conn->tls_want_write = 1;
        zjuchat__h1conn_want_write(conn);
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || n == 0)
            return 0; /* closed without close_notify: the end */
        return -1;
    default:
        ERR_clear_error();
        errno = EPROTO;
        return -1;
    }
}
