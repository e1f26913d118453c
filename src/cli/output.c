/*
 * output.c - renders answers. Rule (also in --help and zju-chat(1)):
 *   - the answer always goes to stdout, flushed as it arrives, and ends with
 *     a newline;
 *   - reasoning goes to stdout when stdout is a terminal, else to stderr, so
 *     that a pipe or a file receives the answer alone;
 *   - reasoning opens with a "[thinking]" line; on a terminal (and without
 *     NO_COLOR) it is dimmed with ANSI faint, otherwise a "[/thinking]" line
 *     closes it, since nothing else would show where it ends.
 */
#include "output.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Longest answer kept for the conversation history. */
#define CLI_MAX_ANSWER (4 * 1024 * 1024)

#define ANSI_FAINT "\033[2m"
#define ANSI_RESET "\033[0m"

void cli_output_init(cli_output *out, int json, int show_reasoning)
{
    memset(out, 0, sizeof(*out));
    out->json = json;
    out->show_reasoning = show_reasoning;
    int out_tty = isatty(STDOUT_FILENO);
    out->reasoning_to = out_tty ? stdout : stderr;
    const char *no_color = getenv("NO_COLOR");
    int colour_ok =
        !(no_color && *no_color) && getenv("TERM") && strcmp(getenv("TERM"), "dumb") != 0;
    out->dim = colour_ok && isatty(fileno(out->reasoning_to));
}

void cli_output_reset(cli_output *out)
{
    out->in_reasoning = 0;
    out->reasoning_last = '\0';
    out->answer_last = '\0';
    out->answer_len = 0;
    out->answer_truncated = 0;
    if (out->answer)
        out->answer[0] = '\0';
}

void cli_output_free(cli_output *out)
{
    free(out->answer);
    out->answer = NULL;
    out->answer_len = out->answer_cap = 0;
}

static int put(cli_output *out, FILE *f, const char *s, size_t len)
{
    if (len && fwrite(s, 1, len, f) != len)
        out->write_failed = 1;
    if (fflush(f) != 0)
        out->write_failed = 1;
    return out->write_failed ? -1 : 0;
}

static int puts_raw(cli_output *out, FILE *f, const char *s)
{
    return put(out, f, s, strlen(s));
}

/* Keeps the answer text for history, up to CLI_MAX_ANSWER bytes. */
static void keep_answer(cli_output *out, const char *text, size_t len)
{
    if (out->answer_len + len > CLI_MAX_ANSWER) {
        out->answer_truncated = 1;
        len = CLI_MAX_ANSWER - out->answer_len;
    }
    if (out->answer_len + len + 1 > out->answer_cap) {
        size_t cap = out->answer_cap ? out->answer_cap : 4096;
        while (cap < out->answer_len + len + 1)
            cap *= 2;
        char *p = realloc(out->answer, cap);
        if (!p) {
            out->answer_truncated = 1;
            return;
        }
        out->answer = p;
        out->answer_cap = cap;
    }
    memcpy(out->answer + out->answer_len, text, len);
    out->answer_len += len;
    out->answer[out->answer_len] = '\0';
}

static int close_reasoning(cli_output *out)
{
    if (!out->in_reasoning)
        return 0;
    out->in_reasoning = 0;
    FILE *f = out->reasoning_to;
    int rc = 0;
    if (out->reasoning_last != '\n')
        rc |= puts_raw(out, f, "\n");
    if (out->dim)
        rc |= puts_raw(out, f, ANSI_RESET "\n");
    else
        rc |= puts_raw(out, f, "[/thinking]\n");
    return rc;
}

int cli_output_reasoning(cli_output *out, const char *text, size_t len)
{
    if (!out->show_reasoning || out->json || len == 0)
        return 0;
    FILE *f = out->reasoning_to;
    int rc = 0;
    if (!out->in_reasoning) {
        /* Reasoning after answer text has started (rare): keep them apart. */
        if (f == stdout && out->answer_last && out->answer_last != '\n')
            rc |= puts_raw(out, f, "\n");
        rc |= puts_raw(out, f, out->dim ? ANSI_FAINT "[thinking]\n" : "[thinking]\n");
        out->in_reasoning = 1;
    }
    rc |= put(out, f, text, len);
    out->reasoning_last = text[len - 1];
    return rc ? -1 : 0;
}

int cli_output_content(cli_output *out, const char *text, size_t len)
{
    if (len == 0)
        return 0;
    if (out->json) { /* printed as JSON by the caller; kept for history */
        keep_answer(out, text, len);
        return 0;
    }
    int rc = close_reasoning(out);
    rc |= put(out, stdout, text, len);
    out->answer_last = text[len - 1];
    keep_answer(out, text, len);
    return rc ? -1 : 0;
}

int cli_output_json_line(cli_output *out, const char *data, size_t len)
{
    if (!memchr(data, '\n', len) && !memchr(data, '\r', len)) {
        int rc = put(out, stdout, data, len);
        return rc | put(out, stdout, "\n", 1);
    }
    json_t *doc = json_loadb(data, len, 0, NULL);
    char *flat = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!flat) { /* not JSON after all: print it as it came, never drop it */
        for (size_t i = 0; i < len; i++) {
            char c = (data[i] == '\n' || data[i] == '\r') ? ' ' : data[i];
            put(out, stdout, &c, 1);
        }
        return put(out, stdout, "\n", 1);
    }
    int rc = puts_raw(out, stdout, flat);
    free(flat);
    return rc | put(out, stdout, "\n", 1);
}

int cli_output_finish(cli_output *out)
{
    if (out->json)
        return fflush(stdout) == 0 ? 0 : -1;
    int rc = close_reasoning(out);
    if (out->answer_last && out->answer_last != '\n') {
        rc |= puts_raw(out, stdout, "\n");
        out->answer_last = '\n'; /* finishing twice adds nothing */
    }
    return rc ? -1 : 0;
}
