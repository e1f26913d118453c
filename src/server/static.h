/*
 * static.h - the chat page (web/) at GET/HEAD / and /assets/...: the files
 * of web/dist built into the binary (the Makefile generates them into a C
 * source with web/embed.c), or those of the directory WEB_ROOT names, or
 * nothing (WEB_ROOT=off: 404 as for any unknown path).
 */
#ifndef SRV_STATIC_H
#define SRV_STATIC_H

#include <stddef.h>

/* One file of web/dist as the generated source holds it. */
typedef struct srv_web_file {
    const char *path; /* "/index.html", "/assets/main.js" */
    const unsigned char *data;
    size_t len;
    const char *etag; /* quoted, from a hash of the content */
} srv_web_file;

/* The generated table (web_files.c in the build directory). */
extern const srv_web_file srv_web_files[];
extern const size_t srv_web_files_count;

/* The Content-Type for a file name, by its extension. */
const char *srv_static_content_type(const char *path);

/* 1 when a request path may name a file: '/'-separated names of letters,
 * digits, '-', '_', '.' and '~', none empty or starting with '.' (so no
 * "..", no hidden files, nothing percent-encoded). Everything else is 404,
 * before the file system is asked. */
int srv_static_path_ok(const char *path);

/* 1 when an If-None-Match value matches etag ("*" or one of a list; weak
 * comparison, RFC 9110 13.1.2). */
int srv_static_etag_matches(const char *if_none_match, const char *etag);

#endif
