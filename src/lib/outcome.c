/*
 * outcome.c - what an attempt that a transport ended means: a libcurl error
 * mapped to a zjuchat_error in our words, an upstream error status turned
 * into ZJUCHAT_ERR_API with the message of its (redacted) error body, a
 * stream that ended without [DONE] or a finish chunk, a 2xx body checked and
 * made the call's response. Runs outside every libcurl callback, so it may
 * end the call or hand it to the retry (call.c).
 */
#include "call.h"

#include <stdlib.h>
#include <string.h>

/* libcurl ended the attempt after the request went out: what it refused
 * then came from the upstream, not from our options or URL. */
static int request_sent(zjuchat_call *call)
{
    long sent = 0;
    return curl_easy_getinfo(call->easy, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK &&
           sent > 0;
}

static void map_curl_error(zjuchat_call *call, CURLcode rc, zjuchat_error *e)
{
    zjuchat_code code = ZJUCHAT_ERR_NETWORK;
    zjuchat_detail detail = ZJUCHAT_DETAIL_NONE;
    const char *what = "upstream transfer failed";
    int malformed = 0; /* libcurl refused the upstream's reply */
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        detail = ZJUCHAT_NET_DNS;
        what = "cannot resolve upstream host";
        break;
    case CURLE_COULDNT_CONNECT:
        detail = ZJUCHAT_NET_CONNECT;
        what = "cannot connect to upstream";
        break;
    case CURLE_OPERATION_TIMEDOUT:
        /* No CURLOPT_TIMEOUT is ever set, so curl only times out connects. */
        code = ZJUCHAT_ERR_TIMEOUT;
        detail = ZJUCHAT_TIMEOUT_CONNECT;
        what = "connecting to upstream timed out";
        break;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
        detail = ZJUCHAT_NET_TLS;
        what = "TLS with upstream failed";
        break;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
        detail = ZJUCHAT_NET_RESET;
        what = call->accepted ? "upstream connection closed mid-reply"
                              : "upstream closed the connection";
        break;
    case CURLE_OUT_OF_MEMORY:
        code = ZJUCHAT_ERR_NOMEM;
        what = "out of memory";
        break;
    case CURLE_WEIRD_SERVER_REPLY:   /* a header without a colon, a bad Content-Length */
    case CURLE_BAD_CONTENT_ENCODING: /* a Transfer-Encoding libcurl does not know */
        malformed = 1;
        break;
    case CURLE_BAD_FUNCTION_ARGUMENT:
        /* libcurl 7.88.1's refusal of a folded first header line (nothing
         * before it to append to, lib/headers.c), with no error text. */
        malformed = request_sent(call);
        break;
    case CURLE_UNSUPPORTED_PROTOCOL:
        /* Before the request: a scheme this libcurl lacks (the base URL is
         * http(s), checked by zjuchat_client_new). After it: the reply's
         * status line (HTTP/0.9, an unknown version, a code that is not
         * three digits). */
        malformed = request_sent(call);
        if (!malformed) {
            code = ZJUCHAT_ERR_CONFIG;
            what = "bad upstream URL";
        }
        break;
    case CURLE_URL_MALFORMAT:
        code = ZJUCHAT_ERR_CONFIG;
        what = "bad upstream URL";
        break;
    default:
        break;
    }
    if (malformed) {
        /* An upstream that answers with malformed HTTP is a bad gateway
         * (the server's 502), whatever libcurl's code for it says. */
        code = ZJUCHAT_ERR_PROTOCOL;
        what = "upstream sent a malformed HTTP response";
    }
    /* libcurl's error text, when it wrote one, says what was wrong. Its
     * generic text for a code that was a malformed reply speaks of its own
     * API ("A libcurl function was given a bad argument"): not quoted. */
    const char *why = call->errbuf[0] ? call->errbuf
                      : malformed     ? NULL
                                      : curl_easy_strerror(rc);
    if (why)
        zjuchat__error_set(e, code, detail, "%s: %s", what, why);
    else
        zjuchat__error_set(e, code, detail, "%s", what);
    zjuchat_redact(e->message, strlen(e->message), call->client->api_key);
}

/* The error body is handed out (zjuchat_call_error_body), so a key that
 * hides behind JSON escapes is masked too, as in a 2xx body. When it cannot
 * be (the body is not valid JSON past the escaped key), the body is dropped:
 * err->message still says what happened. */
