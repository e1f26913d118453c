/*
 * options.h - command-line options of zju-chat and the exit codes it uses.
 * Parsing lives apart from the chat logic so main() reads as a dispatch.
 */
#ifndef ZJU_CLI_OPTIONS_H
#define ZJU_CLI_OPTIONS_H

/* Exit codes, one per error class (documented in --help and zju-chat(1)). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_OTHER = 1,
    CLI_EXIT_USAGE = 2,
    CLI_EXIT_CONFIG = 3,
    CLI_EXIT_NETWORK = 4,
    CLI_EXIT_TIMEOUT = 5,
    CLI_EXIT_API = 6,
    CLI_EXIT_PROTOCOL = 7,
    CLI_EXIT_CANCELLED = 130
};

typedef struct cli_options {
    const char *model;       /* NULL: library default */
    const char *system;      /* NULL: no system message */
    const char *base_url;    /* NULL: env ZJU_BASE_URL, then default */
    const char *env_file;    /* --env-file; NULL: ./.env when present */
    int no_stream;           /* --no-stream */
    int json;                /* --json */
    int no_reasoning;        /* --no-reasoning */
    int list_models;         /* --list-models */
    long connect_timeout_ms; /* -1: library default */
    long timeout_ms;         /* first byte and idle; -1: library default */
    long max_time_ms;        /* total; -1: library default (none) */
    long max_tokens;         /* -1: not sent */
    double temperature;      /* < 0: not sent */
    int retries;             /* -1: library default */
    char *question;          /* new (free()): joined positional args, or NULL */
} cli_options;

/*
 * Parse argv into *opts. Returns -1 when parsing succeeded and the program
 * should go on, or an exit code when it should stop now (--help and
 * --version print and return 0; a usage error prints to stderr and returns
 * CLI_EXIT_USAGE).
 */
int cli_parse_options(int argc, char **argv, cli_options *opts);

/* Release what cli_parse_options allocated. */
void cli_options_free(cli_options *opts);

#endif
