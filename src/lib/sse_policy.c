/*
 * sse_policy.c - what of an upstream event stream reaches the caller's
 * on_chunk: every event whose data is a JSON object (with the key masked,
 * even behind JSON escapes), nothing after [DONE], the [DONE] marker itself
 * only for ZJUCHAT_CALL_PASS_DONE; other data is skipped and counted. The
 * parsing of the stream is sse.c's; this is the policy on top of it, and
 * the record (saw_done, saw_finish) outcome.c judges the stream's end by.
 */
#include "call.h"

#include <stdlib.h>
#include <string.h>

/* Runs on_chunk; ZJUCHAT_STOP ends the call as cancelled. Returns what the
 * SSE parser should: non-zero to stop parsing. */
static inline __attribute__((always_inline)) int deliver_chunk(zjuchat_call *call,
                                                               zjuchat_chunk *chunk)
{
    int r = 0;
    if (call->cb.on_chunk) {
        call->in_callback++;
        r = call->cb.on_chunk(call, chunk, call->userdata);
        call->in_callback--;
    }
    /* Built or decoded by an accessor, if one asked (most events: none). */
    if (chunk->json || chunk->text[0] || chunk->text[1]) {
        json_decref(chunk->json);
        chunk->json = NULL;
        free(chunk->text[0]);
        free(chunk->text[1]);
        chunk->text[0] = chunk->text[1] = NULL;
    }
    if (r == ZJUCHAT_STOP)
        zjuchat__call_set_pending(call, ZJUCHAT_ERR_CANCELLED, ZJUCHAT_DETAIL_NONE,
                                  "stream stopped by the caller");
    return call->abort ? 1 : 0;
}

int zjuchat__call_on_sse_event(void *userdata, const char *event, const char *data,
                               size_t len)
{
    zjuchat_call *call = userdata;
    if (call->saw_done)
        return 0; /* nothing after [DONE] counts */
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        call->saw_done = 1;
        call->stats.saw_done = 1;
        /* A relay that speaks OpenAI's protocol forwards the marker. */
        zjuchat_chunk done = {.data = data, .len = len, .done = 1};
        return call->pass_done ? deliver_chunk(call, &done) : 0;
    }
    /* The parser hands out its own buffer, writable: a key echoed as is is
     * masked in place so no copy of the event is needed. The scan tells
     * whether the bytes can hold it (secret_raw); only then does the raw
     * pass run (a search of every event was a tenth of its instructions),
     * and the event is scanned again as the masked bytes say. Without a
     * copy of the key, masking changes nothing, so scanning first is the
     * same as masking first. */
    const char *key = call->client->api_key;
    /* Field by field: zeroing the whole chunk first, scan included, cost
     * more than the scan of an event's first bytes. */
    zjuchat_chunk chunk;
    chunk.data = data;
    chunk.len = len;
    chunk.json = NULL;
    chunk.parsed = 0;
    chunk.done = 0;
    chunk.text[0] = chunk.text[1] = NULL;
    /* The stream's events share their first bytes: the memo lets the scan
     * of each start where they part (scan.c). Without it (OOM) the scan
     * reads every byte, as it can. */
    zjuchat__scan_memo *memo = zjuchat__sse_scratch(call->sse, sizeof *memo);
    int rc = zjuchat__scan_json_memo(data, len, key, &chunk.scan, memo);
    if (rc != -2 && chunk.scan.secret_raw && zjuchat_redact((char *)data, len, key) > 0)
        rc = zjuchat__scan_json_memo(data, len, key, &chunk.scan, memo);
    if (rc == -2) {
        zjuchat__call_set_pending(call, ZJUCHAT_ERR_NOMEM, ZJUCHAT_DETAIL_NONE,
                                  "out of memory");
        return 1;
    }
    if (!chunk.scan.valid || !chunk.scan.is_object) {
        call->stats.skipped++;
        return 0;
    }
    if (chunk.scan.finish)
        call->saw_finish = 1;
    call->stats.events++;
    char *clean = NULL;
    if (chunk.scan.secret_seen) {
        /* Rare: the key hides behind JSON escapes. Rebuild the event. */
        size_t clean_len = 0;
        chunk.json = json_loadb(data, len, JSON_ALLOW_NUL, NULL);
        chunk.parsed = 1;
        clean = zjuchat__redact_json(data, len, chunk.json, call->client->api_key,
                                     &clean_len);
        if (clean) {
            chunk.data = clean;
            chunk.len = clean_len;
        }
    }
    int r = deliver_chunk(call, &chunk);
    if (clean)
        free(clean);
    return r;
}
