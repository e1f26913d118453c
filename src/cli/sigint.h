/*
 * sigint.h - Ctrl-C handling: SIGINT only raises a flag, which the library
 * polls (zjuchat_client_set_cancel_flag) and the prompt reader checks.
 */
#ifndef ZJU_CLI_SIGINT_H
#define ZJU_CLI_SIGINT_H

#include <signal.h>

/* Non-zero once SIGINT arrived; the program clears it when it has acted. */
extern volatile sig_atomic_t cli_interrupted;

/* Install the handler without SA_RESTART, so a blocked read(2) returns EINTR
 * and the program sees the interruption at once. Returns 0 or -1. */
int cli_sigint_install(void);

#endif
