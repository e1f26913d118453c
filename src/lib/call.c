/*
 * call.c - the lifecycle of one upstream call: start, one attempt after
 * another (a retry waits on a timer, retry.c says how long), the call's
 * timers (first byte, idle, total), pause and resume, cancel, and the end,
 * where on_done runs exactly once and the call is freed. Both the blocking
 * and the evented front doors end up here, so there is one code path for
 * every call. Reading the answer is reply.c's, judging it outcome.c's, the
 * event loop's side of libcurl curl_ev.c's; the re-entrancy rule they all
 * keep is in call.h.
 */
#include "call.h"
#include "curl_ev.h"
#include "evtime.h"
#include "h1.h"

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void zjuchat__call_set_pending(zjuchat_call *call, zjuchat_code code,
                               zjuchat_detail detail, const char *msg)
{
    if (call->has_pending)
        return; /* the first reason wins */
    zjuchat__error_set(&call->pending, code, detail, "%s", msg);
    call->has_pending = 1;
    call->abort = 1;
}

/* ---------------------------------------------------------------- */
/* ending a call                                                    */
/* ---------------------------------------------------------------- */

static void detach_easy(zjuchat_call *call)
{
    if (call->h1)
        zjuchat__h1_detach(call); /* closes an unfinished exchange's connection */
    if (call->shard) {
        long n = 0;
        if (curl_easy_getinfo(call->easy, CURLINFO_NUM_CONNECTS, &n) == CURLE_OK)
            call->client->connections_opened += n;
        zjuchat__curl_remove(call->shard, call->easy);
        call->shard = NULL;
    }
}

static void call_free(zjuchat_call *call)
{
    zjuchat_client *client = call->client;
    if (call->prev)
        call->prev->next = call->next;
    else
        client->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    detach_easy(call);
    /* Not kept for the next call, cheap as that would be (7k instructions,
     * a 6 KB calloc): see zjuchat__easy_fresh (easy.c). */
    if (call->easy)
        curl_easy_cleanup(call->easy);
    /* In the call's block (call_event): taken out of the loop, not freed. */
    if (call->phase_timer)
        event_del(call->phase_timer);
    if (call->total_timer)
        event_del(call->total_timer);
    if (call->wake)
        event_del(call->wake);
    zjuchat__sse_free(call->sse);
    zjuchat_response_free(call->resp);
    free(call->buf);
    free(call->body);
    free(call->url);
    free(call);
}

void zjuchat__call_finish(zjuchat_call *call, const zjuchat_error *err)
{
    if (call->finished)
        return;
    if (call->client->in_curl || call->in_callback) {
        if (!call->has_pending) {
            call->pending = *err;
            call->has_pending = 1;
        }
        call->abort = 1;
        call->wake_kind = WAKE_FINISH;
        event_active(call->wake, EV_TIMEOUT, 0);
        return;
    }
    call->finished = 1;
    zjuchat_error final = *err;
    /* The last gate: no message leaves with the key in it. */
    zjuchat_redact(final.message, strlen(final.message), call->client->api_key);
    detach_easy(call);
    evtimer_del(call->phase_timer);
    evtimer_del(call->total_timer);
    evtimer_del(call->wake);
    call->stats.http_status = call->status;
    call->error_body_ok = final.code == ZJUCHAT_ERR_API && !call->error_body_dropped;
    call->cb.on_done(call, &final, final.code == ZJUCHAT_OK ? call->resp : NULL,
                     call->userdata);
    call_free(call);
}

void zjuchat__call_finish_code(zjuchat_call *call, zjuchat_code code,
                               zjuchat_detail detail, const char *msg)
{
    zjuchat_error e;
    zjuchat__error_set(&e, code, detail, "%s", msg);
    zjuchat__call_finish(call, &e);
}

void zjuchat__calls_end_all(zjuchat_client *client)
{
    zjuchat_error e;
    zjuchat__error_set(&e, ZJUCHAT_ERR_CANCELLED, ZJUCHAT_DETAIL_NONE,
                       "client freed while the call was running");
    while (client->calls) {
        zjuchat_call *call = client->calls;
        call->in_callback = 0;
        zjuchat__call_finish(call, &e);
    }
}

