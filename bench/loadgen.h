/* Internals shared by the files of zju-loadgen, the streaming load generator:
 * a latency histogram, an incremental HTTP/1.1 response parser that counts SSE
 * events, and the options/statistics the connection driver and main() share. */
#ifndef ZJU_LOADGEN_H
#define ZJU_LOADGEN_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

/* Log-linear histogram of microsecond values: 32 sub-buckets per power of two,
 * so any percentile is within about 3% of the true value, in fixed memory. */
#define LG_HIST_SUB 32
#define LG_HIST_BUCKETS (LG_HIST_SUB + 40 * LG_HIST_SUB)

struct lg_hist {
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint32_t b[LG_HIST_BUCKETS];
};

void lg_hist_add(struct lg_hist *h, uint64_t us);
/* Value at percentile p (0..100), in microseconds; 0 when empty. */
uint64_t lg_hist_pct(const struct lg_hist *h, double p);
/* Writes the non-empty buckets as [[upper bound us, count], ...] to f. */
void lg_hist_print_json(const struct lg_hist *h, FILE *f);

/* Parser states, in the order a response goes through them. */
enum lg_rstate {
    LG_R_STATUS,
    LG_R_HEADERS,
    LG_R_CHUNK_SIZE,
    LG_R_CHUNK_DATA,
    LG_R_CHUNK_CRLF,
    LG_R_TRAILERS,
    LG_R_LENGTH,
    LG_R_UNTIL_EOF,
    LG_R_DONE,
    LG_R_ERROR,
};

/* Header and chunk-size lines longer than this are a protocol error: the
 * parser never grows a buffer. */
#define LG_LINE_CAP 4096

/* One response being parsed. Zero it (lg_resp_reset) before each response. */
struct lg_resp {
    enum lg_rstate state;
    int status;
    int is_sse;     /* Content-Type: text/event-stream */
    int chunked;    /* Transfer-Encoding: chunked */
    int conn_close; /* the connection cannot be reused after this response */
    int64_t content_length;
    uint64_t left; /* bytes left in the current chunk or the whole body */
    uint64_t body_bytes;
    const char *error; /* set with LG_R_ERROR: why */
    /* line accumulator for the status line, headers and chunk sizes */
    size_t llen;
    char line[LG_LINE_CAP];
    /* SSE state: only the head of each line matters for counting */
    size_t sse_len;
    char sse_head[16];
    char sse_last;
    int ev_has_data;
    int ev_is_done;
    uint32_t events;      /* complete events carrying data, [DONE] excluded */
    uint32_t done_events; /* events whose data was exactly [DONE] */
};

void lg_resp_reset(struct lg_resp *r);
/* Feeds n bytes; returns how many were consumed (fewer than n only once the
 * response is complete or in error). */
size_t lg_resp_feed(struct lg_resp *r, const char *p, size_t n);
/* Tells the parser the peer closed the connection: completes a body that ends
 * at close, otherwise turns the response into an error. */
void lg_resp_eof(struct lg_resp *r);
/* 1 if the SSE body ended in the middle of an event or line. */
int lg_resp_partial_event(const struct lg_resp *r);

/* Why a stream failed; the names are printed in the report. */
enum lg_fail {
    LG_F_CONNECT,
    LG_F_STATUS,
    LG_F_CTYPE,
    LG_F_EVENTS,
    LG_F_DONE,
    LG_F_UNCLEAN,
    LG_F_PROTOCOL,
    LG_F_TIMEOUT,
    LG_F_CUT,
    LG_F_COUNT,
};
extern const char *const lg_fail_names[LG_F_COUNT];

/* What to run, from the command line. */
struct lg_opts {
    const char *host;
    int port;
    const char *path;
    int concurrency;
    uint64_t count;     /* total streams; 0 = until the duration ends */
    double duration;    /* seconds; 0 = until count streams are done */
    long expect_events; /* -1 = any number */
    int allow_done;
    int openai_body;
    int stream;
    int slow_readers;    /* stop reading after the first event, hold */
    int keepalive;       /* reuse connections between streams */
    int rcvbuf;          /* SO_RCVBUF for slow readers; 0 = kernel default */
    int src_addrs;       /* bind to 127.0.0.1 .. 127.0.0.N round robin */
    double connect_rate; /* new connections per second at start; 0 = all at once */
    double timeout;      /* idle seconds before a stream fails */
    uint64_t warmup;     /* first N completed streams kept out of latencies */
    const char *model;
    const char *content;
    const char *label;
    const char *headers[16];
    int nheaders;
};

/* Counters of one run. */
struct lg_stats {
    uint64_t issued, completed, failed, connections, events, done_events;
    uint64_t fails[LG_F_COUNT];
    uint64_t active, peak_active; /* streams that have seen their first event */
    uint64_t first_ttfe_us;       /* time to first event of the first stream */
    uint64_t reached_first;       /* slow-readers: streams that got an event */
    struct lg_hist ttfe, dur;
    struct lg_hist ttfe_warm; /* streams on an already open connection */
};

struct event_base;
/* Runs the load until the duration or the count is reached, filling st.
 * Returns 0, or -1 on a setup error (message already printed). */
int lg_run(struct event_base *base, const struct lg_opts *o, struct lg_stats *st);
uint64_t lg_now_us(void);

#endif
