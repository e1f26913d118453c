/*
 * retry.c - the retry policy: whether an attempt that failed is tried
 * again, and after how long (Retry-After, else exponential backoff with
 * jitter), within the client's retry count and the call's retry budget.
 * Apart from call.c, which does the waiting, so the rules read in one place.
 */
#include "call.h"
#include "evtime.h"

#include <stdlib.h>

#define RETRY_AFTER_CAP_MS 30000
#define BACKOFF_CAP_MS 8000

static int retryable(const zjuchat_error *e)
{
    if (e->code == ZJUCHAT_ERR_NETWORK && e->detail == ZJUCHAT_NET_CONNECT)
        return 1;
    if (e->code == ZJUCHAT_ERR_TIMEOUT && e->detail == ZJUCHAT_TIMEOUT_CONNECT)
        return 1;
    if (e->code == ZJUCHAT_ERR_API)
        return e->http_status == 429 || (e->http_status >= 500 && e->http_status <= 599);
    return 0;
}

/* Delay before the next attempt, or -1 when Retry-After asks too much. */
static long retry_delay_ms(zjuchat_call *call, const zjuchat_error *e)
{
    if (e->retry_after_ms >= 0)
        return e->retry_after_ms <= RETRY_AFTER_CAP_MS ? e->retry_after_ms : -1;
    long cap = call->client->retry_base_ms
               << (call->stats.retries < 16 ? call->stats.retries : 16);
    if (cap > BACKOFF_CAP_MS || cap <= 0)
        cap = BACKOFF_CAP_MS;
    /* "Equal jitter": half fixed, half random, so attempts still back off. */
    return cap / 2 + (long)(rand_r(&call->rng) % (unsigned)(cap / 2 + 1));
}

/* A wait fits the budget when it ends within retry_budget_ms of the call's
 * start: the attempts so far count too, since the caller waits through them
 * as well, and the sum of the waits can never exceed the budget. A delay
 * that does not fit is not shortened (a Retry-After is the upstream's
 * demand): the call ends now with the error, its retry_after_ms kept for
 * the caller to pass on. */
static int fits_retry_budget(zjuchat_call *call, long delay)
{
    long budget = call->client->retry_budget_ms;
    return budget > 0 && delay <= budget - zjuchat__ms_since(&call->start);
}

/* Never once the answer was accepted: on_accepted has told the caller, and
 * chunks may have reached it. */
long zjuchat__retry_wait_ms(zjuchat_call *call, const zjuchat_error *e)
{
    if (!call->accepted && retryable(e) &&
        call->stats.retries < call->client->max_retries) {
        long delay = retry_delay_ms(call, e);
        if (delay >= 0 && fits_retry_budget(call, delay))
            return delay;
    }
    return -1;
}
