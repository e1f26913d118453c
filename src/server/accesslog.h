/*
 * accesslog.h - one line per request on stderr, and the server's other log
 * lines. Every line is scrubbed of the API key before it is written.
 */
#ifndef SRV_ACCESSLOG_H
#define SRV_ACCESSLOG_H

#include <stddef.h>
#include <sys/time.h>

struct srv_request;
struct srv_proxies;

typedef struct srv_access {
    struct timeval start;
    char client[64]; /* peer "addr:port", or the address a trusted proxy
                        forwarded (TRUSTED_PROXIES, proxies.h) */
    char addr[46];   /* the client's address alone (the rate limits' key) */
    /* for the metrics (metrics.h): */
    long ttft_ms;           /* upstream time to first token of a stream, -1 */
    long retries;           /* upstream attempts beyond the first */
    int upstream_cancelled; /* the upstream call was cancelled */
    char method[16];
    char path[256];
    int status;
    size_t bytes; /* body bytes sent to the client */
    char model[128];
    int stream;   /* -1: not a chat request */
    long ttfb_ms; /* upstream time to first byte, -1 unknown */
    long prompt_tokens, completion_tokens, total_tokens; /* -1 unknown */
    int tokens_estimated; /* the upstream reported no usage: counted from sizes */
    char token_name[65];  /* the access token's name (tokens.h), "" without one */
} srv_access;

/* Key to scrub from every log line (borrowed; must outlive logging). */
void srv_log_set_secret(const char *key);

/* Proxies whose X-Forwarded-For / X-Real-IP are believed (borrowed; must
 * outlive logging). NULL, the default: none. */
void srv_access_set_proxies(const struct srv_proxies *proxies);

/* Access lines as one JSON object each (ACCESS_LOG_FORMAT=json), for log
 * pipelines; 0, the default: the text line. Other log lines stay text. */
void srv_access_set_json(int on);

/* printf-like log line with a timestamp and the pid; a newline is added. */
void srv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Start an access record for req: time, client address, method, path. */
void srv_access_begin(srv_access *a, const struct srv_request *req);

/* Write the access line. */
void srv_access_write(const srv_access *a);

#endif
