/*
 * client.c - the client handle (key, base URL, options) and the blocking
 * front door. Blocking calls run the same evented transport on a private
 * event_base until the call's on_done fires.
 */
#include "h1.h"
#include "internal.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int curl_ready;

zjuchat_code zjuchat_global_init(void)
{
    if (curl_ready)
        return ZJUCHAT_OK;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return ZJUCHAT_ERR_NOMEM;
    curl_ready = 1;
    return ZJUCHAT_OK;
}

static int has_ctl_or_space(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static struct curl_slist *make_headers(const char *key, const char *accept)
{
    size_t n = strlen(key) + 32;
    char *auth = malloc(n);
    if (!auth)
        return NULL;
    snprintf(auth, n, "Authorization: Bearer %s", key);
    struct curl_slist *list = NULL, *t;
    const char *lines[] = {auth, "Content-Type: application/json", accept,
                           "Expect:" /* no 100-continue round trip */};
    for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
        t = curl_slist_append(list, lines[i]);
        if (!t) {
            curl_slist_free_all(list);
            list = NULL;
            break;
        }
        list = t;
    }
    /* The key was copied into the list; wipe our temporary copy. */
    memset(auth, 0, n);
    free(auth);
    return list;
}

zjuchat_client *zjuchat_client_new(const char *api_key, const char *base_url,
                                   zjuchat_error *err)
{
    if (zjuchat_global_init() != ZJUCHAT_OK) {
        zjuchat__error_set(err, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                           "libcurl global initialisation failed");
        return NULL;
    }
    if (!api_key || !*api_key)
        api_key = getenv("ZJU_API_KEY");
    if (!api_key || !*api_key) {
        zjuchat__error_set(err, ZJUCHAT_ERR_CONFIG, ZJUCHAT_DETAIL_NONE,
                           "no API key: set the ZJU_API_KEY environment variable");
        return NULL;
    }
    if (has_ctl_or_space(api_key)) {
        zjuchat__error_set(err, ZJUCHAT_ERR_CONFIG, ZJUCHAT_DETAIL_NONE,
                           "the API key contains spaces or control characters");
        return NULL;
    }
    if (strlen(api_key) < ZJUCHAT_MIN_KEY_LEN) { /* see zjuchat.h: redaction */
        zjuchat__error_set(err, ZJUCHAT_ERR_CONFIG, ZJUCHAT_DETAIL_NONE,
                           "the API key is shorter than %d characters: too short to "
                           "keep out of output safely (check ZJU_API_KEY)",
                           ZJUCHAT_MIN_KEY_LEN);
        return NULL;
    }
    if (!base_url || !*base_url)
        base_url = getenv("ZJU_BASE_URL");
    if (!base_url || !*base_url)
        base_url = ZJUCHAT_DEFAULT_BASE_URL;
    if ((strncasecmp(base_url, "http://", 7) && strncasecmp(base_url, "https://", 8)) ||
        has_ctl_or_space(base_url)) {
        zjuchat__error_set(err, ZJUCHAT_ERR_CONFIG, ZJUCHAT_DETAIL_NONE,
                           "base URL must start with http:// or https:// "
                           "(check ZJU_BASE_URL)");
        return NULL;
    }
    zjuchat_client *c = calloc(1, sizeof *c);
    if (!c) {
        zjuchat__nomem(err);
        return NULL;
    }
    c->api_key = strdup(api_key);
    c->base_url = strdup(base_url);
    c->headers_json = make_headers(api_key, "Accept: application/json");
    c->headers_stream = make_headers(api_key, "Accept: text/event-stream");
    if (!c->api_key || !c->base_url || !c->headers_json || !c->headers_stream) {
        zjuchat_client_free(c);
        zjuchat__nomem(err);
        return NULL;
    }
    size_t n = strlen(c->base_url);
    while (n > 0 && c->base_url[n - 1] == '/')
        c->base_url[--n] = '\0';
    c->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_CONNECT] = 10000;
    c->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE] = 60000;
    c->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE] = 300000;
    c->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_TOTAL] = 0;
    c->max_retries = 2;
    c->retry_base_ms = 200;
    /* Enough for what retrying is for: the default backoff (at most ~0.6 s
     * for two retries) and a short rate limit (Retry-After: 1 or 2). A longer
     * wait is the caller's to decide: a chat frontend's own request timeout
     * fires after a few seconds of nothing, so a 429 with Retry-After at once
     * serves it better than an answer it has stopped waiting for. */
    c->retry_budget_ms = 3000;
    c->max_body = 8u << 20;
    return c;
}

