/*
 * chat_body.h - the body of POST /api/chat: checked and turned into the
 * upstream's chat/completions body. The seed's form (user_content, optional
 * system_content, model, stream) and its multi-turn extension (messages,
 * temperature, top_p, max_tokens, stop); README.md has the contract.
 */
#ifndef SRV_CHAT_BODY_H
#define SRV_CHAT_BODY_H

#include "config.h"

#include <stddef.h>

typedef struct srv_chat_body {
    char *upstream; /* the JSON body to POST to {base}/chat/completions, malloc'd */
    size_t upstream_len;
    char model[128]; /* the model that goes upstream (default applied), for the
                        access log: cut at 127 bytes, upstream gets it whole */
    int stream;
    char msg[320]; /* on error: the message for the client */
} srv_chat_body;

/*
 * Check the request (Content-Type, size against cfg->max_body, JSON, every
 * field) and build the upstream body with libzjuchat, cfg->default_model
 * (else the library's) for a request that names no model. Returns 0 with
 * b->upstream set, or an HTTP status (400, 413, 415; 500 when out of memory)
 * with b->msg set and b->upstream NULL. Either way srv_chat_body_free(b)
 * after.
 */
int srv_chat_body_parse(const char *content_type, const char *bytes, size_t len,
                        const srv_config *cfg, srv_chat_body *b);

/*
 * The same on jansson's tree alone (no Content-Type or size check): what
 * srv_chat_body_parse falls back to for every body its tree-less pass does
 * not accept, and the reference the fuzzer holds that pass to.
 */
int srv_chat_body_parse_tree(const char *bytes, size_t len, const srv_config *cfg,
                             srv_chat_body *b);

void srv_chat_body_free(srv_chat_body *b);

#endif
