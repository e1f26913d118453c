/*
 * Internals of zju-mock-upstream, a fake ZJU Chat API (OpenAI-compatible) that
 * every test and benchmark of the project runs against. The mock is a standalone
 * program: one process owns one event_base and all state below, so nothing here
 * is thread-safe, and the process-wide state lives in the single global `mock`.
 */
#ifndef ZJU_MOCK_H
#define ZJU_MOCK_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <openssl/ssl.h>

/* Faults a request can ask for (bitmask in mock_directives.faults). */
enum {
    MOCK_FAULT_HANG_HEADERS = 1 << 0,
    MOCK_FAULT_HANG_MID = 1 << 1,
    MOCK_FAULT_DROP_MID = 1 << 2,
    MOCK_FAULT_RST_MID = 1 << 3,
    MOCK_FAULT_GARBAGE = 1 << 4,
    MOCK_FAULT_NO_DONE = 1 << 5,
    MOCK_FAULT_TRUNCATE = 1 << 6,
    MOCK_FAULT_NOT_SSE = 1 << 7,
    MOCK_FAULT_ENDLESS_LINE = 1 << 8,
    MOCK_FAULT_BIG_ERROR = 1 << 9,
    MOCK_FAULT_CRLF = 1 << 10,
};
#define MOCK_FAULT_MID (MOCK_FAULT_HANG_MID | MOCK_FAULT_DROP_MID | MOCK_FAULT_RST_MID)

enum { MOCK_BODY_JSON = 0, MOCK_BODY_HTML = 1, MOCK_BODY_EMPTY = 2 };

/* The answer's text (directive text=): the default mixed-script pieces; Markdown
 * with raw HTML, scripts and javascript: links (a page must render it inert);
 * reasoning inline in content as <think>...</think>, its tags split across
 * deltas (as some deployments send it); plain Markdown (a list, code). */
enum {
    MOCK_TEXT_MOCK = 0,
    MOCK_TEXT_HOSTILE = 1,
    MOCK_TEXT_THINK = 2,
    MOCK_TEXT_MARKDOWN = 3
};

/*
 * Per-request behaviour. Every field is -1 when "not set at this layer", so the
 * layers (global config, X-Mock header, '#' model suffix) merge field by field.
 */
struct mock_directives {
    int events;      /* content deltas */
    int reasoning;   /* reasoning deltas (reasoning models only) */
    int delay_ms;    /* between events */
    int think_ms;    /* before the status line */
    int first_ms;    /* between a stream's head and its first event */
    int status;      /* answer this error status instead */
    int body;        /* MOCK_BODY_* of an error answer */
    int retry_after; /* seconds, Retry-After header of an error answer */
    int echo_key;    /* 1: error message contains the Authorization value */
    int after;       /* events sent before a *_mid fault strikes */
    int split;       /* write each event in pieces of this many bytes */
    int faults;      /* MOCK_FAULT_* bitmask */
    int text;        /* MOCK_TEXT_*: which answer text the deltas take */
};

/* Sets every field to -1 (unset). */
void mock_directives_clear(struct mock_directives *d);

/* Copies the fields that are set in src over dst. */
void mock_directives_merge(struct mock_directives *dst,
                           const struct mock_directives *src);

/*
 * Parses "key=value,key=value" (len bytes of s) into d. Returns 0, or -1 with a
 * message in err for an unknown key or a bad value.
 */
int mock_directives_parse(const char *s, size_t len, struct mock_directives *d, char *err,
                          size_t errlen);

/* Sets one directive from its textual key and value. Returns 0 or -1 + err. */
int mock_directives_set(struct mock_directives *d, const char *key, const char *val,
                        char *err, size_t errlen);

/* New JSON object describing d (unset fields omitted). NULL on out of memory. */
json_t *mock_directives_to_json(const struct mock_directives *d);

/* Counters served by GET /_mock/stats (per process, like the config). */
struct mock_stats {
    uint64_t connections_accepted;
    uint64_t connections_open;
    uint64_t connections_closed_by_client;
    uint64_t requests;
    uint64_t chat_requests;
    uint64_t embedding_requests;
    uint64_t models_requests; /* GET .../models and .../models/{id} */
    uint64_t streams_active;
    uint64_t streams_completed;
    int64_t last_close_ms;
};

struct mock_req;

