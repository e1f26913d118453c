/*
 * chat.c - runs one exchange with the API for zju-chat (see chat.h) and
 * turns library errors into exit codes and messages.
 */
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Caps on what interactive mode resends each turn; older turns go first. */
#define CLI_MAX_HISTORY (8 * 1024 * 1024)
#define CLI_MAX_TURNS 512

static void drop_oldest(cli_conversation *conv)
{
    conv->bytes -= strlen(conv->turns[0].content);
    free(conv->turns[0].content);
    memmove(conv->turns, conv->turns + 1, (conv->count - 1) * sizeof(*conv->turns));
    conv->count--;
}

int cli_conv_add(cli_conversation *conv, const char *role, const char *content)
{
    size_t len = strlen(content);
    while (conv->count &&
           (conv->count >= CLI_MAX_TURNS || conv->bytes + len > CLI_MAX_HISTORY))
        drop_oldest(conv);
    if (conv->count == conv->cap) {
        size_t cap = conv->cap ? conv->cap * 2 : 16;
        cli_turn *t = realloc(conv->turns, cap * sizeof(*t));
        if (!t)
            return -1;
        conv->turns = t;
        conv->cap = cap;
    }
    char *copy = strdup(content);
    if (!copy)
        return -1;
    conv->turns[conv->count].role = role;
    conv->turns[conv->count].content = copy;
    conv->count++;
    conv->bytes += len;
    return 0;
}

void cli_conv_pop(cli_conversation *conv)
{
    if (!conv->count)
        return;
    conv->count--;
    conv->bytes -= strlen(conv->turns[conv->count].content);
    free(conv->turns[conv->count].content);
}

void cli_conv_clear(cli_conversation *conv)
{
    while (conv->count)
        cli_conv_pop(conv);
    free(conv->turns);
    conv->turns = NULL;
    conv->cap = 0;
}

static void set_error(zjuchat_error *err, zjuchat_code code, const char *msg)
{
    memset(err, 0, sizeof(*err));
    err->code = code;
    err->retry_after_ms = -1;
    snprintf(err->message, sizeof(err->message), "%s", msg);
}

static zjuchat_request *build_request(const cli_options *opts,
                                      const cli_conversation *conv, zjuchat_error *err)
{
    zjuchat_request *req = zjuchat_request_new();
    if (!req) {
        set_error(err, ZJUCHAT_ERR_NOMEM, "out of memory");
        return NULL;
    }
    zjuchat_code rc = ZJUCHAT_OK;
    if (opts->model && *opts->model)
        rc = zjuchat_request_set_model(req, opts->model);
    if (!rc && opts->system && *opts->system)
        rc = zjuchat_request_add_message(req, "system", opts->system);
    for (size_t i = 0; !rc && i < conv->count; i++)
        rc =
            zjuchat_request_add_message(req, conv->turns[i].role, conv->turns[i].content);
    if (!rc && opts->temperature >= 0)
        rc = zjuchat_request_set_temperature(req, opts->temperature);
    if (!rc && opts->max_tokens > 0)
        rc = zjuchat_request_set_max_tokens(req, opts->max_tokens);
    if (rc) {
        set_error(err, rc,
                  rc == ZJUCHAT_ERR_INVALID
                      ? "the question, system message or model is not valid UTF-8"
                      : "could not build the request");
        zjuchat_request_free(req);
        return NULL;
    }
    return req;
}

static int on_chunk(const zjuchat_chunk *chunk, void *userdata)
{
    cli_output *out = userdata;
    size_t len;
    if (out->json) {
        const char *data = zjuchat_chunk_data(chunk, &len);
        if (data && cli_output_json_line(out, data, len) < 0)
            return 1;
        const char *text = zjuchat_chunk_content(chunk, &len);
        if (text)
            cli_output_content(out, text, len); /* kept for history only */
        return 0;
    }
    const char *text = zjuchat_chunk_reasoning(chunk, &len);
    if (text && cli_output_reasoning(out, text, len) < 0)
        return 1;
    text = zjuchat_chunk_content(chunk, &len);
    if (text && cli_output_content(out, text, len) < 0)
        return 1;
    return 0;
}

/* The answer was cut by the token limit: say so, the text looks complete. */
static void note_finish(const cli_output *out, const char *finish_reason)
{
    if (!out->json && finish_reason && strcmp(finish_reason, "length") == 0)
        fputs("zju-chat: the answer was cut at the token limit "
              "(finish_reason: length)\n",
              stderr);
}

