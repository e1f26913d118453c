/*
 * interactive.c - the conversation loop: read a line with libedit, send it
 * with every previous turn, show the answer, remember both turns.
 *
 * Ctrl-C: during an answer, the library sees the flag and stops the
 * transfer; the unanswered question is forgotten and the prompt comes back.
 * At the prompt, it abandons the line being typed. For the latter the
 * characters are read by our own function (EL_GETCFN): libedit's built-in
 * reader retries a read(2) interrupted by a signal, so a single Ctrl-C
 * would not reach us.
 */
#include "interactive.h"

#include <errno.h>
#include <histedit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include "chat.h"
#include "output.h"
#include "sigint.h"

#define CLI_HISTORY_LINES 500

static char *prompt(EditLine *el)
{
    (void)el;
    return "you> ";
}

/* One wide character from stdin for libedit: 1 read, 0 end of file, -1
 * error or Ctrl-C. Multibyte input is decoded with the locale (mbrtowc). */
static int read_char(EditLine *el, wchar_t *wc)
{
    static mbstate_t state;
    (void)el;
    for (;;) {
        if (cli_interrupted) {
            errno = EINTR;
            return -1;
        }
        char c;
        ssize_t n = read(STDIN_FILENO, &c, 1);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue; /* the flag check above decides */
            return -1;
        }
        size_t k = mbrtowc(wc, &c, 1, &state);
        if (k == (size_t)-2)
            continue; /* inside a multibyte sequence */
        if (k == (size_t)-1) {
            memset(&state, 0, sizeof(state)); /* invalid byte: skip it */
            continue;
        }
        return 1;
    }
}

/* Copy of the line without the trailing newline and spaces (new). */
static char *trimmed(const char *line)
{
    while (*line == ' ' || *line == '\t')
        line++;
    size_t len = strlen(line);
    while (len && strchr(" \t\r\n", line[len - 1]))
        len--;
    return strndup(line, len);
}

static void print_commands(void)
{
    fputs("Commands: /reset forgets the conversation, /exit or Ctrl-D leaves,\n"
          "Ctrl-C stops an answer (or clears the line being typed).\n",
          stderr);
}

/* Sends the question with the conversation; keeps both turns on success. */
static void exchange(zjuchat_client *client, const cli_options *opts,
                     cli_conversation *conv, cli_output *out, const char *question)
{
    if (cli_conv_add(conv, "user", question) < 0) {
        fputs("zju-chat: out of memory\n", stderr);
        return;
    }
    cli_output_reset(out);
    zjuchat_error err;
    memset(&err, 0, sizeof(err));
    zjuchat_code rc = cli_ask(client, opts, conv, out, &err);
    if (rc == ZJUCHAT_OK) {
        if (out->answer_truncated)
            fputs("zju-chat: answer too long to keep whole in the conversation\n",
                  stderr);
        if (cli_conv_add(conv, "assistant", out->answer ? out->answer : "") < 0) {
            cli_conv_pop(conv);
            fputs("zju-chat: out of memory\n", stderr);
        }
        return;
    }
    /* An unanswered question would leave two user turns in a row. */
    cli_conv_pop(conv);
    if (rc == ZJUCHAT_ERR_CANCELLED && cli_interrupted)
        fputs("[cancelled]\n", stderr);
    else
        cli_report_error(&err);
}

int cli_interactive(zjuchat_client *client, const cli_options *opts)
{
    /* The prompt and echo go to the terminal even when stdout is redirected. */
    FILE *term_out = isatty(STDOUT_FILENO) ? stdout : stderr;
    EditLine *el = el_init("zju-chat", stdin, term_out, stderr);
    History *hist = history_init();
    if (!el || !hist) {
        fputs("zju-chat: cannot start line editing\n", stderr);
        if (el)
            el_end(el);
        if (hist)
            history_end(hist);
        return CLI_EXIT_OTHER;
    }
    HistEvent ev;
    history(hist, &ev, H_SETSIZE, CLI_HISTORY_LINES);
    el_set(el, EL_EDITOR, "emacs");
    el_set(el, EL_PROMPT, prompt);
    el_set(el, EL_HIST, history, hist);
    el_set(el, EL_GETCFN, read_char);
    el_source(el, NULL); /* the user's ~/.editrc, if any */

    cli_output out;
    cli_output_init(&out, opts->json, !opts->no_reasoning);
    cli_conversation conv = {0};
    fprintf(stderr, "zju-chat %s, model %s. /exit or Ctrl-D to leave, /help for more.\n",
            zjuchat_client_base_url(client),
            opts->model && *opts->model ? opts->model : ZJUCHAT_DEFAULT_MODEL);

    for (;;) {
        cli_interrupted = 0;
        int count = 0;
        const char *line = el_gets(el, &count);
        if (cli_interrupted) { /* Ctrl-C at the prompt: drop the line */
            fputs("\n", term_out);
            continue;
        }
        if (!line || count <= 0) {
            fputs("\n", term_out);
            break; /* Ctrl-D or end of input */
        }
        char *q = trimmed(line);
        if (!q) {
            fputs("zju-chat: out of memory\n", stderr);
            break;
        }
        if (!*q) {
            free(q);
            continue;
        }
        history(hist, &ev, H_ENTER, q);
        if (strcmp(q, "/exit") == 0 || strcmp(q, "/quit") == 0) {
            free(q);
            break;
        } else if (strcmp(q, "/reset") == 0) {
            cli_conv_clear(&conv);
            fputs("(conversation forgotten)\n", stderr);
        } else if (strcmp(q, "/help") == 0) {
            print_commands();
        } else if (q[0] == '/' && !strchr(q, ' ')) {
            fprintf(stderr, "zju-chat: unknown command %s (try /help)\n", q);
        } else {
            exchange(client, opts, &conv, &out, q);
        }
        free(q);
    }
    cli_conv_clear(&conv);
    cli_output_free(&out);
    history_end(hist);
    el_end(el);
    return CLI_EXIT_OK;
}