/* One accepted connection, known from its bufferevent until evhttp frees it. */
struct mock_conn {
    struct bufferevent *bev;
    struct evhttp_connection *evcon; /* NULL until adopted */
    int fd;
    struct mock_req *cur;   /* API request being answered, or NULL */
    struct mock_conn *next; /* in mock.pending until adopted */
};

/* An API request (chat, embeddings, models) from arrival until its answer is
 * sent or its connection dies. */
struct mock_req {
    struct mock_conn *conn;
    struct evhttp_request *req;
    struct mock_directives d; /* resolved: every field set */
    int is_stream;
    int reasoning_model;
    char *model_json; /* model name as a quoted JSON string */
    char *auth;       /* Authorization header value (for echo_key), may be NULL */
    unsigned long long id;
    long long created;
    int prompt_tokens;
    int include_usage;        /* stream_options.include_usage: a usage chunk */
    int kind;                 /* MOCK_KIND_* */
    int status;               /* for MOCK_KIND_REPLY */
    const char *ctype;        /* for MOCK_KIND_REPLY */
    struct evbuffer *body;    /* for MOCK_KIND_REPLY and the partial non-stream */
    int item;                 /* next item of the sequence */
    int events_sent;          /* real SSE events written so far */
    size_t bytes_sent;        /* for endless_line */
    struct evbuffer *pending; /* bytes of the current item not yet written */
    struct event *timer;
    int timer_why;       /* MOCK_T_* */
    struct event *watch; /* peer-close watch before the answer starts */
    int started;         /* status line sent (reply_start or reply) */
    int replied;         /* evhttp owns the request now (reply or reply_end) */
    int waiting_drain;
    int closing;        /* 0, MOCK_CLOSE_FIN or MOCK_CLOSE_RST */
    int self_close;     /* the mock itself closes: not a client close */
    int counted_stream; /* counted in streams_active */
};

enum {
    MOCK_KIND_REPLY,
    MOCK_KIND_STREAM,
    MOCK_KIND_PARTIAL,
    MOCK_KIND_ENDLESS,
    MOCK_KIND_HANG
};
enum { MOCK_T_THINK, MOCK_T_DELAY, MOCK_T_SPLIT, MOCK_T_CLOSE, MOCK_T_FIRST };
enum { MOCK_CLOSE_FIN = 1, MOCK_CLOSE_RST = 2 };

/* How GET .../models answers (POST /_mock/config {"models": ...}). */
enum {
    MOCK_MODELS_LIST = 0, /* the model list */
    MOCK_MODELS_EMPTY,    /* an empty list; every .../models/{id} is 404 */
    MOCK_MODELS_HANG,     /* never answers */
    MOCK_MODELS_GARBAGE,  /* 200, application/json, a body that is not JSON */
    MOCK_MODELS_STATUS    /* an OpenAI-shaped error with models_status */
};

struct mock_models_ctl {
    int mode;     /* MOCK_MODELS_* */
    int status;   /* for MOCK_MODELS_STATUS */
    int think_ms; /* before the answer */
};

/* Model capabilities (bitmask of mock_model_caps). */
enum {
    MOCK_CAP_CHAT = 1 << 0,
    MOCK_CAP_VISION = 1 << 1, /* image_url parts in chat messages */
    MOCK_CAP_EMBED = 1 << 2,
    MOCK_CAP_RERANK = 1 << 3, /* listed, but served by neither route */
};

/* The whole state of one mock process. */
struct mock_server {
    struct event_base *base;
    struct evhttp *http;
    SSL_CTX *ssl_ctx; /* NULL: plain HTTP */
    const char *key;  /* NULL: any non-empty Bearer key */
    int quiet;
    struct mock_directives cli;    /* command-line defaults, every field set */
    struct mock_directives global; /* cli + POST /_mock/config */
    int fail_next;
    int fail_status;
    struct mock_models_ctl models;
    unsigned long long next_id;
    struct mock_stats stats;
    char *last; /* JSON text of the last chat or embeddings request, or NULL */
    struct event *adopt_ev;
    struct mock_conn *pending; /* accepted, not yet adopted */
    struct mock_conn **conns;  /* indexed by fd */
    int nconns;
};

extern struct mock_server mock;

/* Monotonic milliseconds. */
int64_t mock_now_ms(void);

