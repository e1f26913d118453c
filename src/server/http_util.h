/*
 * http_util.h - small helpers shared by the HTTP handlers: common and CORS
 * headers, JSON error replies, content-type checks.
 */
#ifndef SRV_HTTP_UTIL_H
#define SRV_HTTP_UTIL_H

#include <stddef.h>

struct srv_request;
struct srv_config;

/* Add X-Content-Type-Options and the CORS headers that fit the request's
 * Origin to the reply headers. Every reply goes through this. */
void srv_http_common_headers(struct srv_request *req, const struct srv_config *cfg);

/* Add Retry-After: seconds (nothing when seconds < 0). Before the reply. */
void srv_http_retry_after(struct srv_request *req, long seconds);

/* Answer a CORS preflight (OPTIONS): 204 with the allow headers. Returns 204. */
int srv_http_preflight(struct srv_request *req, const struct srv_config *cfg);

/*
 * Reply `status` with the JSON body {"error": msg} plus common headers.
 * retry_after_s >= 0 adds Retry-After. Returns the body length sent via
 * *bytes (may be NULL). The request is answered (the front owns it again).
 */
void srv_http_send_json_error(struct srv_request *req, const struct srv_config *cfg,
                              int status, const char *msg, long retry_after_s,
                              size_t *bytes);

/* Reply `status` with a JSON body (common headers, Content-Type); its
 * length goes to *bytes (may be NULL). */
void srv_http_reply_json(struct srv_request *req, const struct srv_config *cfg,
                         int status, const char *json, size_t *bytes);

/* JSON error body {"error": msg} as a new string (free()), NULL on OOM. */
char *srv_http_error_json(const char *msg);

/* 1 when a Content-Type header value means JSON: "application/json" in any
 * case, with any parameters. */
int srv_http_is_json_type(const char *content_type);

/* src into dst[cap], cut to fit and always terminated: snprintf's "%s"
 * without its formatting machinery (a few hundred instructions a call on
 * the hot path). */
void srv_copy_text(char *dst, size_t cap, const char *src);

#endif
