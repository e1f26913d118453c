/*
 * output.h - how zju-chat shows an answer: the answer text on stdout, the
 * reasoning apart from it, or raw JSON lines. Keeps the answer text for the
 * conversation history of interactive mode.
 */
#ifndef ZJU_CLI_OUTPUT_H
#define ZJU_CLI_OUTPUT_H

#include <stddef.h>
#include <stdio.h>

typedef struct cli_output {
    int json;           /* raw JSON instead of text */
    int show_reasoning; /* reasoning shown at all */
    FILE *reasoning_to; /* stdout when it is a terminal, else stderr */
    int dim;            /* reasoning dimmed with ANSI faint */
    int in_reasoning;   /* the [thinking] block is open */
    char reasoning_last;
    char answer_last; /* last answer byte written, '\0' before any */
    int write_failed; /* stdout went away (EPIPE) or a write failed */
    /* The answer kept for history; capped, see CLI_MAX_ANSWER. */
    char *answer;
    size_t answer_len;
    size_t answer_cap;
    int answer_truncated;
} cli_output;

/* Decide where reasoning goes from whether stdout/stderr are terminals. */
void cli_output_init(cli_output *out, int json, int show_reasoning);
/* Forget the previous answer (keeps the settings). */
void cli_output_reset(cli_output *out);
void cli_output_free(cli_output *out);

/* A piece of reasoning / of the answer, as it arrives. Return 0, or -1 when
 * writing failed (the caller should stop the stream). With json set, nothing
 * is printed but the answer is still kept for the conversation. */
int cli_output_reasoning(cli_output *out, const char *text, size_t len);
int cli_output_content(cli_output *out, const char *text, size_t len);
/* One JSON document as one line (re-serialised compactly if it spans lines). */
int cli_output_json_line(cli_output *out, const char *data, size_t len);
/* End of an answer: close the reasoning block, end the line, flush. */
int cli_output_finish(cli_output *out);

#endif
