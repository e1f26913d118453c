/*
 * relay.h - the relay engine: one upstream call and its answer carried to
 * the client, the same for every route; the route's dialect (dialect.h)
 * decides only the error shapes and whether the upstream's [DONE] passes.
 *
 *   non-stream: the upstream's JSON body, byte for byte;
 *   stream: each upstream event as "data: <its bytes>\n\n" from the moment
 *     the upstream accepted the request, ": ping" comments during silences
 *     (HEARTBEAT_MS), the upstream paused while the client's output is above
 *     a high-water mark, a client that takes no byte for 120 s dropped;
 *   a failure before the reply started: the dialect's status and body; after
 *     it started: one error event in the dialect's shape, then the end;
 *   the client gone in any phase: the upstream call is cancelled at once;
 *   the drain deadline: as a failure with the shutdown's reason (503).
 */
#ifndef SRV_RELAY_H
#define SRV_RELAY_H

#include "pipeline.h"

#include <stddef.h>

/* Flags of srv_relay_start */
#define SRV_RELAY_STREAM 0x1u /* the body asks for a stream */
/* Tokens are counted for this request (srv_ctx_counts_usage): when the
 * upstream reports no usage, the access record gets an estimate from the
 * sizes (prompt: body bytes / 4; completion: relayed content and reasoning
 * bytes / 4), marked tokens_estimated. Also for a client that left. */
#define SRV_RELAY_COUNT 0x2u
/* The upstream was asked for usage for the gateway's counting only
 * (stream_options.include_usage added): its usage-only chunk (no choice
 * content, no finish) is recorded but not passed to the client. */
#define SRV_RELAY_HIDE_USAGE 0x4u

/*
 * POST body[0..len) to the upstream's `path` (under ZJU_BASE_URL) and relay
 * the answer to ctx's client. body is copied. Returns SRV_LATER when the
 * call runs (the relay then finishes ctx), SRV_ANSWERED when it could not
 * start and the client was answered already.
 */
int srv_relay_start(srv_ctx *ctx, const char *path, const char *body, size_t len,
                    unsigned flags);

#endif
