/*
 * sigint.c - the SIGINT handler. It only sets a flag: everything else
 * (cancelling the transfer, restoring the terminal) happens in normal code,
 * where it is safe.
 */
#include "sigint.h"

#include <string.h>

volatile sig_atomic_t cli_interrupted;

static void on_sigint(int signo)
{
    (void)signo;
    cli_interrupted = 1;
}

int cli_sigint_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: see sigint.h */
    return sigaction(SIGINT, &sa, NULL);
}
