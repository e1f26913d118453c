/*
 * api_chat.c - POST /api/chat: the body checked and turned into the
 * upstream's chat-completions body (chat_body.c, the seed's contract and its
 * multi-turn extension), relayed in the seed's dialect (relay.c, dialect.c).
 */
#include "chat_body.h"
#include "dialect.h"
#include "front.h"
#include "http_util.h"
#include "relay.h"
#include "routes.h"

#include <stdio.h>

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
    snprintf(ctx->acc.model, sizeof ctx->acc.model, "%s", b.model);
    ctx->acc.stream = b.stream;
    int rc =
        srv_relay_start(ctx, "chat/completions", b.upstream, b.upstream_len, b.stream);
    srv_chat_body_free(&b);
    return rc;
}
