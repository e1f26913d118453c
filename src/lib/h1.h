/*
 * h1.h - the library's own HTTP/1.1 upstream transport for the evented
 * calls (never installed), in place of libcurl's general-purpose engine on
 * the hot path. Who owns what:
 *   h1_conn.c      connections: the origin parsed once per client, name
 *                  resolution (numeric hosts directly, names through evdns
 *                  with a short cache), non-blocking connect, TLS with
 *                  OpenSSL, the per-client keep-alive pool (idle cap, idle
 *                  timeout, an idle socket the upstream closed is dropped)
 *   h1_exchange.c  one request and its answer on a connection: the request
 *                  in one send, the answer parsed with libhttp-parser and
 *                  fed to reply.c (the same steps libcurl's callbacks take),
 *                  pause as backpressure, the end of the exchange
 * The call's lifecycle stays call.c's, and its re-entrancy rule (call.h)
 * holds here too: user callbacks run inside the parser, so the call being
 * read is only ended once the parser has returned.
 */
#ifndef ZJUCHAT_H1_H
#define ZJUCHAT_H1_H

#include "call.h"

#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <time.h>

enum h1_state {
    H1_RESOLVING,
    H1_CONNECTING,
    H1_HANDSHAKE, /* TLS */
    H1_WRITING,
    H1_READING,
    H1_IDLE /* in the pool */
};

struct zjuchat__h1conn {
    struct zjuchat__h1pool *pool;
    zjuchat_call *call; /* NULL while idle */
    enum h1_state state;
    int fd;
    SSL *ssl;
    int tls_want_write;    /* the handshake or a read waits for writability */
    struct event *rev;     /* EV_READ|EV_PERSIST, registered from connect to close */
    struct event *wev;     /* EV_WRITE: connect, handshake, a request that did not fit */
    struct event *timer;   /* connect timeout */
    struct event *failure; /* delivers a failure found inside zjuchat__h1_start */
    zjuchat_error fail;
    struct zjuchat__h1conn *prev, *next; /* idle list */
    struct timespec idle_since;
    int reused;    /* carried an exchange before this one */
    int connected; /* counted in connections_opened */
    struct evdns_getaddrinfo_request *dns;
    struct sockaddr_storage *addrs; /* what the host resolved to */
    socklen_t *addr_lens;
    int naddrs, next_addr;
    int last_errno;

    /* The exchange. */
    http_parser parser;
    char *out; /* request head (and, over TLS, body) */
    size_t out_len, out_sent, body_sent;
    char *rbuf;
    size_t rlen, rpos; /* rbuf[rpos..rlen) read, not yet parsed (paused) */
    int got_bytes;     /* some byte of the answer came */
    int complete, keep_alive;
    const char *bad; /* why a reply the parser took is refused */
    int in_value;
    char hname[32];
    size_t hname_len;
    char hval[256];
    size_t hval_len;
    int hval_cut;
};

/* One origin per client (its base URL): the pool is keyed by it. */
struct zjuchat__h1pool {
    zjuchat_client *client;
    int tls;
    char *host;        /* for resolving, without IPv6 brackets */
    char *host_header; /* Host: as libcurl sends it */
    int port;
    size_t target_off; /* the request target starts at url + target_off */
    /* A numeric host, or a name's answer for a short while. */
    struct sockaddr_storage *addrs;
    socklen_t *addr_lens;
    int naddrs;
    struct timespec resolved_at;
    int numeric;
    struct evdns_base *dns;
    SSL_CTX *ssl_ctx;
    SSL_SESSION *session;            /* the last one, offered on the next connection */
    char *fixed_json, *fixed_stream; /* User-Agent .. Accept, CRLF-ended */
    size_t fixed_json_len, fixed_stream_len;
    struct zjuchat__h1conn *idle_head, *idle_tail;
    int nidle;
    struct event *reaper;
};

/* h1_conn.c */
/* Whether the client's calls take this transport (ZJU_UPSTREAM_ENGINE, a
 * proxy from the environment, the base URL); sets client->h1 when so.
 * 0, or -1 on OOM. */
int zjuchat__h1_init(zjuchat_client *client);
void zjuchat__h1_free(zjuchat_client *client);
/* For an https origin, build the TLS context (and load its CA store) now,
 * so that the first call does not wait for it; a failure is left to the
 * first connection, which reports it. */
void zjuchat__h1_prepare_tls(zjuchat_client *client);
/* The CA file or the insecure setting changed: the context built from the
 * old ones, and the session it resumed, are dropped (built again at the next
 * connection; a session made without verification is never resumed with it). */
void zjuchat__h1_tls_settings_changed(zjuchat_client *client);
/* Start the call's attempt: a pooled connection, else a new one. Failures
 * reach the call from the loop, never from in here; -1 only on OOM. */
int zjuchat__h1_start(zjuchat_call *call, zjuchat_error *err);
/* The call no longer wants its connection: closed (an exchange that did
 * not end cleanly is never reused). */
void zjuchat__h1_detach(zjuchat_call *call);
void zjuchat__h1_pause(zjuchat_call *call);
void zjuchat__h1_resume(zjuchat_call *call);
/* Internal to the two files. */
void zjuchat__h1conn_close(struct zjuchat__h1conn *conn);
void zjuchat__h1conn_release(struct zjuchat__h1conn *conn); /* to the pool */
/* The attempt failed on conn: close it, tell the call (from the loop). */
void zjuchat__h1conn_fail(struct zjuchat__h1conn *conn, zjuchat_code code,
                          zjuchat_detail detail, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A kept-alive connection the upstream had closed: start the call again
 * on a new one (once, only when nothing of the answer came). 0 when done. */
int zjuchat__h1conn_retry_stale(struct zjuchat__h1conn *conn);
ssize_t zjuchat__h1conn_recv(struct zjuchat__h1conn *conn, char *buf, size_t cap);
/* Before an SSL_* call whose failure SSL_get_error will judge: the thread's
 * OpenSSL error queue must be empty, or a stale entry (from libcurl, say)
 * turns a WANT_READ into a fatal error. ERR_clear_error empties all 16
 * slots every time (~840 instructions, 3 calls per request); the peek
 * costs ~200 (callgrind), and the queue is nearly always empty already. */
static inline void zjuchat__tls_clear_errors(void)
{
    if (ERR_peek_error())
        ERR_clear_error();
}
/* Wake the exchange when the socket becomes writable. 0, or -1 on OOM. */
int zjuchat__h1conn_want_write(struct zjuchat__h1conn *conn);

/* h1_exchange.c */
/* The connection is up: send the call's request and read the answer. */
void zjuchat__h1x_begin(struct zjuchat__h1conn *conn);
/* Write what is left of the request (the socket became writable). */
void zjuchat__h1x_send(struct zjuchat__h1conn *conn);
/* The socket became readable while an exchange runs (or was resumed). */
void zjuchat__h1x_on_readable(struct zjuchat__h1conn *conn);

#endif
