/*
 * options.c - parses zju-chat's command line (getopt_long) and prints
 * --help and --version. The API key is deliberately not an option: anything
 * on a command line is visible to every user through ps(1).
 */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zjuchat.h"

#ifndef ZJU_CHAT_VERSION
#define ZJU_CHAT_VERSION "0.1.0"
#endif

/* A question given as arguments is joined with spaces; cap it like stdin. */
#define CLI_MAX_QUESTION (1024 * 1024)

enum {
    OPT_NO_STREAM = 256,
    OPT_NO_REASONING,
    OPT_CONNECT_TIMEOUT,
    OPT_MAX_TIME,
    OPT_MAX_TOKENS,
    OPT_TEMPERATURE,
    OPT_RETRIES,
    OPT_ENV_FILE,
    OPT_API_KEY
};

static const struct option long_opts[] = {
    {"model", required_argument, NULL, 'm'},
    {"system", required_argument, NULL, 's'},
    {"base-url", required_argument, NULL, 'u'},
    {"no-stream", no_argument, NULL, OPT_NO_STREAM},
    {"json", no_argument, NULL, 'j'},
    {"no-reasoning", no_argument, NULL, OPT_NO_REASONING},
    {"list-models", no_argument, NULL, 'l'},
    {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
    {"timeout", required_argument, NULL, 't'},
    {"max-time", required_argument, NULL, OPT_MAX_TIME},
    {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
    {"temperature", required_argument, NULL, OPT_TEMPERATURE},
    {"retries", required_argument, NULL, OPT_RETRIES},
    {"env-file", required_argument, NULL, OPT_ENV_FILE},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    /* Not offered, only caught to explain why (see the file comment). */
    {"api-key", required_argument, NULL, OPT_API_KEY},
    {"key", required_argument, NULL, OPT_API_KEY},
    {NULL, 0, NULL, 0}};

static void print_help(FILE *f)
{
    fprintf(
        f, "Usage: zju-chat [OPTION]... [QUESTION]...\n"
           "Ask the ZJU Chat API a question and print the answer as it arrives.\n"
           "\n"
           "With no QUESTION, the question is read from standard input when it\n"
           "is not a terminal; on a terminal, an interactive conversation starts\n"
           "(/reset forgets the conversation, /exit or Ctrl-D leaves).\n"
           "\n"
           "  -m, --model NAME         model (default " ZJUCHAT_DEFAULT_MODEL ")\n"
           "  -s, --system TEXT        system message sent before the question\n"
           "      --no-stream          wait for the whole answer, then print it\n"
           "                           and a usage line (token counts, on stderr)\n"
           "  -j, --json               print the raw response JSON; when streaming,\n"
           "                           one chunk JSON object per line\n"
           "      --no-reasoning       do not show the model's reasoning\n"
           "  -l, --list-models        list the models the API offers\n"
           "  -u, --base-url URL       API base URL (default: env ZJU_BASE_URL,\n"
           "                           else " ZJUCHAT_DEFAULT_BASE_URL ")\n"
           "      --connect-timeout S  seconds to connect (default 10)\n"
           "  -t, --timeout S          seconds to wait for the reply to start and\n"
           "                           longest silence inside it (default 60/300)\n"
           "      --max-time S         seconds for the whole answer (default none)\n"
           "      --max-tokens N       longest answer, in tokens\n"
           "      --temperature T      sampling temperature (0 to 2)\n"
           "      --retries N          retries on connect failure, 429, 5xx (default 2)\n"
           "      --env-file PATH      read KEY=VALUE settings from PATH (default:\n"
           "                           ./.env when present); variables already in\n"
           "                           the environment win\n"
           "  -h, --help               show this help and exit\n"
           "  -V, --version            show the version and exit\n"
           "\n"
           "Reasoning (reasoning_content) is shown apart from the answer: on a\n"
           "terminal, dimmed under a [thinking] marker; when standard output is\n"
           "not a terminal, it goes to standard error so that standard output\n"
           "holds the answer alone. Set NO_COLOR to disable dimming.\n"
           "\n"
           "Environment (also read from ./.env, like zju-chat-server does):\n"
           "  ZJU_API_KEY    API key (required; never accepted as an argument)\n"
           "  ZJU_BASE_URL   API base URL\n"
           "\n"
           "Exit status:\n"
           "  0 success, 1 other failure, 2 usage error, 3 configuration error\n"
           "  (e.g. ZJU_API_KEY not set), 4 network error, 5 timeout, 6 API error\n"
           "  (the upstream answered an HTTP error), 7 protocol error (malformed\n"
           "  reply), 130 cancelled (Ctrl-C).\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fputs("zju-chat: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'zju-chat --help' for more information.\n", stderr);
    return CLI_EXIT_USAGE;
}

/* Seconds (fractions allowed) to milliseconds; -1 on a bad value. */
static long parse_seconds(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < 0 || v > 86400.0 * 365)
        return -1;
    return (long)(v * 1000.0 + 0.5);
}

static long parse_long(const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return min - 1;
    return v;
}

/* Joins argv[first..argc) with single spaces into a new string. */
static char *join_args(int argc, char **argv, int first)
{
    size_t len = 0;
    for (int i = first; i < argc; i++)
        len += strlen(argv[i]) + 1;
    if (len > CLI_MAX_QUESTION)
        return NULL;
    char *q = malloc(len ? len : 1);
    if (!q)
        return NULL;
    q[0] = '\0';
    size_t at = 0;
    for (int i = first; i < argc; i++) {
        size_t n = strlen(argv[i]);
        if (at)
            q[at++] = ' ';
        memcpy(q + at, argv[i], n);
        at += n;
    }
    q[at] = '\0';
    return q;
}

static int set_option(int c, const char *arg, cli_options *o)
{
    switch (c) {
    case 'm':
        o->model = arg;
        return -1;
    case 's':
        o->system = arg;
        return -1;
    case 'u':
        o->base_url = arg;
        return -1;
    case OPT_NO_STREAM:
        o->no_stream = 1;
        return -1;
    case 'j':
        o->json = 1;
        return -1;
    case OPT_NO_REASONING:
        o->no_reasoning = 1;
        return -1;
    case 'l':
        o->list_models = 1;
        return -1;
    case OPT_CONNECT_TIMEOUT:
        o->connect_timeout_ms = parse_seconds(arg);
        return o->connect_timeout_ms < 0 ? usage_error("bad --connect-timeout: %s", arg)
                                         : -1;
    case 't':
        o->timeout_ms = parse_seconds(arg);
        return o->timeout_ms < 0 ? usage_error("bad --timeout: %s", arg) : -1;
    case OPT_MAX_TIME:
        o->max_time_ms = parse_seconds(arg);
        return o->max_time_ms < 0 ? usage_error("bad --max-time: %s", arg) : -1;
    case OPT_MAX_TOKENS:
        o->max_tokens = parse_long(arg, 1, 10000000);
        return o->max_tokens < 1 ? usage_error("bad --max-tokens: %s", arg) : -1;
    case OPT_TEMPERATURE: {
        char *end;
        errno = 0;
        o->temperature = strtod(arg, &end);
        if (errno || end == arg || *end || !(o->temperature >= 0 && o->temperature <= 2))
            return usage_error("bad --temperature (0 to 2): %s", arg);
        return -1;
    }
    case OPT_ENV_FILE:
        o->env_file = arg;
        return -1;
    case OPT_RETRIES:
        o->retries = (int)parse_long(arg, 0, 100);
        return o->retries < 0 ? usage_error("bad --retries (0 to 100): %s", arg) : -1;
    case OPT_API_KEY:
        return usage_error("%s", "the API key is read only from the environment "
                                 "variable ZJU_API_KEY (a command-line argument is "
                                 "visible to other users)");
    case 'h':
        print_help(stdout);
        return CLI_EXIT_OK;
    case 'V':
        printf("zju-chat %s\n", ZJU_CHAT_VERSION);
        return CLI_EXIT_OK;
    default: /* getopt_long already printed what was wrong */
        fputs("Try 'zju-chat --help' for more information.\n", stderr);
        return CLI_EXIT_USAGE;
    }
}

int cli_parse_options(int argc, char **argv, cli_options *o)
{
    memset(o, 0, sizeof(*o));
    o->connect_timeout_ms = -1;
    o->timeout_ms = -1;
    o->max_time_ms = -1;
    o->max_tokens = -1;
    o->temperature = -1;
    o->retries = -1;

    int c;
    while ((c = getopt_long(argc, argv, "m:s:u:jlt:hV", long_opts, NULL)) != -1) {
        int rc = set_option(c, optarg, o);
        if (rc >= 0)
            return rc;
    }
    if (optind < argc) {
        if (o->list_models)
            return usage_error("%s", "--list-models takes no question");
        o->question = join_args(argc, argv, optind);
        if (!o->question)
            return usage_error("%s", "question too long (or out of memory)");
    }
    return -1;
}

void cli_options_free(cli_options *o)
{
    free(o->question);
    o->question = NULL;
}