/* conn.c: bevcb for evhttp; creates the bufferevent and counts the connection. */
struct bufferevent *mock_conn_bevcb(struct event_base *base, void *arg);
/* conn.c: adopts connections accepted in this loop iteration (close callbacks). */
void mock_conn_adopt(evutil_socket_t fd, short what, void *arg);
/* conn.c: the mock_conn of a request's connection, or NULL. */
struct mock_conn *mock_conn_of(struct evhttp_request *req);
/* conn.c: closes the request's connection now (FIN or RST); frees m. */
void mock_conn_close(struct mock_req *m, int how);
/* conn.c: watches the peer for a close while no answer is started. */
void mock_req_watch(struct mock_req *m, int on);
/* conn.c: frees m and its events (not the evhttp request). */
void mock_req_free(struct mock_req *m);

/* http.c: routes every request. */
void mock_http_route(struct evhttp_request *req, void *arg);
/* http.c: sends an OpenAI-style JSON error now. code may be NULL. */
void mock_send_error(struct evhttp_request *req, int status, const char *type,
                     const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* http.c: 1 if the request carries an acceptable "Authorization: Bearer KEY". */
int mock_auth_ok(struct evhttp_request *req);
/* http.c: the standard reason phrase of an HTTP status. */
const char *mock_reason(int status);

/* models.c: capabilities of a model the mock serves (any "mock-*" can do
 * everything), 0 for an unknown model. */
int mock_model_caps(const char *name);
/* models.c: handles GET .../models (id NULL) and GET .../models/{id}. */
void mock_models_handle(struct evhttp_request *req, const char *id);
/* models.c: applies one /_mock/config key to c: 0 done, -1 bad value (err),
 * 1 not a models key. */
int mock_models_set(struct mock_models_ctl *c, const char *key, const char *val,
                    char *err, size_t errlen);
/* models.c: adds the models control to the config object o. */
void mock_models_to_json(const struct mock_models_ctl *c, json_t *o);

/* request.c: a record for req, freed when evhttp is done with it; NULL (after
 * a 500 answer) on out of memory. */
struct mock_req *mock_req_new(struct evhttp_request *req);
/* request.c: keeps the request as JSON text for GET /_mock/last. */
void mock_record_last(struct evhttp_request *req, const char *body, size_t len);
/* request.c: the front of every API POST: splits "model#directives" (the name
 * into model[modellen]; *model_is_str says whether "model" was a string),
 * resolves the directives and plans the answers that come before validation
 * (hang, 401, injected failures, 415, a body that is not a JSON object).
 * Returns 0 when the caller plans the answer, -1 when it is planned. */
int mock_req_front(struct mock_req *m, json_t *o, char *model, size_t modellen,
                   int *model_is_str);
/* request.c: plans an OpenAI-style error {"error":{message,type,param,code}}
 * (or the html/empty body the directives ask). code and param may be NULL. */
void mock_plan_error(struct mock_req *m, int status, const char *type, const char *code,
                     const char *param, const char *msg);
/* request.c: plans a 200 JSON answer of body (owned now); a *_mid fault cuts it. */
void mock_plan_ok(struct mock_req *m, struct evbuffer *body);
/* request.c: mock_plan_ok of v serialized (v is stolen, NULL: out of memory). */
void mock_plan_json(struct mock_req *m, json_t *v);
/* request.c: the error type OpenAI uses for an HTTP status. */
const char *mock_status_type(int status);
/* request.c: starts the planned answer: hang, think first, or answer now. */
void mock_req_start(struct mock_req *m);

/* chat.c: handles POST .../chat/completions. */
void mock_chat_handle(struct evhttp_request *req);
/* messages.c: checks a chat request's "messages" (content a string or an
 * array of text / image_url parts); NULL if valid, else the error code with
 * a message in msg. vision: the model takes image_url parts. */
const char *mock_messages_check(json_t *msgs, int vision, char *msg, size_t msglen);
/* messages.c: prompt tokens of valid messages: per message 4 + ceil(bytes of
 * its text / 4), the text being the content string or its text parts. */
int mock_messages_tokens(json_t *msgs);
/* embeddings.c: handles POST .../embeddings. */
void mock_embeddings_handle(struct evhttp_request *req);

/* content.c: deterministic answer text; text is a MOCK_TEXT_*. The pieces of
 * the default text need no JSON escaping, the others may. */
const char *mock_content_delta(int text, int i);
const char *mock_reasoning_delta(int i);
/* New string: concatenation of the first n deltas. NULL on out of memory. */
char *mock_content_join(int text, int n, int reasoning);

/* stream.c: starts the planned answer of m (after think). */
void mock_req_answer(struct mock_req *m);
/* stream.c: arms m's single timer. */
void mock_req_arm(struct mock_req *m, int why, int ms);

#endif