/* ---------------------------------------------------------------- */
/* attempts and retries                                             */
/* ---------------------------------------------------------------- */

static void reset_attempt(zjuchat_call *call)
{
    call->status = 0;
    call->headers_done = 0;
    call->accepted = 0;
    call->content_type[0] = '\0';
    call->retry_after_ms = -1;
    call->buf_len = 0;
    call->error_body_dropped = 0;
    call->saw_done = call->saw_finish = 0;
    call->abort = 0;
    if (call->sse)
        zjuchat__sse_reset(call->sse);
}

static int start_attempt(zjuchat_call *call, zjuchat_error *err)
{
    zjuchat_client *client = call->client;
    if (client->h1) {
        reset_attempt(call);
        clock_gettime(CLOCK_MONOTONIC, &call->attempt_start);
        call->phase = PHASE_FIRST_BYTE;
        if (client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE] > 0)
            zjuchat__add_timer_ms(call->phase_timer,
                                  client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE]);
        if (zjuchat__h1_start(call, err)) {
            evtimer_del(call->phase_timer);
            return -1;
        }
        return 0;
    }
    if (call->easy_used) { /* a retry: never a second transfer on one handle */
        curl_easy_cleanup(call->easy);
        call->easy = zjuchat__easy_fresh();
        if (!call->easy || zjuchat__easy_setup(call)) {
            zjuchat__nomem(err);
            return -1;
        }
    }
    call->easy_used = 1;
    reset_attempt(call);
    clock_gettime(CLOCK_MONOTONIC, &call->attempt_start);
    call->phase = PHASE_FIRST_BYTE;
    if (client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE] > 0)
        zjuchat__add_timer_ms(call->phase_timer,
                              client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE]);
    CURLMcode mc = zjuchat__curl_add(client, call->easy, &call->shard);
    if (mc != CURLM_OK) {
        evtimer_del(call->phase_timer);
        zjuchat__error_set(
            err, mc == CURLM_OUT_OF_MEMORY ? ZJUCHAT_ERR_NOMEM : ZJUCHAT_ERR_INVALID,
            ZJUCHAT_DETAIL_NONE, "cannot start transfer: %s", curl_multi_strerror(mc));
        return -1;
    }
    return 0;
}

void zjuchat__call_attempt_failed(zjuchat_call *call, const zjuchat_error *e)
{
    long delay = zjuchat__retry_wait_ms(call, e);
    if (delay >= 0) {
        detach_easy(call);
        evtimer_del(call->phase_timer);
        call->stats.retries++;
        call->wake_kind = WAKE_RETRY;
        zjuchat__add_timer_ms(call->wake, delay);
        return;
    }
    zjuchat__call_finish(call, e);
}

/* ---------------------------------------------------------------- */
/* the call's timers                                                */
/* ---------------------------------------------------------------- */

void zjuchat__call_touch_idle(zjuchat_call *call)
{
    clock_gettime(CLOCK_MONOTONIC, &call->last_body);
}

static void on_phase_timer(evutil_socket_t fd, short what, void *arg)
{
    zjuchat_call *call = arg;
    if (call->phase == PHASE_IDLE && !call->paused) {
        /* Armed when the idle phase began or the call resumed; pieces that
         * came since push the deadline on (zjuchat__call_touch_idle). */
        long idle = call->client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE];
        long since = zjuchat__ms_since(&call->last_body);
        if (since >= 0 && since < idle) {
            zjuchat__add_timer_ms(call->phase_timer, idle - since);
            return;
        }
    }
    if (call->phase == PHASE_FIRST_BYTE) {
        zjuchat__call_finish_code(call, ZJUCHAT_ERR_TIMEOUT, ZJUCHAT_TIMEOUT_FIRST_BYTE,
                                  "upstream sent no response status in time");
    } else if (call->saw_done) {
        /* The answer is complete; the upstream only failed to end the body. */
        zjuchat__call_finish_code(call, ZJUCHAT_OK, ZJUCHAT_DETAIL_NONE, "success");
    } else if (!call->accepted && call->headers_done) {
        zjuchat_error e;
        zjuchat__call_api_error(call, &e);
        zjuchat__call_finish(call, &e);
    } else {
        zjuchat__call_finish_code(call, ZJUCHAT_ERR_TIMEOUT, ZJUCHAT_TIMEOUT_IDLE,
                                  "upstream went silent mid-reply");
    }
}

