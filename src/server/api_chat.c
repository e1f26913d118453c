/*
 * api_chat.c - POST /api/chat: the body checked and turned into the
 * upstream's chat-completions body (chat_body.c, the seed's contract and its
 * multi-turn extension), relayed in the seed's dialect (relay.c, dialect.c).
 */
#include "chat_body.h"
#include "dialect.h"
#include "front.h"
#include "openai_body.h"
#include "http_util.h"
#include "relay.h"
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>

int srv_handle_api_chat(srv_ctx *ctx)
{
    srv_chat_body b;
    size_t blen;
    const char *body = srv_req_body(ctx->req, &blen);
    int status = srv_chat_body_parse(srv_req_header(ctx->req, "Content-Type"), body, blen,
                                     ctx->w->cfg, &b);
    if (status != 0) {
        srv_ctx_error(ctx, status, b.msg, NULL, -1);
        srv_chat_body_free(&b);
        return SRV_ANSWERED;
    }
    srv_copy_text(ctx->acc.model, sizeof ctx->acc.model, b.model);
    ctx->acc.stream = b.stream;
    unsigned flags = b.stream ? SRV_RELAY_STREAM : 0;
    const char *up = b.upstream;
    size_t len = b.upstream_len;
    char *asked = NULL;
    if (srv_ctx_counts_usage(ctx)) {
        flags |= SRV_RELAY_COUNT;
        if (b.stream) {
            /* the gateway counts the stream's tokens: ask the upstream for
             * them (the seed's clients never see the usage chunk) */
            up = asked =
                srv_body_put_first(b.upstream, b.upstream_len,
                                   "\"stream_options\":{\"include_usage\":true}", &len);
            flags |= SRV_RELAY_HIDE_USAGE;
        }
    }
    int rc = SRV_ANSWERED;
    if (up)
        rc = srv_relay_start(ctx, "chat/completions", up, len, flags);
    else
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
    free(asked);
    srv_chat_body_free(&b);
    return rc;
}
