/*
 * interactive.h - zju-chat's multi-turn conversation on a terminal, with
 * line editing and history from libedit.
 */
#ifndef ZJU_CLI_INTERACTIVE_H
#define ZJU_CLI_INTERACTIVE_H

#include "options.h"
#include "zjuchat.h"

/* Runs until /exit, /quit or Ctrl-D; returns the exit code. */
int cli_interactive(zjuchat_client *client, const cli_options *opts);

#endif
