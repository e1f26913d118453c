/*
 * openai.c - OpenAI's API on the gateway: POST /v1/chat/completions and
 * POST /v1/embeddings. The client's body goes upstream as it came, byte for
 * byte, except for the model when it names none (the server's default is
 * put first in the object; every other member, e.g. tools,
 * response_format, stream_options, passes untouched). The client's headers,
 * its Authorization above all, never go upstream: the call carries the
 * server's key only. The few checks made here are what the gateway needs
 * to relay (the stream flag, a model) and what OpenAI answers with 400
 * without a call (openai_body.c); the rest is the upstream's to judge, and its
 * 400/404/422 reach the client as they are (dialect.c).
 */
#include "dialect.h"
#include "front.h"
#include "http_util.h"
#include "openai_body.h"
#include "relay.h"
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zjuchat.h>

static int relay_openai(srv_ctx *ctx, srv_openai_kind kind, const char *path,
                        const char *default_model)
{
    size_t len;
    const char *body = srv_req_body(ctx->req, &len);
    srv_openai_body b;
    int status = srv_openai_body_check(kind, srv_req_header(ctx->req, "Content-Type"),
                                       body, len, &b);
    if (status != 0) {
        srv_ctx_error(ctx, status, b.msg, NULL, -1);
        return SRV_ANSWERED;
    }
    srv_copy_text(ctx->acc.model, sizeof ctx->acc.model,
                  b.has_model ? b.model : default_model);
    ctx->acc.stream = b.stream;
    unsigned flags = b.stream ? SRV_RELAY_STREAM : 0;
    char *owned = NULL;
    if (!b.has_model)
        body = owned = srv_openai_body_with_model(body, len, default_model, &len);
    if (body && b.stream && !b.include_usage && srv_ctx_counts_usage(ctx)) {
        /* the gateway counts the stream's tokens: ask the upstream for them */
        char *asked = srv_openai_body_ask_usage(body, len, &b, &len);
        free(owned);
        body = owned = asked;
        flags |= SRV_RELAY_HIDE_USAGE;
    }
    if (!body) {
        srv_ctx_error(ctx, 500, "out of memory", NULL, -1);
        return SRV_ANSWERED;
    }
    if (srv_ctx_counts_usage(ctx))
        flags |= SRV_RELAY_COUNT;
    int rc = srv_relay_start(ctx, path, body, len, flags);
    free(owned);
    return rc;
}

int srv_handle_chat_completions(srv_ctx *ctx)
{
    const srv_config *cfg = ctx->w->cfg;
    return relay_openai(ctx, SRV_OPENAI_CHAT, "chat/completions",
                        cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL);
}

int srv_handle_embeddings(srv_ctx *ctx)
{
    const srv_config *cfg = ctx->w->cfg;
    return relay_openai(ctx, SRV_OPENAI_EMBEDDINGS, "embeddings",
                        cfg->default_embedding_model);
}
