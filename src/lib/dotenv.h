/*
 * dotenv.h - the .env reader that zju-chat and zju-chat-server share, so
 * both find the same settings in the same file with the same precedence.
 * Internal to libzjuchat (never installed); the zjuchat__ name may change.
 */
#ifndef ZJUCHAT_DOTENV_H
#define ZJUCHAT_DOTENV_H

#include <stddef.h>

/*
 * Read `path` (KEY=VALUE lines, '#' comments, optional single or double
 * quotes, an optional "export " prefix) into the process environment,
 * without replacing variables that are already set: an operator's explicit
 * setting is never silently overridden by a file. A missing file is fine
 * unless `required`. Returns 0, or -1 with a message naming the file (and
 * line) in errbuf; lines read before a bad one are already applied.
 */
int zjuchat__dotenv_load(const char *path, int required, char *errbuf, size_t errlen);

/* s without leading and trailing white space: trailing bytes are cut in
 * place, the result points into s. */
char *zjuchat__trim(char *s);

#endif
