/*
 * dotenv.c - reads a .env file into the environment (see dotenv.h). The
 * format is the common one (python-dotenv, docker): KEY=VALUE per line, '#'
 * comments, optional single or double quotes, an optional "export " prefix.
 * Unlike the Flask seed, variables already in the environment win. The
 * static names carry a dotenv_ prefix: fuzz/fuzz_env.c #includes this file
 * next to src/server/config.c, which has its own trim().
 */
#include "dotenv.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DOTENV_LINE_MAX 8192 /* longer lines are rejected, not truncated */

char *zjuchat__trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Strip matching quotes; for unquoted values drop a trailing " # comment". */
static char *dotenv_unquote(char *v)
{
    size_t n = strlen(v);
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
        v[n - 1] = '\0';
        return v + 1;
    }
    for (char *p = v; *p; p++) {
        if (*p == '#' && p > v && isspace((unsigned char)p[-1])) {
            *p = '\0';
            return zjuchat__trim(v);
        }
    }
    return v;
}

int zjuchat__dotenv_load(const char *path, int required, char *errbuf, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!required && errno == ENOENT)
            return 0;
        snprintf(errbuf, errlen, "cannot open env file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[DOTENV_LINE_MAX];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n' && !feof(f)) {
            snprintf(errbuf, errlen, "%s:%d: line too long", path, lineno);
            rc = -1;
            break;
        }
        char *s = zjuchat__trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        if (strncmp(s, "export", 6) == 0 && isspace((unsigned char)s[6]))
            s = zjuchat__trim(s + 6);
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(errbuf, errlen, "%s:%d: expected KEY=VALUE", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = zjuchat__trim(s);
        char *val = dotenv_unquote(zjuchat__trim(eq + 1));
        if (*key == '\0') {
            snprintf(errbuf, errlen, "%s:%d: empty key", path, lineno);
            rc = -1;
            break;
        }
        /* overwrite = 0: the process environment wins over the file */
        setenv(key, val, 0);
    }
    fclose(f);
    return rc;
}