static void mask_escaped_key(zjuchat_call *call)
{
    zjuchat__scan scan;
    const char *key = call->client->api_key;
    if (!call->buf || !memchr(call->buf, '\\', call->buf_len) ||
        zjuchat__scan_json(call->buf, call->buf_len, key, &scan) == -2 ||
        !scan.secret_seen)
        return;
    size_t clean_len = 0;
    json_t *json = json_loadb(call->buf, call->buf_len, JSON_ALLOW_NUL, NULL);
    char *clean =
        json ? zjuchat__redact_json(call->buf, call->buf_len, json, key, &clean_len)
             : NULL;
    json_decref(json);
    free(call->buf);
    call->buf = clean;
    call->buf_len = call->buf_cap = clean ? clean_len : 0;
    call->error_body_dropped = clean == NULL;
}

void zjuchat__call_api_error(zjuchat_call *call, zjuchat_error *e)
{
    zjuchat_redact(call->buf, call->buf_len, call->client->api_key);
    if (call->buf_len >= ERROR_BODY_CAP) /* a key may straddle the cap */
        zjuchat__redact_tail(call->buf, call->buf_len, call->client->api_key);
    zjuchat__error_set(e, ZJUCHAT_ERR_API, ZJUCHAT_DETAIL_NONE, "%s", "");
    zjuchat__api_message(call->buf, call->buf_len, call->content_type, call->status,
                         call->client->api_key, e->message, sizeof e->message);
    e->http_status = call->status;
    e->retry_after_ms = call->retry_after_ms;
    mask_escaped_key(call); /* after the message: it reads the whole body */
}

void zjuchat__attempt_done(zjuchat_call *call, CURLcode rc)
{
    zjuchat_error e;
    if (rc != CURLE_OK && !call->has_pending) {
        map_curl_error(call, rc, &e);
        zjuchat__attempt_ended(call, &e);
        return;
    }
    zjuchat__attempt_ended(call, NULL);
}

void zjuchat__attempt_ended(zjuchat_call *call, const zjuchat_error *transport_err)
{
    zjuchat_error e;
    if (call->has_pending) {
        zjuchat__call_finish(call, &call->pending);
        return;
    }
    if (transport_err) {
        zjuchat__call_attempt_failed(call, transport_err);
        return;
    }
    if (!call->accepted) {
        zjuchat__call_api_error(call, &e);
        zjuchat__call_attempt_failed(call, &e);
        return;
    }
    if (call->stream) {
        if (!call->saw_done && !call->saw_finish) {
            zjuchat__call_finish_code(call, ZJUCHAT_ERR_PROTOCOL, ZJUCHAT_DETAIL_NONE,
                                      "upstream stream ended before [DONE]");
            return;
        }
        zjuchat__call_finish_code(call, ZJUCHAT_OK, ZJUCHAT_DETAIL_NONE, "success");
        return;
    }
    /* As on the event path (sse_policy.c): the scan tells whether the bytes
     * can hold the key as is (secret_raw); only then is the whole body
     * searched and masked (a tenth of the call's instructions), and scanned
     * again as the masked bytes say. */
    const char *key = call->client->api_key;
    zjuchat__scan scan;
    const char *body = call->buf ? call->buf : "";
    int rc = zjuchat__scan_json(body, call->buf_len, key, &scan);
    if (rc != -2 && scan.secret_raw && call->buf &&
        zjuchat_redact(call->buf, call->buf_len, key) > 0)
        rc = zjuchat__scan_json(body, call->buf_len, key, &scan);
    if (rc == -2) {
        zjuchat__call_finish_code(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                  "out of memory");
        return;
    }
    if (!scan.valid || !scan.is_object) {
        zjuchat__call_finish_code(
            call, ZJUCHAT_ERR_PROTOCOL, ZJUCHAT_DETAIL_NONE,
            "upstream answered 2xx with a body that is not a JSON object");
        return;
    }
    json_t *json = NULL;
    if (scan.secret_seen) {
        /* Rare: the key hides behind JSON escapes. Rebuild the body. */
        size_t clean_len;
        json = json_loadb(body, call->buf_len, JSON_ALLOW_NUL, NULL);
        char *clean = zjuchat__redact_json(call->buf, call->buf_len, json,
                                           call->client->api_key, &clean_len);
        if (clean) {
            free(call->buf);
            call->buf = clean;
            call->buf_len = call->buf_cap = clean_len;
        }
    }
    call->resp =
        zjuchat__response_new(call->buf, call->buf_len, call->status, json, &scan);
    if (!call->resp) {
        json_decref(json);
        zjuchat__call_finish_code(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                  "out of memory");
        return;
    }
    call->buf = NULL; /* now owned by the response */
    call->buf_len = call->buf_cap = 0;
    zjuchat__call_finish_code(call, ZJUCHAT_OK, ZJUCHAT_DETAIL_NONE, "success");
}