static void on_total_timer(evutil_socket_t fd, short what, void *arg)
{
    zjuchat__call_finish_code(arg, ZJUCHAT_ERR_TIMEOUT, ZJUCHAT_TIMEOUT_TOTAL,
                              "upstream call exceeded the total time limit");
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    zjuchat_call *call = arg;
    zjuchat_error e;
    switch (call->wake_kind) {
    case WAKE_START:
    case WAKE_RETRY:
        call->wake_kind = WAKE_NONE;
        if (start_attempt(call, &e))
            zjuchat__call_finish(call, &e);
        break;
    case WAKE_FINISH:
        zjuchat__call_finish(call, &call->pending);
        break;
    case WAKE_NONE:
        break;
    }
}

/* ---------------------------------------------------------------- */
/* public and internal entry points                                 */
/* ---------------------------------------------------------------- */

/* Where the call's timers start in its block: after the struct, aligned as
 * malloc aligns (libevent's struct event holds pointers and a timeval). */
#define CALL_EVENTS_ALIGN _Alignof(max_align_t)
#define CALL_EVENTS_AT                                                                   \
    ((sizeof(zjuchat_call) + CALL_EVENTS_ALIGN - 1) & ~(CALL_EVENTS_ALIGN - 1))

/* The call's i-th timer, in its own block (NULL if libevent refuses it). */
static struct event *call_event(zjuchat_call *call, int i,
                                void (*fn)(evutil_socket_t, short, void *))
{
    struct event *ev = (struct event *)((char *)call + CALL_EVENTS_AT +
                                        (size_t)i * event_get_struct_event_size());
    return event_assign(ev, call->client->base, -1, 0, fn, call) == 0 ? ev : NULL;
}

zjuchat_call *zjuchat__call_start(zjuchat_client *client, const char *path,
                                  char *body_steal, size_t body_len, unsigned flags,
                                  const zjuchat_callbacks *cb, void *userdata,
                                  zjuchat_error *err)
{
    int stream = (flags & ZJUCHAT_CALL_STREAM) != 0;
    if (!cb || !cb->on_done) {
        free(body_steal);
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "on_done callback is required");
        return NULL;
    }
    /* The call's three timers live in the same block, after the struct:
     * one calloc instead of four (libevent's event_new is a malloc each,
     * and the frees at the end as many). */
    zjuchat_call *call = calloc(1, CALL_EVENTS_AT + 3 * event_get_struct_event_size());
    if (!call) {
        free(body_steal);
        zjuchat__nomem(err);
        return NULL;
    }
    call->client = client;
    call->cb = *cb;
    call->userdata = userdata;
    call->stream = stream;
    call->pass_done = stream && (flags & ZJUCHAT_CALL_PASS_DONE);
    call->body = body_steal;
    call->body_len = body_len;
    call->stats.first_byte_ms = -1;
    /* Jitter only needs calls to differ, not secrecy: no getpid() syscall. */
    call->rng = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)call ^
                (client->calls_started++ * 2654435761u);
    size_t ulen = strlen(client->base_url) + strlen(path) + 1;
    call->url = malloc(ulen);
    if (!client->h1)
        call->easy = zjuchat__easy_fresh();
    call->phase_timer = call_event(call, 0, on_phase_timer);
    call->total_timer = call_event(call, 1, on_total_timer);
    call->wake = call_event(call, 2, on_wake);
    if (stream)
        call->sse = zjuchat__sse_new(0, 0, zjuchat__call_on_sse_event, call);
    /* Link first so call_free can unlink. */
    call->next = client->calls;
    if (client->calls)
        client->calls->prev = call;
    client->calls = call;
    if (!call->url || (!client->h1 && !call->easy) || !call->phase_timer ||
        !call->total_timer || !call->wake || (stream && !call->sse)) {
        call_free(call);
        zjuchat__nomem(err);
        return NULL;
    }
    snprintf(call->url, ulen, "%s%s", client->base_url, path);
    if (!client->h1 && zjuchat__easy_setup(call)) {
        call_free(call);
        zjuchat__error_set(err, ZJUCHAT_ERR_CONFIG, ZJUCHAT_DETAIL_NONE,
                           "libcurl refused an option (is it built with HTTPS?)");
        return NULL;
    }
    clock_gettime(CLOCK_MONOTONIC, &call->start);
    if (client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_TOTAL] > 0)
        zjuchat__add_timer_ms(call->total_timer,
                              client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_TOTAL]);
    if (client->in_curl) {
        /* Started from inside a callback: libcurl may not be re-entered. */
        call->wake_kind = WAKE_START;
        event_active(call->wake, EV_TIMEOUT, 0);
        return call;
    }
    if (start_attempt(call, err)) {
        call_free(call);
        return NULL;
    }
    return call;
}