static zjuchat_code ask_once(zjuchat_client *client, const zjuchat_request *req,
                             cli_output *out, zjuchat_error *err)
{
    zjuchat_response *resp = NULL;
    zjuchat_code rc = zjuchat_complete(client, req, &resp, err);
    if (rc)
        return rc;
    size_t len;
    if (out->json) {
        const char *body = zjuchat_response_body(resp, &len);
        cli_output_json_line(out, body ? body : "{}", body ? len : 2);
        const char *text = zjuchat_response_content(resp, &len);
        if (text)
            cli_output_content(out, text, len); /* kept for history only */
    } else {
        const char *text = zjuchat_response_reasoning(resp, &len);
        if (text)
            cli_output_reasoning(out, text, len);
        text = zjuchat_response_content(resp, &len);
        if (text)
            cli_output_content(out, text, len);
        cli_output_finish(out);
        long prompt, completion, total;
        if (zjuchat_response_usage(resp, &prompt, &completion, &total) == 0)
            fprintf(stderr,
                    "usage: prompt_tokens=%ld completion_tokens=%ld "
                    "total_tokens=%ld\n",
                    prompt, completion, total);
        note_finish(out, zjuchat_response_finish_reason(resp));
    }
    zjuchat_response_free(resp);
    return ZJUCHAT_OK;
}

zjuchat_code cli_ask(zjuchat_client *client, const cli_options *opts,
                     const cli_conversation *conv, cli_output *out, zjuchat_error *err)
{
    zjuchat_request *req = build_request(opts, conv, err);
    if (!req)
        return err->code;
    zjuchat_code rc;
    if (opts->no_stream)
        rc = ask_once(client, req, out, err);
    else
        rc = zjuchat_stream(client, req, on_chunk, out, err);
    cli_output_finish(out);
    zjuchat_request_free(req);
    return rc;
}

zjuchat_code cli_list_models(zjuchat_client *client, const cli_options *opts,
                             zjuchat_error *err)
{
    zjuchat_response *resp = NULL;
    zjuchat_code rc = zjuchat_list_models(client, &resp, err);
    if (rc)
        return rc;
    if (opts->json) {
        size_t len;
        const char *body = zjuchat_response_body(resp, &len);
        if (body)
            fwrite(body, 1, len, stdout);
        putchar('\n');
    } else {
        size_t n = zjuchat_response_model_count(resp);
        for (size_t i = 0; i < n; i++) {
            const char *id = zjuchat_response_model_id(resp, i);
            if (id)
                puts(id);
        }
    }
    zjuchat_response_free(resp);
    return fflush(stdout) == 0 ? ZJUCHAT_OK : ZJUCHAT_ERR_INVALID;
}

int cli_exit_code(zjuchat_code code)
{
    switch (code) {
    case ZJUCHAT_OK:
        return CLI_EXIT_OK;
    case ZJUCHAT_ERR_CONFIG:
        return CLI_EXIT_CONFIG;
    case ZJUCHAT_ERR_NETWORK:
        return CLI_EXIT_NETWORK;
    case ZJUCHAT_ERR_TIMEOUT:
        return CLI_EXIT_TIMEOUT;
    case ZJUCHAT_ERR_API:
        return CLI_EXIT_API;
    case ZJUCHAT_ERR_PROTOCOL:
        return CLI_EXIT_PROTOCOL;
    case ZJUCHAT_ERR_CANCELLED:
        return CLI_EXIT_CANCELLED;
    default:
        return CLI_EXIT_OTHER;
    }
}

void cli_report_error(const zjuchat_error *err)
{
    char msg[sizeof(err->message)];
    snprintf(msg, sizeof(msg), "%s", err->message);
    /* The library already redacts; this is a second lock on the same door.
     * A key too short to be used was never sent anywhere, and masking it
     * would garble ordinary words of the message that refuses it. */
    const char *key = getenv("ZJU_API_KEY");
    if (key && strlen(key) >= ZJUCHAT_MIN_KEY_LEN)
        zjuchat_redact(msg, strlen(msg), key);
    const char *cls = zjuchat_strerror(err->code);
    char status[32];
    snprintf(status, sizeof(status), "HTTP %ld", err->http_status);
    /* Name the status unless the library's message already does. */
    if (err->code == ZJUCHAT_ERR_API && err->http_status && !strstr(msg, status))
        fprintf(stderr, "zju-chat: %s (HTTP %ld): %s\n", cls, err->http_status,
                *msg ? msg : "no message");
    else if (*msg)
        fprintf(stderr, "zju-chat: %s: %s\n", cls, msg);
    else
        fprintf(stderr, "zju-chat: %s\n", cls);
}
