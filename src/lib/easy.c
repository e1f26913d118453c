/*
 * easy.c - the libcurl easy handle of one attempt: a new one for every
 * attempt (a libcurl 7.88.1 use after free forbids reuse, below) and the
 * options that make it this call's request on this client's connections.
 * Its own file so that the reason a handle is never reused stays next to
 * the one place handles are made.
 */
#include "call.h"
#include "curl_ev.h"

/* Every attempt gets a new easy handle, never one that has carried a
 * transfer. libcurl 7.88.1 (Debian 12's) keeps a pointer to the last
 * response header a handle stored (state.prevhead); the handle's next
 * transfer frees the stored headers but not that pointer, and a first
 * header line that is folded (starts with a space or tab) is appended to
 * it: a use after free driven by upstream bytes (curl issue #11101, fixed
 * in 8.1.0; docs/FAULTS.md, fuzz/regressions/fuzz_upstream/uaf-*). Only a
 * new handle has no such pointer; connections are the multi handle's and
 * are still reused. */
CURL *zjuchat__easy_fresh(void)
{
    CURL *e = curl_easy_init();
    /* libcurl's receive buffer, 16 KB by default. 8 KB measured 1.1 KB less
     * resident memory per held stream (1,000 streams: 28.8 -> 27.8 MB);
     * events are far smaller, a long answer takes a few more reads.
     * Settable only before the handle's first transfer allocates it. */
    if (e)
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 8192L);
    return e;
}

int zjuchat__easy_setup(zjuchat_call *call)
{
    zjuchat_client *client = call->client;
    CURL *e = call->easy;
    int bad = 0;
    bad |= curl_easy_setopt(e, CURLOPT_URL, call->url);
    bad |= curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)call);
    bad |= curl_easy_setopt(e, CURLOPT_HTTPHEADER,
                            call->stream ? client->headers_stream : client->headers_json);
    if (call->body) {
        bad |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body);
        bad |=
            curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
    } else {
        bad |= curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, zjuchat__sock_open_cb);
    bad |= curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, client);
    bad |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, zjuchat__sock_close_cb);
    bad |= curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, client);
    bad |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, zjuchat__reply_write_cb);
    bad |= curl_easy_setopt(e, CURLOPT_WRITEDATA, call);
    bad |= curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, zjuchat__reply_header_cb);
    bad |= curl_easy_setopt(e, CURLOPT_HEADERDATA, call);
    bad |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->errbuf);
    bad |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    bad |= curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    bad |= curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    bad |= curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    bad |= curl_easy_setopt(e, CURLOPT_USERAGENT, "libzjuchat/0.1");
    bad |= curl_easy_setopt(e, CURLOPT_SHARE, client->share);
    bad |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    long connect_ms = client->timeouts_ms[ZJUCHAT_TIMEOUT_OPT_CONNECT];
    bad |=
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms > 0 ? connect_ms : 0L);
    /* Debian's libcurl has a CA path compiled in, which disables the CA store
     * cache: every handshake would reload the store (docs/STACK.md pitfall 7). */
    curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
    if (client->ca_file)
        bad |= curl_easy_setopt(e, CURLOPT_CAINFO, client->ca_file);
    if (client->insecure) {
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        bad |= curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    return bad ? -1 : 0;
}