zjuchat_client *zjuchat_client_new_from_env(zjuchat_error *err)
{
    return zjuchat_client_new(NULL, NULL, err);
}

void zjuchat_client_free(zjuchat_client *c)
{
    if (!c)
        return;
    if (c->base)
        zjuchat__transport_free(c);
    if (c->owns_base)
        event_base_free(c->base);
    curl_slist_free_all(c->headers_json);
    curl_slist_free_all(c->headers_stream);
    if (c->api_key) {
        memset(c->api_key, 0, strlen(c->api_key));
        free(c->api_key);
    }
    free(c->base_url);
    free(c->ca_file);
    free(c);
}

const char *zjuchat_client_base_url(const zjuchat_client *c)
{
    return c ? c->base_url : NULL;
}

zjuchat_code zjuchat_client_set_timeout(zjuchat_client *c, zjuchat_timeout which, long ms)
{
    if (!c || ms < 0 || (unsigned)which > ZJUCHAT_TIMEOUT_OPT_TOTAL)
        return ZJUCHAT_ERR_INVALID;
    c->timeouts_ms[which] = ms;
    return ZJUCHAT_OK;
}

zjuchat_code zjuchat_client_set_retries(zjuchat_client *c, int max_retries,
                                        long base_delay_ms)
{
    if (!c || max_retries < 0 || max_retries > 100 || base_delay_ms < 0)
        return ZJUCHAT_ERR_INVALID;
    c->max_retries = max_retries;
    c->retry_base_ms = base_delay_ms;
    return ZJUCHAT_OK;
}

zjuchat_code zjuchat_client_set_retry_budget(zjuchat_client *c, long ms)
{
    if (!c || ms < 0)
        return ZJUCHAT_ERR_INVALID;
    c->retry_budget_ms = ms;
    return ZJUCHAT_OK;
}

zjuchat_code zjuchat_client_set_ca_file(zjuchat_client *c, const char *path)
{
    if (!c)
        return ZJUCHAT_ERR_INVALID;
    char *copy = NULL;
    if (path && !(copy = strdup(path)))
        return ZJUCHAT_ERR_NOMEM;
    free(c->ca_file);
    c->ca_file = copy;
    zjuchat__h1_tls_settings_changed(c);
    return ZJUCHAT_OK;
}

zjuchat_code zjuchat_client_set_insecure(zjuchat_client *c, int insecure)
{
    if (!c)
        return ZJUCHAT_ERR_INVALID;
    c->insecure = insecure != 0;
    zjuchat__h1_tls_settings_changed(c);
    return ZJUCHAT_OK;
}

zjuchat_code zjuchat_client_set_max_body(zjuchat_client *c, size_t bytes)
{
    if (!c || bytes == 0)
        return ZJUCHAT_ERR_INVALID;
    c->max_body = bytes;
    return ZJUCHAT_OK;
}

void zjuchat_client_set_cancel_flag(zjuchat_client *c, volatile sig_atomic_t *flag)
{
    if (c)
        c->cancel_flag = flag;
}

long zjuchat_client_connections_opened(const zjuchat_client *c)
{
    return c ? c->connections_opened : 0;
}

zjuchat_code zjuchat_client_use_event_base(zjuchat_client *c, struct event_base *base)
{
    if (!c || !base || c->base)
        return ZJUCHAT_ERR_INVALID;
    c->base = base;
    c->evented = 1;
    if (zjuchat__transport_init(c, NULL) != ZJUCHAT_OK) {
        zjuchat__transport_free(c);
        c->base = NULL;
        c->evented = 0;
        return ZJUCHAT_ERR_NOMEM;
    }
    zjuchat__h1_prepare_tls(c);
    return ZJUCHAT_OK;
}

/* ---------------------------------------------------------------- */
/* blocking front door                                              */
/* ---------------------------------------------------------------- */

struct blocking {
    zjuchat_chunk_fn fn;
    void *userdata;
    int done;
    zjuchat_error err;
    zjuchat_response *resp;
    zjuchat_call *call;
    zjuchat_client *client;
};

