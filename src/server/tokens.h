/*
 * tokens.h - the access tokens (ACCESS_TOKENS_FILE): who may call the API,
 * by which name the logs and metrics know them, which models they may use
 * and their limits. A request's identity is one entry of this table.
 *
 * The file, one token a line:
 *
 *   # comment (a '#' that starts a field starts a comment, to the line's end)
 *   <token> name=alice models=deepseek-v3-671b,bge-m3 rpm=60 tpm=100000
 *   sha256:<64 hex digits of the token's SHA-256> name=ci streams=2
 *
 * The first field is the token (RFC 6750's b64token: A-Z a-z 0-9 - . _ ~ +
 * / then optional '=', at least SRV_TOKEN_MIN_LEN characters) or its
 * digest; then key=value settings, separated by spaces or tabs: name=
 * (required, unique), models= (an allow-list; absent: any model), rpm=,
 * tpm=, tpd=, streams= (positive integers; absent: no limit). A line that
 * breaks a rule stops the load with "file:line: reason"; no message ever
 * quotes a token.
 *
 * A table is immutable once loaded and reference-counted: a reload makes a
 * new one and swaps it in, while a request in flight keeps the table (and
 * with it the entry) it was identified with until it ends. Only the SHA-256
 * digest of a token is kept in memory. The counts are plain (not atomic):
 * each process uses its tables from one thread (the worker's event loop, or
 * the supervisor).
 */
#ifndef SRV_TOKENS_H
#define SRV_TOKENS_H

#include <stddef.h>

#define SRV_TOKEN_DIGEST_LEN 32 /* SHA-256 */
#define SRV_TOKEN_MIN_LEN 16    /* a shorter token is guessable */
#define SRV_TOKEN_NAME_MAX 64   /* name=: 1..64 of A-Z a-z 0-9 . _ - */
/* Longest name a models= entry may have: shorter than the access record's
 * model field (srv_access.model, 128 bytes), so that a longer model the
 * record cut to fit can never equal an allowed one. */
#define SRV_TOKEN_MODEL_MAX 126

typedef struct srv_token {
    unsigned char digest[SRV_TOKEN_DIGEST_LEN]; /* SHA-256 of the token */
    char name[SRV_TOKEN_NAME_MAX + 1];          /* what logs and metrics show */
    char **models;                              /* the allow-list; NULL: any model */
    size_t n_models;
    /* Limits, for the rate limiter (not enforced here); 0: no limit. */
    long rpm;     /* requests per minute */
    long tpm;     /* tokens per minute */
    long tpd;     /* tokens per day */
    long streams; /* requests in flight at once */
    int line;     /* where the file defines it */
} srv_token;

typedef struct srv_tokens srv_tokens;

/*
 * Read and check the file at path. Returns 0 with *out (one reference), or
 * -1 with "path:line: reason" (or "path: reason") in err and *out untouched.
 */
int srv_tokens_load(const char *path, srv_tokens **out, char *err, size_t errlen);

/* The same for the file's bytes (text[0..len)); fname names it in messages. */
int srv_tokens_parse(const char *text, size_t len, const char *fname, srv_tokens **out,
                     char *err, size_t errlen);

srv_tokens *srv_tokens_ref(srv_tokens *t); /* returns t; NULL stays NULL */
void srv_tokens_unref(srv_tokens *t);      /* frees with the last reference */
size_t srv_tokens_count(const srv_tokens *t);
const srv_token *srv_tokens_at(const srv_tokens *t, size_t i);

/*
 * The entry of the presented token (bytes token[0..len)), NULL when none.
 * Compares the token's SHA-256 with every entry's in constant time.
 */
const srv_token *srv_tokens_find(const srv_tokens *t, const char *token, size_t len);

/* 1 when e may use model (exact match with its models=, or no models=). */
int srv_token_allows_model(const srv_token *e, const char *model);

/*
 * The token of an Authorization header value: "Bearer <token>" (the scheme
 * in any case, RFC 9110 11.1). Returns 1 with token/len (inside value), 0
 * when value is NULL (no header), -1 when it is not a Bearer token.
 */
int srv_tokens_bearer(const char *value, const char **token, size_t *len);

#endif
