/*
 * chat.h - one question/answer exchange for zju-chat: the conversation so
 * far, the request built from it and the options, the blocking library call
 * (stream or not) rendered through cli_output, and the mapping of library
 * errors to exit codes and messages.
 */
#ifndef ZJU_CLI_CHAT_H
#define ZJU_CLI_CHAT_H

#include <stddef.h>

#include "options.h"
#include "output.h"
#include "zjuchat.h"

typedef struct cli_turn {
    const char *role; /* static: "user" or "assistant" */
    char *content;    /* new */
} cli_turn;

/* The turns sent with each request (the system message comes from opts). */
typedef struct cli_conversation {
    cli_turn *turns;
    size_t count;
    size_t cap;
    size_t bytes; /* sum of content lengths, capped by CLI_MAX_HISTORY */
} cli_conversation;

/*
 * Append a turn (content copied). When the history would pass its caps, the
 * oldest turns are forgotten first. Returns 0, or -1 on out of memory.
 */
int cli_conv_add(cli_conversation *conv, const char *role, const char *content);
/* Remove the last turn (a question whose answer failed). */
void cli_conv_pop(cli_conversation *conv);
void cli_conv_clear(cli_conversation *conv);

/*
 * Send the conversation and show the answer through out. Returns the
 * library's code; err is filled on failure. A write failure on stdout
 * (e.g. a closed pipe) stops the stream and sets out->write_failed.
 */
zjuchat_code cli_ask(zjuchat_client *client, const cli_options *opts,
                     const cli_conversation *conv, cli_output *out, zjuchat_error *err);

/* Print the models, one id per line (or the raw JSON with --json). */
zjuchat_code cli_list_models(zjuchat_client *client, const cli_options *opts,
                             zjuchat_error *err);

/* Exit code for a library error class. */
int cli_exit_code(zjuchat_code code);

/* "zju-chat: <class>: <message>" on stderr, with the API key redacted. */
void cli_report_error(const zjuchat_error *err);

#endif
