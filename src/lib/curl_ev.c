/*
 * curl_ev.c - libcurl's multi handles driven by the client's event_base:
 * the shards transfers are spread over, libcurl's timer as a libevent
 * timer, finished transfers handed on to outcome.c, and the client's
 * transport set-up and tear-down. One job: keep libcurl running on the
 * caller's loop, so that one thread serves every call; what a transfer
 * means is the call's business (call.h), its sockets are curl_sock.c's.
 */
#include "call.h"
#include "curl_ev.h"
#include "evtime.h"
#include "h1.h"

#include <event2/event.h>
#include <stdlib.h>

/* A shard above the first that has carried no transfer for this long is
 * freed with its idle connections: after a burst of thousands of streams,
 * first-fit sends lighter load to the lower shards, and the upper ones would
 * otherwise hold their kept-alive sockets (up to 128 each) for ever. */
#define SHARD_IDLE_MS 60000

/* Only the shards entered since the last pass can hold finished transfers:
 * one per socket event, not a walk over every shard. */
void zjuchat__process_done(zjuchat_client *client)
{
    struct zjuchat__shard *shard;
    while ((shard = client->touched) != NULL) {
        client->touched = shard->next_touched;
        shard->touched = 0;
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(shard->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            zjuchat_call *call = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&call);
            CURLcode rc = msg->data.result;
            if (call && !call->finished)
                zjuchat__attempt_done(call, rc);
        }
    }
}

static void on_curl_timer(evutil_socket_t fd, short what, void *arg)
{
    struct zjuchat__shard *shard = arg;
    int running;
    zjuchat__curl_enter(shard);
    curl_multi_socket_action(shard->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    zjuchat__curl_leave(shard->client);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct zjuchat__shard *shard = userp;
    if (timeout_ms < 0)
        evtimer_del(shard->timer);
    else
        zjuchat__add_timer_ms(shard->timer, timeout_ms);
    return 0;
}

static void shard_free(struct zjuchat__shard *shard)
{
    if (shard->multi)
        curl_multi_cleanup(shard->multi);
    if (shard->timer)
        event_free(shard->timer);
    free(shard);
}

/* Frees the top shards that have been idle for shard_idle_ms; runs while
 * there is more than one shard. */
static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    zjuchat_client *client = arg;
    while (client->nshards > 1) {
        struct zjuchat__shard *top = client->shards[client->nshards - 1];
        if (top->running > 0 || top->touched ||
            zjuchat__ms_since(&top->idle_since) < client->shard_idle_ms)
            break;
        client->nshards--;
        shard_free(top); /* closes its connections through zjuchat__sock_close_cb */
    }
    if (client->nshards > 1)
        zjuchat__add_timer_ms(client->reaper, client->shard_idle_ms / 2 + 1);
}

void zjuchat__transport_set_shard_idle_ms(zjuchat_client *client, long ms)
{
    client->shard_idle_ms = ms > 0 ? ms : SHARD_IDLE_MS;
}

static struct zjuchat__shard *shard_new(zjuchat_client *client)
{
    struct zjuchat__shard *shard = calloc(1, sizeof *shard);
    if (!shard)
        return NULL;
    shard->client = client;
    shard->multi = curl_multi_init();
    shard->timer = evtimer_new(client->base, on_curl_timer, shard);
    if (!shard->multi || !shard->timer) {
        shard_free(shard);
        return NULL;
    }
    curl_multi_setopt(shard->multi, CURLMOPT_SOCKETFUNCTION, zjuchat__sock_cb);
    curl_multi_setopt(shard->multi, CURLMOPT_SOCKETDATA, shard);
    curl_multi_setopt(shard->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(shard->multi, CURLMOPT_TIMERDATA, shard);
    curl_multi_setopt(shard->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);
    /* Idle connections a burst of streams can come back to. Above this,
     * each finished transfer walks the whole cache for the oldest one. */
    curl_multi_setopt(shard->multi, CURLMOPT_MAXCONNECTS, (long)ZJUCHAT__SHARD_STREAMS);
    clock_gettime(CLOCK_MONOTONIC, &shard->idle_since);
    client->shards[client->nshards++] = shard;
    if (client->nshards == 2 && client->reaper)
        zjuchat__add_timer_ms(client->reaper, client->shard_idle_ms / 2 + 1);
    return shard;
}

/* The first shard with room, so that light load stays on one multi handle
 * and reuses its connections; a new shard when all are full; the least
 * loaded one at ZJUCHAT__SHARD_MAX. NULL only when none exists or can be
 * made. */
static struct zjuchat__shard *pick_shard(zjuchat_client *client)
{
    struct zjuchat__shard *least = NULL;
    for (int i = 0; i < client->nshards; i++) {
        struct zjuchat__shard *shard = client->shards[i];
        if (shard->running < ZJUCHAT__SHARD_STREAMS)
            return shard;
        if (!least || shard->running < least->running)
            least = shard;
    }
    if (client->nshards < ZJUCHAT__SHARD_MAX) {
        struct zjuchat__shard *fresh = shard_new(client);
        if (fresh)
            return fresh;
    }
    return least;
}

CURLMcode zjuchat__curl_add(zjuchat_client *client, CURL *easy,
                            struct zjuchat__shard **out)
{
    struct zjuchat__shard *shard = pick_shard(client);
    CURLMcode mc =
        shard ? curl_multi_add_handle(shard->multi, easy) : CURLM_OUT_OF_MEMORY;
    if (mc == CURLM_OK) {
        *out = shard;
        shard->running++;
    }
    return mc;
}

void zjuchat__curl_remove(struct zjuchat__shard *shard, CURL *easy)
{
    curl_multi_remove_handle(shard->multi, easy);
    if (--shard->running == 0)
        clock_gettime(CLOCK_MONOTONIC, &shard->idle_since);
}

zjuchat_code zjuchat__transport_init(zjuchat_client *client, zjuchat_error *err)
{
    client->share = curl_share_init();
    client->reaper = evtimer_new(client->base, on_reap, client);
    if (!client->shard_idle_ms)
        client->shard_idle_ms = SHARD_IDLE_MS;
    if (!client->share || !client->reaper || !shard_new(client) ||
        zjuchat__h1_init(client))
        return zjuchat__nomem(err);
    curl_share_setopt(client->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    curl_share_setopt(client->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    return ZJUCHAT_OK;
}

void zjuchat__transport_free(zjuchat_client *client)
{
    client->in_curl = 0;
    zjuchat__calls_end_all(client);
    zjuchat__h1_free(client);
    if (client->reaper)
        event_free(client->reaper);
    client->reaper = NULL;
    client->touched = NULL;
    while (client->nshards > 0)
        shard_free(client->shards[--client->nshards]);
    /* libcurl closed every connection above, through zjuchat__sock_close_cb. */
    zjuchat__socks_free(client);
    if (client->share)
        curl_share_cleanup(client->share);
    client->share = NULL;
}
