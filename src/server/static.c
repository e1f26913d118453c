/*
 * static.c - GET/HEAD / and /assets/...: the chat page. Its files come from
 * the table built into the binary (srv_web_files, from web/dist), or from
 * the directory WEB_ROOT names (config.c resolved it with realpath at
 * startup), or, with WEB_ROOT=off, nowhere: 404 as for an unknown path.
 *
 * From a directory, a file is served only if its name passes
 * srv_static_path_ok, its resolved path (symlinks followed) is still under
 * the root, and it is a regular file; everything else is the same 404, so
 * nothing tells what exists outside. Every answer can be revalidated with
 * its ETag (304), and carries a strict Content-Security-Policy: the page
 * runs only its own script and talks only to this server.
 */
#include "dialect.h"
#include "front.h"
#include "routes.h"
#include "static.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Weak references: programs that link the server's objects without the
 * generated table (the fuzz drivers) see no page (the address is NULL);
 * the server's link has the table. */
extern const srv_web_file srv_web_files[] __attribute__((weak));
extern const size_t srv_web_files_count __attribute__((weak));

/* Larger files are not the page's: refused rather than held in memory. */
#define WEB_MAX_FILE_BYTES (64L << 20)

/* No inline script or style, nothing from elsewhere: model output that got
 * past the sanitizer still could not run or call out. */
static const char csp[] = "default-src 'self'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                          "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const char *srv_static_content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".webp", "image/webp"},
        {".ico", "image/x-icon"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
        {".woff2", "font/woff2"},
    };
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash : path, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

int srv_static_path_ok(const char *path)
{
    if (path[0] != '/' || strlen(path) >= 1024)
        return 0;
    for (const char *p = path; *p == '/';) {
        p++;
        size_t n = strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "0123456789-_.~");
        if (n == 0 || p[0] == '.')
            return 0;
        p += n;
        if (*p != '/' && *p != '\0')
            return 0;
    }
    return 1;
}

/* The opaque part of an entity tag, without W/ and quotes. */
static void opaque(const char *tag, size_t len, const char **out, size_t *outlen)
{
    if (len >= 2 && tag[0] == 'W' && tag[1] == '/') {
        tag += 2;
        len -= 2;
    }
    if (len >= 2 && tag[0] == '"' && tag[len - 1] == '"') {
        tag++;
        len -= 2;
    }
    *out = tag;
    *outlen = len;
}

int srv_static_etag_matches(const char *if_none_match, const char *etag)
{
    const char *want;
    size_t want_len;
    opaque(etag, strlen(etag), &want, &want_len);
    for (const char *p = if_none_match; p && *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == 1 && p[0] == '*')
            return 1;
        const char *got;
        size_t got_len;
        opaque(p, m, &got, &got_len);
        if (m > 0 && got_len == want_len && memcmp(got, want, want_len) == 0)
            return 1;
        p += n;
    }
    return 0;
}

static void not_found(srv_ctx *ctx)
{
    srv_ctx_error(ctx, 404, "not found", NULL, -1);
}

/* The reply: 200 with the body, or 304 when the client's copy is current. */
static void send_file(srv_ctx *ctx, const char *path, const void *data, size_t len,
                      const char *etag, const char *last_modified)
{
    srv_request *req = ctx->req;
    srv_req_add_header(req, "X-Content-Type-Options", "nosniff");
    srv_req_add_header(req, "Content-Security-Policy", csp);
    srv_req_add_header(req, "Referrer-Policy", "no-referrer");
    srv_req_add_header(req, "X-Frame-Options", "DENY");
    /* Kept, but asked again each time: a new build shows at once, and an
     * unchanged file costs a 304. */
    srv_req_add_header(req, "Cache-Control", "no-cache");
    srv_req_add_header(req, "ETag", etag);
    if (last_modified)
        srv_req_add_header(req, "Last-Modified", last_modified);
    if (srv_static_etag_matches(srv_req_header(req, "If-None-Match"), etag)) {
        ctx->acc.status = 304;
        ctx->acc.bytes = 0;
        srv_req_reply(req, 304, NULL, 0);
        return;
    }
    srv_req_add_header(req, "Content-Type", srv_static_content_type(path));
    ctx->acc.status = 200;
    ctx->acc.bytes = srv_req_is(req, "HEAD") ? 0 : len;
    srv_req_reply(req, 200, data, len);
}

static void serve_builtin(srv_ctx *ctx, const char *path)
{
    size_t count = &srv_web_files_count ? srv_web_files_count : 0;
    for (size_t i = 0; i < count; i++) {
        const srv_web_file *f = &srv_web_files[i];
        if (strcmp(f->path, path) == 0) {
            send_file(ctx, path, f->data, f->len, f->etag, NULL);
            return;
        }
    }
    not_found(ctx);
}

/* Reads the whole of fd (size bytes) into a new buffer; NULL on failure. */
static char *read_all(int fd, size_t size)
{
    char *buf = malloc(size ? size : 1);
    size_t got = 0;
    while (buf && got < size) {
        ssize_t n = pread(fd, buf + got, size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            free(buf);
            return NULL;
        }
        got += (size_t)n;
    }
    return buf;
}

static void serve_dir(srv_ctx *ctx, const char *root, const char *path)
{
    char joined[PATH_MAX + 1024], real[PATH_MAX];
    size_t rl = strlen(root);
    snprintf(joined, sizeof joined, "%s%s", root, path);
    /* A symlink may point anywhere: what counts is where it leads. */
    if (!realpath(joined, real) || strncmp(real, root, rl) != 0 || real[rl] != '/') {
        not_found(ctx);
        return;
    }
    int fd = open(real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        not_found(ctx);
        return;
    }
    if (st.st_size > WEB_MAX_FILE_BYTES) {
        close(fd);
        srv_log("static: %s is over %ld MiB, not served", path, WEB_MAX_FILE_BYTES >> 20);
        srv_ctx_error(ctx, 500, "file too large to serve", NULL, -1);
        return;
    }
    char etag[80], modified[64];
    snprintf(etag, sizeof etag, "\"%jx-%jx-%lx\"", (uintmax_t)st.st_size,
             (uintmax_t)st.st_mtim.tv_sec, (unsigned long)st.st_mtim.tv_nsec);
    struct tm tm;
    gmtime_r(&st.st_mtim.tv_sec, &tm);
    strftime(modified, sizeof modified, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    /* HEAD and 304 need no content; the file is read only for a 200 GET. */
    int need_body =
        !srv_req_is(ctx->req, "HEAD") &&
        !srv_static_etag_matches(srv_req_header(ctx->req, "If-None-Match"), etag);
    char *body = need_body ? read_all(fd, (size_t)st.st_size) : NULL;
    close(fd);
    if (need_body && !body) {
        srv_ctx_error(ctx, 500, "cannot read the file", NULL, -1);
        return;
    }
    send_file(ctx, path, body, (size_t)st.st_size, etag, modified);
    free(body);
}

int srv_handle_static(srv_ctx *ctx)
{
    const srv_config *cfg = ctx->w->cfg;
    const char *path = srv_req_path(ctx->req);
    if (strcmp(path, "/") == 0)
        path = "/index.html";
    if (cfg->web_off || !srv_static_path_ok(path))
        not_found(ctx);
    else if (cfg->web_root)
        serve_dir(ctx, cfg->web_root, path);
    else
        serve_builtin(ctx, path);
    return SRV_ANSWERED;
}
