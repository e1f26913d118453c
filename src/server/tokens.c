/*
 * tokens.c - the access tokens file (tokens.h): parsing and checking it into
 * an immutable, reference-counted table of SHA-256 digests, and finding the
 * entry of a presented token. OpenSSL's libcrypto (already linked through
 * libcurl) does the hashing and the constant-time comparison.
 */
#include "tokens.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

/* A tokens file is a few lines per caller; anything this large is a
 * mistake (the wrong path), not a list of tokens. */
#define FILE_MAX (8u << 20)

struct srv_tokens {
    long refs;
    size_t n, cap;
    srv_token *e;
};

/* ---- the table ---- */

srv_tokens *srv_tokens_ref(srv_tokens *t)
{
    if (t)
        t->refs++;
    return t;
}

static void entry_free(srv_token *e)
{
    for (size_t i = 0; i < e->n_models; i++)
        free(e->models[i]);
    free(e->models);
}

void srv_tokens_unref(srv_tokens *t)
{
    if (!t || --t->refs > 0)
        return;
    for (size_t i = 0; i < t->n; i++)
        entry_free(&t->e[i]);
    free(t->e);
    free(t);
}

size_t srv_tokens_count(const srv_tokens *t)
{
    return t ? t->n : 0;
}

const srv_token *srv_tokens_at(const srv_tokens *t, size_t i)
{
    return t && i < t->n ? &t->e[i] : NULL;
}

/* The algorithm is fetched from the provider once and one context reused:
 * EVP_Digest(..., EVP_sha256(), ...) fetches it again on every call, which
 * was most of the ~6k instructions a request's token lookup took
 * (callgrind). One process hashes one token at a time. */
static int sha256(const void *data, size_t len, unsigned char out[SRV_TOKEN_DIGEST_LEN])
{
    static EVP_MD *md;
    static EVP_MD_CTX *ctx;
    if (!md && !(md = EVP_MD_fetch(NULL, "SHA256", NULL)))
        return -1;
    if (!ctx && !(ctx = EVP_MD_CTX_new()))
        return -1;
    unsigned int n = 0;
    return EVP_DigestInit_ex(ctx, md, NULL) == 1 &&
                   EVP_DigestUpdate(ctx, data, len) == 1 &&
                   EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == SRV_TOKEN_DIGEST_LEN
               ? 0
               : -1;
}

/*
 * Constant time, as far as it matters: the presented token is hashed first,
 * which takes a time that depends only on its length (known to whoever sent
 * it), and what is compared is that digest, with CRYPTO_memcmp (no early
 * exit at the first differing byte), against every entry (no early exit at
 * a match). Even a timing leak in the comparison would tell an attacker how
 * much of the *digest* of their guess matches, which does not help build a
 * token whose digest matches more (SHA-256 is preimage-resistant).
 */
const srv_token *srv_tokens_find(const srv_tokens *t, const char *token, size_t len)
{
    unsigned char d[SRV_TOKEN_DIGEST_LEN];
    if (!t || sha256(token, len, d) < 0)
        return NULL;
    const srv_token *hit = NULL;
    for (size_t i = 0; i < t->n; i++)
        if (CRYPTO_memcmp(d, t->e[i].digest, sizeof d) == 0)
            hit = &t->e[i];
    return hit;
}

int srv_token_allows_model(const srv_token *e, const char *model)
{
    if (!e->models)
        return 1;
    for (size_t i = 0; i < e->n_models; i++)
        if (strcmp(e->models[i], model) == 0)
            return 1;
    return 0;
}

/* ---- the Authorization header ---- */

/* RFC 6750's b64token's characters but '=', a byte at a time (GNU C's
 * range designators). */
static const unsigned char b64token_set[256] = {
    ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1, ['0' ... '9'] = 1, ['-'] = 1, ['.'] = 1,
    ['_'] = 1,         ['~'] = 1,         ['+'] = 1,         ['/'] = 1,
};

/* RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
 * "/" ) *"=". The length of the one at s (0: none). A table, not strspn:
 * glibc's strspn builds a table of its set on every call, which was most of
 * the header's cost per request. */
static size_t b64token_span(const char *s)
{
    size_t n = 0;
    while (b64token_set[(unsigned char)s[n]])
        n++;
    if (n == 0)
        return 0;
    while (s[n] == '=')
        n++;
    return n;
}

int srv_tokens_bearer(const char *value, const char **token, size_t *len)
{
    if (!value)
        return 0;
    const char *p = value + strspn(value, " \t");
    if (strncasecmp(p, "Bearer", 6) != 0 || p[6] != ' ')
        return -1;
    p += 6 + strspn(p + 6, " ");
    size_t n = b64token_span(p);
    if (n == 0 || p[n + strspn(p + n, " \t")] != '\0')
        return -1; /* also two Authorization headers, joined with ',' */
    *token = p;
    *len = n;
    return 1;
}

