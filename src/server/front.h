/*
 * front.h - the server's HTTP/1.x front: accepts connections on a listening
 * socket, parses requests with http-parser (Debian's libhttp-parser-dev),
 * hands each complete request to one handler, and writes its reply. It
 * replaces evhttp, whose request/reply machinery could not answer a body
 * over the limit before reading it (see docs/STACK.md, "The front").
 *
 * One connection carries one request at a time; pipelined requests wait in
 * the input buffer until the reply before them is written. What the front
 * does by itself, so that no handler has to:
 *   - limits: header bytes (431), body bytes (413, decided from
 *     Content-Length before the body is read, answered at once to
 *     "Expect: 100-continue"), a whole-request deadline from the accept or
 *     the previous reply to the end of the request (slow clients are cut);
 *   - keep-alive as http_should_keep_alive says, HTTP/1.0 replies
 *     close-delimited when streamed, HEAD without a body;
 *   - noticing a client that leaves while its request is handled (the
 *     socket is read all along), and telling the handler (on_gone);
 *   - closing lingering, as nginx does: after a reply on a connection that
 *     ends, our side is shut down and what the client still sends is read
 *     and discarded until it closes, so the reply is not destroyed by a
 *     reset;
 *   - protocol errors answered through the error hook, so they carry the
 *     routes' error shape and CORS headers.
 *
 * Ownership: the front owns connections and requests. A handler may keep a
 * srv_request pointer until it ends the reply (srv_req_reply or
 * srv_req_end) or until its on_gone callback ran, whichever is first.
 * Single-threaded: every call from the thread of the event_base.
 */
#ifndef SRV_FRONT_H
#define SRV_FRONT_H

#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct evbuffer;

typedef struct srv_front srv_front;
typedef struct srv_request srv_request;

typedef struct srv_front_limits {
    size_t max_header_bytes; /* request line and headers */
    size_t max_body_bytes;   /* 413 above */
    long request_timeout_s;  /* accept (or end of the last reply) to end of request */
} srv_front_limits;

/* A complete request. The handler must answer it (now or later). */
typedef void (*srv_request_cb)(srv_request *req, void *arg);

/* The front must answer `status` itself (400, 413, 431, 417, 505) with
 * message `msg`: the hook writes the reply with srv_req_reply. */
typedef void (*srv_error_cb)(srv_request *req, int status, const char *msg, void *arg);

/* NULL on allocation failure. */
srv_front *srv_front_new(struct event_base *base, const srv_front_limits *lim,
                         srv_request_cb on_request, srv_error_cb on_error, void *arg);
/* Accept on listen_fd (already listening; the front owns it from now on).
 * -1 on failure. */
int srv_front_listen(srv_front *f, int listen_fd);
/* Stop accepting and close the listening socket; close connections that
 * are idle between requests; replies still to come say Connection: close. */
void srv_front_drain(srv_front *f);
/* Close every connection (handlers whose requests are open see on_gone). */
void srv_front_free(srv_front *f);
/* Requests handed to the handler (or refused) whose reply is not yet
 * written to the kernel and whose connection is still there. */
long srv_front_open_requests(const srv_front *f);
/* Called each time that number goes down (a reply written, or its
 * connection gone): the drain waits for zero. */
void srv_front_on_request_done(srv_front *f, void (*cb)(void *arg));

/* ---- the request ---- */
const char *srv_req_method(const srv_request *r); /* "GET", "POST", ... */
int srv_req_is(const srv_request *r, const char *method);
const char *srv_req_uri(const srv_request *r);  /* as sent */
const char *srv_req_path(const srv_request *r); /* the URI without query or fragment */
/* First value of a header (case-insensitive name), NULL when absent. */
const char *srv_req_header(const srv_request *r, const char *name);
/* Every value of a header joined with ',' (RFC 9110 5.3), a new string to
 * free(), NULL when absent or out of memory. */
char *srv_req_header_joined(const srv_request *r, const char *name);
const char *srv_req_body(const srv_request *r, size_t *len);
const struct sockaddr *srv_req_peer(const srv_request *r);
/* The peer as "addr:port" ("[addr]:port" for IPv6). */
const char *srv_req_peer_text(const srv_request *r);

/* ---- the reply ---- */
/* Add a reply header (copied). Before srv_req_reply / srv_req_start. */
void srv_req_add_header(srv_request *r, const char *name, const char *value);
/* The whole reply with a Content-Length. Ends the request for the handler. */
void srv_req_reply(srv_request *r, int status, const char *body, size_t len);
/* A streamed reply: chunked to HTTP/1.1 clients, close-delimited to HTTP/1.0
 * ones. Then srv_req_write and srv_req_end. The head is held until the first
 * piece, srv_req_flush or srv_req_end, so that it leaves with the first
 * piece when one follows at once: a caller that has none now calls
 * srv_req_flush before it returns to the loop. */
void srv_req_start(srv_request *r, int status);
/* Send what srv_req_start holds (nothing else is held while streaming). */
void srv_req_flush(srv_request *r);
/* One piece of a streamed reply (copied where the socket does not take it
 * at once; an empty piece is ignored). */
void srv_req_write(srv_request *r, const char *data, size_t len);
/* End a streamed reply. Ends the request for the handler. */
void srv_req_end(srv_request *r);
/* Reply bytes not yet taken by the kernel. */
size_t srv_req_output_pending(const srv_request *r);
/* Seconds a streamed reply may wait for the client to take any byte before
 * the connection is dropped (on_gone runs). */
void srv_req_set_write_timeout(srv_request *r, long seconds);

/*
 * Callbacks while the handler holds the request:
 *   on_gone: the client closed or reset its connection (or stopped reading
 *            past the write timeout) before the reply ended. The request is
 *            freed right after the call: drop the pointer.
 *   on_drained: the output fell below half of `high_water` after having been
 *            above it (backpressure: resume the producer).
 */
typedef void (*srv_gone_cb)(srv_request *r, void *arg);
typedef void (*srv_drained_cb)(srv_request *r, void *arg);
void srv_req_watch(srv_request *r, srv_gone_cb on_gone, srv_drained_cb on_drained,
                   size_t high_water, void *arg);

#endif
