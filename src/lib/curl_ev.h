/*
 * curl_ev.h - libcurl's multi-socket API driven by the client's libevent
 * event_base (never installed). Who owns what:
 *   curl_ev.c    the multi handles ("shards"), libcurl's timer, handing
 *                finished transfers to outcome.c, the client's transport
 *                set-up and tear-down
 *   curl_sock.c  libcurl's sockets as libevent events, kept-alive sockets
 *                "parked" between transfers
 * The calls themselves are call.h's.
 */
#ifndef ZJUCHAT_CURL_EV_H
#define ZJUCHAT_CURL_EV_H

#include "internal.h"

#include <time.h>

/* One libcurl multi handle and its timer. A transfer joins the first shard
 * with fewer than ZJUCHAT__SHARD_STREAMS transfers, so a shard never holds
 * much more than that many connections and libcurl's per-transfer walk of
 * its connection cache stays short (measured: with 4,000 streams on one
 * multi handle, that walk and Curl_conncache_extract_oldest were 8% of the
 * server's CPU and made first events wait 170-930 ms during the ramp). */
struct zjuchat__shard {
    zjuchat_client *client;
    CURLM *multi;
    struct event *timer;
    int running; /* transfers in this multi handle */
    int touched; /* on client->touched: entered since process_done looked */
    struct zjuchat__shard *next_touched;
    struct timespec idle_since; /* when running last dropped to 0 */
};

/* curl_ev.c */
/* Put easy in a shard with room (made if need be); *shard is where it went. */
CURLMcode zjuchat__curl_add(zjuchat_client *client, CURL *easy,
                            struct zjuchat__shard **shard);
/* Take easy out of its shard. */
void zjuchat__curl_remove(struct zjuchat__shard *shard, CURL *easy);
/* Hand the transfers that finished in the shards entered since the last
 * look to outcome.c. */
void zjuchat__process_done(zjuchat_client *client);

/* Bracket every libcurl call that may run callbacks: finished transfers are
 * only looked at once no libcurl call is on the stack (call.h). */
static inline void zjuchat__curl_enter(struct zjuchat__shard *shard)
{
    zjuchat_client *client = shard->client;
    if (!shard->touched) {
        shard->touched = 1;
        shard->next_touched = client->touched;
        client->touched = shard;
    }
    client->in_curl++;
}

static inline void zjuchat__curl_leave(zjuchat_client *client)
{
    if (--client->in_curl == 0)
        zjuchat__process_done(client);
}

/* curl_sock.c */
/* CURLMOPT_SOCKETFUNCTION; userp is the shard. */
int zjuchat__sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp);
/* CURLOPT_OPENSOCKETFUNCTION and CURLOPT_CLOSESOCKETFUNCTION; clientp is the
 * client. */
curl_socket_t zjuchat__sock_open_cb(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *addr);
int zjuchat__sock_close_cb(void *clientp, curl_socket_t fd);
/* Drop every registration left (the multi handles are gone). */
void zjuchat__socks_free(zjuchat_client *client);

#endif
