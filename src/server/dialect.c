/*
 * dialect.c - the seed's and OpenAI's error shapes, and how each tells its
 * clients that the upstream failed (see dialect.h for the table).
 */
#include "dialect.h"
#include "http_util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zjuchat.h>

const char *srv_dialect_status_code(int status)
{
    switch (status) {
    case 400:
        return "invalid_request";
    case 401:
        return "unauthorized";
    case 403:
        return "forbidden";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 408:
        return "request_timeout";
    case 413:
        return "body_too_large";
    case 415:
        return "unsupported_media_type";
    case 417:
        return "expectation_failed";
    case 429:
        return "rate_limited";
    case 431:
        return "headers_too_large";
    case 502:
        return "bad_gateway";
    case 503:
        return "unavailable";
    case 504:
        return "upstream_timeout";
    case 505:
        return "http_version_not_supported";
    default:
        return status >= 500 ? "server_error" : "error";
    }
}

static const char *message_of(const zjuchat_error *e)
{
    return e->message[0] ? e->message : zjuchat_strerror(e->code);
}

/* ---- the seed's: {"error": "message"} ---- */

static char *seed_error_body(int status, const char *message, const char *code)
{
    return srv_http_error_json(message);
}

static void seed_upstream_failure(const zjuchat_error *e, zjuchat_call *call,
                                  srv_failure *out)
{
    out->retry_after_s = -1;
    switch (e->code) {
    case ZJUCHAT_ERR_NETWORK:
        out->status = 503;
        break;
    case ZJUCHAT_ERR_TIMEOUT:
        out->status = 504;
        break;
    case ZJUCHAT_ERR_API:
        if (e->http_status == 429) {
            if (e->retry_after_ms >= 0)
                out->retry_after_s = (e->retry_after_ms + 999) / 1000;
            out->status = 429;
        } else {
            out->status = 500;
        }
        break;
    case ZJUCHAT_ERR_PROTOCOL:
        out->status = 502; /* the upstream answered, but nothing we can relay */
        break;
    case ZJUCHAT_ERR_INVALID:
        out->status = 400;
        break;
    default:
        out->status = 500;
    }
    out->body = seed_error_body(out->status, message_of(e), NULL);
    out->len = out->body ? strlen(out->body) : 0;
}

const srv_dialect srv_dialect_seed = {"seed", 0, seed_error_body, seed_upstream_failure};

/* ---- OpenAI's: {"error": {"message", "type", "param", "code"}} ---- */

/* The `type` OpenAI's API and SDKs use for a status. */
static const char *openai_type(int status)
{
    switch (status) {
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 429:
        return "rate_limit_error";
    case 500:
        return "server_error";
    default:
        return status >= 500 ? "upstream_error" : "invalid_request_error";
    }
}

static char *openai_error_body(int status, const char *message, const char *code)
{
    json_t *msg = json_string(message);
    if (!msg) /* not valid UTF-8: say so rather than fail */
        msg = json_string("error (message not valid UTF-8)");
    json_t *o = json_pack("{s:{s:o, s:s, s:n, s:s?}}", "error", "message", msg, "type",
                          openai_type(status), "param", "code", code);
    if (!o)
        return NULL;
    char *out = json_dumps(o, JSON_ENSURE_ASCII);
    json_decref(o);
    return out;
}

/* The upstream's own error body when it is in OpenAI's shape (an object
 * whose "error" is an object with a string "message"): then it passes on as
 * it is, so the client sees the upstream's param and code too. */
static int openai_shaped(const char *body, size_t len)
{
    if (!body || len == 0)
        return 0;
    json_t *root = json_loadb(body, len, 0, NULL);
    json_t *err = json_object_get(root, "error");
    int ok = json_is_object(err) && json_is_string(json_object_get(err, "message"));
    json_decref(root);
    return ok;
}

static void set_body(srv_failure *out, const char *message, const char *code)
{
    out->body = openai_error_body(out->status, message, code);
    out->len = out->body ? strlen(out->body) : 0;
}

static void openai_upstream_failure(const zjuchat_error *e, zjuchat_call *call,
                                    srv_failure *out)
{
    char text[640];
    out->retry_after_s = -1;
    out->body = NULL;
    switch (e->code) {
    case ZJUCHAT_ERR_NETWORK:
        out->status = 503;
        snprintf(text, sizeof text, "upstream unreachable: %s", message_of(e));
        set_body(out, text, "upstream_unreachable");
        return;
    case ZJUCHAT_ERR_TIMEOUT:
        out->status = 504;
        snprintf(text, sizeof text, "upstream timed out: %s", message_of(e));
        set_body(out, text, "upstream_timeout");
        return;
    case ZJUCHAT_ERR_PROTOCOL:
        out->status = 502;
        snprintf(text, sizeof text, "upstream sent a reply that cannot be relayed: %s",
                 message_of(e));
        set_body(out, text, "upstream_bad_response");
        return;
    case ZJUCHAT_ERR_INVALID:
        out->status = 400;
        set_body(out, message_of(e), "invalid_request");
        return;
    case ZJUCHAT_ERR_API:
        break;
    default:
        out->status = 500;
        set_body(out, message_of(e), "server_error");
        return;
    }
    long up = e->http_status;
    if (up == 401 || up == 403) {
        /* The client's own credentials are not what failed: ours are. A 401
         * would make an SDK ask its user for a new key. */
        out->status = 502;
        snprintf(text, sizeof text,
                 "the upstream API refused the gateway's API key (HTTP %ld); "
                 "the server's ZJU_API_KEY needs attention",
                 up);
        set_body(out, text, "upstream_auth_failed");
        return;
    }
    if (up >= 400 && up < 500) {
        /* The client's request was refused: its status and message pass on. */
        out->status = (int)up;
        if (up == 429 && e->retry_after_ms >= 0)
            out->retry_after_s = (e->retry_after_ms + 999) / 1000;
        size_t len = 0;
        const char *body = call ? zjuchat_call_error_body(call, &len) : NULL;
        if (openai_shaped(body, len) && (out->body = malloc(len + 1))) {
            memcpy(out->body, body, len);
            out->body[len] = '\0';
            out->len = len;
            return;
        }
        set_body(out, message_of(e), up == 429 ? "rate_limited" : NULL);
        return;
    }
    out->status = 502;
    snprintf(text, sizeof text, "upstream error (HTTP %ld): %s", up, message_of(e));
    set_body(out, text, "upstream_error");
}

const srv_dialect srv_dialect_openai = {"openai", ZJUCHAT_CALL_PASS_DONE,
                                        openai_error_body, openai_upstream_failure};
