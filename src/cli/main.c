/*
 * main.c - zju-chat: ask the ZJU Chat API from a shell. Decides between the
 * three ways of asking (question as arguments, question on stdin, an
 * interactive conversation) and turns the outcome into an exit code.
 */
#include <errno.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chat.h"
#include "dotenv.h"
#include "interactive.h"
#include "options.h"
#include "output.h"
#include "sigint.h"
#include "zjuchat.h"

/* Largest question accepted on stdin. */
#define CLI_MAX_STDIN (1024 * 1024)

/* The whole of stdin, trailing whitespace removed (new); NULL on error,
 * with a message already printed. */
static char *read_stdin(void)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        goto nomem;
    for (;;) {
        if (len + 1 == cap) {
            if (cap > CLI_MAX_STDIN) {
                fprintf(stderr, "zju-chat: question on stdin longer than %d bytes\n",
                        CLI_MAX_STDIN);
                free(buf);
                return NULL;
            }
            char *p = realloc(buf, cap * 2);
            if (!p)
                goto nomem;
            buf = p;
            cap *= 2;
        }
        ssize_t n = read(STDIN_FILENO, buf + len, cap - 1 - len);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno == EINTR && !cli_interrupted)
                continue;
            if (!cli_interrupted)
                fprintf(stderr, "zju-chat: reading stdin: %s\n", strerror(errno));
            free(buf);
            return NULL;
        }
        len += (size_t)n;
    }
    while (len && strchr(" \t\r\n", buf[len - 1]))
        len--;
    buf[len] = '\0';
    return buf;
nomem:
    free(buf);
    fputs("zju-chat: out of memory\n", stderr);
    return NULL;
}

/* Applies the timeout/retry options; returns 0 or an exit code. */
static int configure(zjuchat_client *client, const cli_options *o)
{
    zjuchat_code rc = ZJUCHAT_OK;
    if (o->connect_timeout_ms >= 0)
        rc |= zjuchat_client_set_timeout(client, ZJUCHAT_TIMEOUT_OPT_CONNECT,
                                         o->connect_timeout_ms);
    /* One user-facing knob for "the upstream went quiet": before the status
     * line and between body bytes. */
    if (o->timeout_ms >= 0) {
        rc |= zjuchat_client_set_timeout(client, ZJUCHAT_TIMEOUT_OPT_FIRST_BYTE,
                                         o->timeout_ms);
        rc |= zjuchat_client_set_timeout(client, ZJUCHAT_TIMEOUT_OPT_IDLE, o->timeout_ms);
    }
    if (o->max_time_ms >= 0)
        rc |=
            zjuchat_client_set_timeout(client, ZJUCHAT_TIMEOUT_OPT_TOTAL, o->max_time_ms);
    if (o->retries >= 0)
        rc |= zjuchat_client_set_retries(client, o->retries, 200);
    if (rc) {
        fputs("zju-chat: the library refused a timeout or retry setting\n", stderr);
        return CLI_EXIT_USAGE;
    }
    zjuchat_client_set_cancel_flag(client, &cli_interrupted);
    return 0;
}

/* ./.env (or --env-file, which must exist) into the environment, read by
 * the same code and with the same precedence as zju-chat-server: a key kept
 * next to the server's settings works for both. Returns 0 or an exit code. */
static int load_env_file(const cli_options *opts)
{
    char err[512];
    const char *path = opts->env_file ? opts->env_file : ".env";
    if (zjuchat__dotenv_load(path, opts->env_file != NULL, err, sizeof err) < 0) {
        fprintf(stderr, "zju-chat: configuration error: %s\n", err);
        return CLI_EXIT_CONFIG;
    }
    return 0;
}

/* One question, answered on stdout; returns the exit code. */
static int ask_one(zjuchat_client *client, const cli_options *opts, const char *q)
{
    cli_conversation conv = {0};
    if (cli_conv_add(&conv, "user", q) < 0) {
        fputs("zju-chat: out of memory\n", stderr);
        return CLI_EXIT_OTHER;
    }
    cli_output out;
    cli_output_init(&out, opts->json, !opts->no_reasoning);
    zjuchat_error err;
    memset(&err, 0, sizeof(err));
    zjuchat_code rc = cli_ask(client, opts, &conv, &out, &err);
    int code = cli_exit_code(rc);
    if (out.write_failed) {
        /* stdout closed under us (e.g. `| head`): nothing useful to say. */
        code = CLI_EXIT_OTHER;
    } else if (rc == ZJUCHAT_ERR_CANCELLED) {
        fputs("zju-chat: cancelled\n", stderr);
    } else if (rc) {
        cli_report_error(&err);
    }
    cli_output_free(&out);
    cli_conv_clear(&conv);
    return code;
}

static int run(const cli_options *opts)
{
    zjuchat_error err;
    memset(&err, 0, sizeof(err));
    zjuchat_client *client = zjuchat_client_new(NULL, opts->base_url, &err);
    if (!client) {
        cli_report_error(&err);
        return cli_exit_code(err.code ? err.code : ZJUCHAT_ERR_CONFIG);
    }
    int code = configure(client, opts);
    if (code) {
        zjuchat_client_free(client);
        return code;
    }

    if (opts->list_models) {
        zjuchat_code rc = cli_list_models(client, opts, &err);
        if (rc == ZJUCHAT_ERR_CANCELLED)
            fputs("zju-chat: cancelled\n", stderr);
        else if (rc)
            cli_report_error(&err);
        code = cli_exit_code(rc);
    } else if (opts->question) {
        code = ask_one(client, opts, opts->question);
    } else if (!isatty(STDIN_FILENO)) {
        char *q = read_stdin();
        if (!q) {
            code = cli_interrupted ? CLI_EXIT_CANCELLED : CLI_EXIT_OTHER;
        } else if (!*q) {
            fputs("zju-chat: no question (standard input was empty)\n", stderr);
            code = CLI_EXIT_USAGE;
        } else {
            code = ask_one(client, opts, q);
        }
        free(q);
    } else {
        code = cli_interactive(client, opts);
    }
    zjuchat_client_free(client);
    return code;
}

int main(int argc, char **argv)
{
    setlocale(LC_CTYPE, ""); /* libedit decodes the terminal's UTF-8 with it */
    cli_options opts;
    int code = cli_parse_options(argc, argv, &opts);
    if (code >= 0) {
        cli_options_free(&opts);
        return code;
    }
    /* A closed stdout shows up as a write error, handled where it happens. */
    signal(SIGPIPE, SIG_IGN);
    if (cli_sigint_install() < 0) {
        perror("zju-chat: sigaction");
        cli_options_free(&opts);
        return CLI_EXIT_OTHER;
    }
    code = load_env_file(&opts);
    if (!code)
        code = run(&opts);
    cli_options_free(&opts);
    return code;
}