/* ---- the file ---- */

typedef struct parser {
    const char *fname;
    int line;
    char *err;
    size_t errlen;
} parser;

/* "fname:line: reason"; returns -1. Never given a token to quote. */
static int refuse(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(parser *p, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "%s:%d: %s", p->fname, p->line, why);
    return -1;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int hex_value(char c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* The first field: the token itself, or sha256:<hex>, into e->digest. */
static int parse_token(parser *p, const char *f, srv_token *e)
{
    if (strncmp(f, "sha256:", 7) == 0) {
        const char *h = f + 7;
        size_t n = 0;
        while (is_hex(h[n]))
            n++;
        if (n != 2 * SRV_TOKEN_DIGEST_LEN || h[n] != '\0')
            return refuse(p, "sha256: wants the token's SHA-256 as 64 hex digits "
                             "(printf %%s TOKEN | sha256sum)");
        for (size_t i = 0; i < SRV_TOKEN_DIGEST_LEN; i++)
            e->digest[i] =
                (unsigned char)(hex_value(h[2 * i]) << 4 | hex_value(h[2 * i + 1]));
        return 0;
    }
    const char *eq = strchr(f, '=');
    if (eq && eq[strspn(eq, "=")] != '\0')
        return refuse(p, "no token: the line starts with a key=value setting");
    size_t n = b64token_span(f);
    if (f[n] != '\0')
        return refuse(p, "the token may hold only A-Z a-z 0-9 - . _ ~ + / (then '=' "
                         "padding), as an Authorization: Bearer header carries it");
    if (n < SRV_TOKEN_MIN_LEN)
        return refuse(p,
                      "the token is shorter than %d characters, which is guessable; "
                      "use a long random one (openssl rand -hex 32)",
                      SRV_TOKEN_MIN_LEN);
    if (sha256(f, n, e->digest) < 0)
        return refuse(p, "cannot compute SHA-256 (libcrypto)");
    return 0;
}

static int parse_name(parser *p, const char *v, srv_token *e)
{
    size_t n = strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789._-");
    if (n == 0 || v[n] != '\0' || n > SRV_TOKEN_NAME_MAX)
        return refuse(p, "name= wants 1 to %d of A-Z a-z 0-9 . _ -", SRV_TOKEN_NAME_MAX);
    memcpy(e->name, v, n + 1);
    return 0;
}

static int parse_models(parser *p, const char *v, srv_token *e)
{
    size_t cap = 1;
    for (const char *c = v; *c; c++)
        cap += *c == ',';
    e->models = calloc(cap, sizeof *e->models);
    if (!e->models)
        return refuse(p, "out of memory");
    const char *s = v;
    for (;;) {
        size_t n = strcspn(s, ",");
        if (n == 0)
            return refuse(p, "models= has an empty entry (want name,name,...)");
        if (n > SRV_TOKEN_MODEL_MAX)
            return refuse(p, "models= has a name longer than %d characters",
                          SRV_TOKEN_MODEL_MAX);
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
                return refuse(p, "models= names are printable ASCII");
        e->models[e->n_models] = strndup(s, n);
        if (!e->models[e->n_models++])
            return refuse(p, "out of memory");
        if (s[n] == '\0')
            return 0;
        s += n + 1;
    }
}

static int parse_limit(parser *p, const char *key, const char *v, long *out)
{
    char *end;
    errno = 0;
    long x = (*v >= '0' && *v <= '9') ? strtol(v, &end, 10) : 0;
    if (x <= 0 || errno || *end != '\0')
        return refuse(p, "%s= wants a positive integer (leave it out for no limit)", key);
    *out = x;
    return 0;
}

/* One key=value setting of entry e; `seen` marks the keys given so far. */
static int parse_setting(parser *p, char *f, srv_token *e, unsigned *seen)
{
    static const char *const keys[] = {"name", "models", "rpm", "tpm", "tpd", "streams"};
    char *eq = strchr(f, '=');
    if (!eq || eq == f)
        return refuse(p, "expected key=value settings after the token");
    *eq = '\0';
    const char *v = eq + 1;
    size_t k = 0;
    while (k < sizeof keys / sizeof keys[0] && strcmp(keys[k], f) != 0)
        k++;
    if (k == sizeof keys / sizeof keys[0])
        return refuse(p, "unknown setting (known: name, models, rpm, tpm, tpd, streams)");
    if (*seen & 1u << k)
        return refuse(p, "%s= given twice", keys[k]);
    *seen |= 1u << k;
    switch (k) {
    case 0:
        return parse_name(p, v, e);
    case 1:
        return parse_models(p, v, e);
    case 2:
        return parse_limit(p, "rpm", v, &e->rpm);
    case 3:
        return parse_limit(p, "tpm", v, &e->tpm);
    case 4:
        return parse_limit(p, "tpd", v, &e->tpd);
    default:
        return parse_limit(p, "streams", v, &e->streams);
    }
}

/* The next field of *s (NUL-terminated in place), NULL at the line's end
 * or at a '#' that starts a field (a comment). */
static char *next_field(char **s)
{
    char *f = *s + strspn(*s, " \t");
    if (*f == '\0' || *f == '#')
        return NULL;
    char *end = f + strcspn(f, " \t");
    *s = *end ? end + 1 : end;
    *end = '\0';
    return f;
}

/* Checks of one entry against those before it. */
static int check_unique(parser *p, const srv_tokens *t, const srv_token *e)
{
    if (!e->name[0])
        return refuse(p, "name= is missing (logs and metrics show it)");
    for (size_t i = 0; i < t->n; i++) {
        if (CRYPTO_memcmp(t->e[i].digest, e->digest, SRV_TOKEN_DIGEST_LEN) == 0)
            return refuse(p, "the same token as line %d", t->e[i].line);
        if (strcmp(t->e[i].name, e->name) == 0)
            return refuse(p, "name \"%s\" is already used on line %d", e->name,
                          t->e[i].line);
    }
    return 0;
}

/* A line (NUL-terminated, writable): nothing, or one entry added to t. */
static int parse_line(parser *p, char *line, srv_tokens *t)
{
    char *f = next_field(&line);
    if (!f)
        return 0;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        srv_token *grown = realloc(t->e, cap * sizeof *grown);
        if (!grown)
            return refuse(p, "out of memory");
        t->e = grown;
        t->cap = cap;
    }
    srv_token *e = &t->e[t->n];
    memset(e, 0, sizeof *e);
    e->line = p->line;
    unsigned seen = 0;
    int rc = parse_token(p, f, e);
    while (rc == 0 && (f = next_field(&line)) != NULL)
        rc = parse_setting(p, f, e, &seen);
    if (rc == 0)
        rc = check_unique(p, t, e);
    if (rc < 0) {
        entry_free(e);
        return -1;
    }
    t->n++;
    return 0;
}

int srv_tokens_parse(const char *text, size_t len, const char *fname, srv_tokens **out,
                     char *err, size_t errlen)
{
    parser p = {fname, 0, err, errlen};
    /* a writable copy to cut into fields, wiped after: it holds tokens */
    char *copy = malloc(len + 1);
    srv_tokens *t = calloc(1, sizeof *t);
    if (!copy || !t) {
        free(copy);
        free(t);
        snprintf(err, errlen, "%s: out of memory", fname);
        return -1;
    }
    t->refs = 1;
    memcpy(copy, text, len);
    copy[len] = '\0';
    int rc = 0;
    for (char *line = copy; rc == 0 && line <= copy + len;) {
        p.line++;
        char *nl = memchr(line, '\n', (size_t)(copy + len - line));
        char *end = nl ? nl : copy + len;
        if (memchr(line, '\0', (size_t)(end - line)))
            rc = refuse(&p, "a NUL byte");
        if (end > line && end[-1] == '\r')
            end[-1] = '\0';
        *end = '\0';
        if (rc == 0)
            rc = parse_line(&p, line, t);
        if (!nl)
            break;
        line = nl + 1;
    }
    OPENSSL_cleanse(copy, len + 1);
    free(copy);
    if (rc < 0) {
        srv_tokens_unref(t);
        return -1;
    }
    *out = t;
    return 0;
}

int srv_tokens_load(const char *path, srv_tokens **out, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(FILE_MAX + 1);
    size_t len = buf ? fread(buf, 1, FILE_MAX + 1, f) : 0;
    int bad = !buf || ferror(f);
    int saved = errno;
    fclose(f);
    int rc = -1;
    if (bad)
        snprintf(err, errlen, "%s: cannot read: %s", path,
                 buf ? strerror(saved) : "out of memory");
    else if (len > FILE_MAX)
        snprintf(err, errlen, "%s: larger than %u MiB; is it the tokens file?", path,
                 FILE_MAX >> 20);
    else
        rc = srv_tokens_parse(buf, len, path, out, err, errlen);
    if (buf)
        OPENSSL_cleanse(buf, len);
    free(buf);
    return rc;
}