static int blocking_chunk(zjuchat_call *call, const zjuchat_chunk *chunk, void *ud)
{
    struct blocking *b = ud;
    return b->fn && b->fn(chunk, b->userdata) ? ZJUCHAT_STOP : 0;
}

static void blocking_done(zjuchat_call *call, const zjuchat_error *err,
                          const zjuchat_response *resp, void *ud)
{
    struct blocking *b = ud;
    b->err = *err;
    b->resp = zjuchat__call_take_response(call);
    b->done = 1;
    b->call = NULL;
}

static void poll_cancel_flag(evutil_socket_t fd, short what, void *arg)
{
    struct blocking *b = arg;
    (void)fd;
    (void)what;
    if (b->call && b->client->cancel_flag && *b->client->cancel_flag)
        zjuchat_call_cancel(b->call);
}

static zjuchat_code run_blocking(zjuchat_client *c, const char *path, char *body,
                                 int stream, struct blocking *b, zjuchat_error *err)
{
    if (!c) {
        free(body);
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE, "NULL client");
        return ZJUCHAT_ERR_INVALID;
    }
    if (c->evented) {
        free(body);
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "blocking call on a client bound to an event base");
        return ZJUCHAT_ERR_INVALID;
    }
    if (!c->base) {
        c->base = event_base_new();
        if (!c->base) {
            free(body);
            return zjuchat__nomem(err);
        }
        c->owns_base = 1;
        if (zjuchat__transport_init(c, err) != ZJUCHAT_OK) {
            free(body);
            zjuchat__transport_free(c);
            event_base_free(c->base);
            c->base = NULL;
            c->owns_base = 0;
            return ZJUCHAT_ERR_NOMEM;
        }
    }
    b->client = c;
    zjuchat_callbacks cb = {NULL, stream ? blocking_chunk : NULL, blocking_done};
    b->call = zjuchat__call_start(c, path, body, body ? strlen(body) : 0,
                                  stream ? ZJUCHAT_CALL_STREAM : 0, &cb, b, err);
    if (!b->call)
        return err ? err->code : ZJUCHAT_ERR_NOMEM;
    struct event *poll = NULL;
    if (c->cancel_flag) {
        poll = event_new(c->base, -1, EV_PERSIST, poll_cancel_flag, b);
        struct timeval tv = {0, 50 * 1000};
        if (poll)
            event_add(poll, &tv);
    }
    while (!b->done)
        event_base_loop(c->base, EVLOOP_ONCE);
    if (poll)
        event_free(poll);
    if (err)
        *err = b->err;
    return b->err.code;
}

zjuchat_code zjuchat_complete(zjuchat_client *c, const zjuchat_request *req,
                              zjuchat_response **out, zjuchat_error *err)
{
    if (out)
        *out = NULL;
    if (!req || !out) {
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "NULL request or output");
        return ZJUCHAT_ERR_INVALID;
    }
    char *body = zjuchat__request_body(req, 0);
    if (!body)
        return zjuchat__nomem(err);
    struct blocking b = {0};
    zjuchat_code rc = run_blocking(c, "/chat/completions", body, 0, &b, err);
    if (rc == ZJUCHAT_OK)
        *out = b.resp;
    else
        zjuchat_response_free(b.resp);
    return rc;
}

zjuchat_code zjuchat_stream(zjuchat_client *c, const zjuchat_request *req,
                            zjuchat_chunk_fn fn, void *userdata, zjuchat_error *err)
{
    if (!req) {
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE, "NULL request");
        return ZJUCHAT_ERR_INVALID;
    }
    char *body = zjuchat__request_body(req, 1);
    if (!body)
        return zjuchat__nomem(err);
    struct blocking b = {0};
    b.fn = fn;
    b.userdata = userdata;
    zjuchat_code rc = run_blocking(c, "/chat/completions", body, 1, &b, err);
    zjuchat_response_free(b.resp);
    return rc;
}

zjuchat_code zjuchat_list_models(zjuchat_client *c, zjuchat_response **out,
                                 zjuchat_error *err)
{
    if (!out) {
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE, "NULL output");
        return ZJUCHAT_ERR_INVALID;
    }
    *out = NULL;
    struct blocking b = {0};
    zjuchat_code rc = run_blocking(c, ZJUCHAT__MODELS_PATH, NULL, 0, &b, err);
    if (rc == ZJUCHAT_OK)
        *out = b.resp;
    else
        zjuchat_response_free(b.resp);
    return rc;
}