zjuchat_call *zjuchat_call_start(zjuchat_client *client, const zjuchat_request *req,
                                 int stream, const zjuchat_callbacks *cb, void *userdata,
                                 zjuchat_error *err)
{
    if (!client || !req || !client->evented) {
        zjuchat__error_set(err, ZJUCHAT_ERR_INVALID, ZJUCHAT_DETAIL_NONE,
                           "zjuchat_call_start needs a client bound to an event base "
                           "(zjuchat_client_use_event_base) and a request");
        return NULL;
    }
    char *body = zjuchat__request_body(req, stream);
    if (!body) {
        zjuchat__nomem(err);
        return NULL;
    }
    return zjuchat__call_start(client, "/chat/completions", body, strlen(body),
                               stream ? ZJUCHAT_CALL_STREAM : 0, cb, userdata, err);
}

zjuchat_response *zjuchat__call_take_response(zjuchat_call *call)
{
    zjuchat_response *r = call->resp;
    call->resp = NULL;
    return r;
}

void zjuchat_call_cancel(zjuchat_call *call)
{
    if (!call || call->finished)
        return;
    zjuchat__call_finish_code(call, ZJUCHAT_ERR_CANCELLED, ZJUCHAT_DETAIL_NONE,
                              "call cancelled by the caller");
}

void zjuchat_call_pause(zjuchat_call *call)
{
    if (!call || call->finished || call->paused)
        return;
    call->paused = 1;
    /* A paused transfer is our choice, not upstream silence. */
    if (call->phase == PHASE_IDLE)
        evtimer_del(call->phase_timer);
    if (call->client->h1) {
        zjuchat__h1_pause(call); /* stops reading the socket */
        return;
    }
    curl_easy_pause(call->easy, CURLPAUSE_RECV);
}

void zjuchat_call_resume(zjuchat_call *call)
{
    if (!call || call->finished || !call->paused)
        return;
    zjuchat_client *client = call->client;
    call->paused = 0;
    if (call->phase == PHASE_IDLE && client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE] > 0)
        zjuchat__add_timer_ms(call->phase_timer,
                              client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_IDLE]);
    if (client->h1) {
        zjuchat__h1_resume(call); /* what was read waits for the loop */
        return;
    }
    /* Unpausing may deliver buffered data right away, through the write
     * callback (reply.c). */
    if (!call->shard) {
        curl_easy_pause(call->easy, CURLPAUSE_CONT);
        return;
    }
    zjuchat__curl_enter(call->shard);
    curl_easy_pause(call->easy, CURLPAUSE_CONT);
    zjuchat__curl_leave(client);
}

int zjuchat__call_on_read_end(zjuchat_call *call,
                              void (*fn)(zjuchat_call *call, void *userdata))
{
    if (!call->client->h1)
        return -1; /* libcurl's write callbacks do not say where a read ends */
    call->on_read_end = fn;
    return 0;
}

void zjuchat_call_get_stats(const zjuchat_call *call, zjuchat_call_stats *out)
{
    if (call && out)
        *out = call->stats;
}

const char *zjuchat_call_error_body(const zjuchat_call *call, size_t *len)
{
    int ok = call && call->finished && call->error_body_ok;
    if (len)
        *len = ok ? call->buf_len : 0;
    if (!ok)
        return NULL;
    return call->buf ? call->buf : "";
}

const char *zjuchat_call_content_type(const zjuchat_call *call)
{
    return call ? call->content_type : "";
}
