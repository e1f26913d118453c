/*
 * chat.h - POST /api/chat: validation, the upstream call and the relay.
 */
#ifndef SRV_CHAT_H
#define SRV_CHAT_H

#include "accesslog.h"
#include "worker.h"

struct srv_request;

/*
 * Handle one POST /api/chat. `acc` is the request's access record (begun).
 * Returns 0 when the reply was sent already (the caller writes acc), 1 when
 * the request went asynchronous (the relay writes its own access line).
 */
int srv_chat_handle(srv_worker *w, struct srv_request *req, srv_access *acc);

/* End every relay in progress now: streams get one error event carrying
 * `reason` and their terminating chunk, waiting non-stream requests a 503.
 * Used when the drain deadline passes, so nothing is cut mid-frame. */
void srv_chat_abort_all(srv_worker *w, const char *reason);

#endif
