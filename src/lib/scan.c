/*
 * scan.c - one pass over an upstream JSON document without building a tree.
 *
 * Every relayed stream event must be checked ("data that is not JSON is
 * skipped"), but a relay needs no tree: building one with jansson cost two
 * thirds of a server's user-space instructions per event (callgrind). YAJL's
 * event parser validates (UTF-8 included) and lets this file pick up on the
 * way what the library itself needs: whether the document is an object, a
 * non-null choices[].finish_reason, the usage counts, and whether a decoded
 * string or key holds the API key (an escaped echo the raw-byte redaction
 * cannot see). Accessors that want more parse with jansson, lazily.
 */
#include "internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

/* Names on the paths we care about, at most 4 levels deep:
 * {choices: [ {finish_reason: S} ]}, {usage: {prompt_tokens: N, ...}} and
 * {choices: [ {delta: {content: S, reasoning_content: S}} ]}. */
enum key_id {
    K_OTHER,
    K_CHOICES,
    K_USAGE,
    K_FINISH,
    K_PROMPT,
    K_COMPLETION,
    K_TOTAL,
    K_DELTA,
    K_CONTENT,
    K_REASONING
};

#define TRACKED_DEPTH 4

struct scanner {
    zjuchat__scan *out;
    const char *secret;
    size_t secret_len;
    int depth;                          /* containers open */
    int is_array[TRACKED_DEPTH + 1];    /* container kind per depth */
    enum key_id key[TRACKED_DEPTH + 1]; /* last key seen in the map at depth */
    int started;
    yajl_handle h;
    size_t end; /* offset just past the top-level container */
};

/* Called for every key of every event: dispatch on the length first. */
static enum key_id key_of(const unsigned char *k, size_t len)
{
#define IS(lit) (memcmp(k, lit, sizeof lit - 1) == 0)
    switch (len) {
    case 5:
        return IS("usage") ? K_USAGE : IS("delta") ? K_DELTA : K_OTHER;
    case 7:
        return IS("choices") ? K_CHOICES : IS("content") ? K_CONTENT : K_OTHER;
    case 12:
        return IS("total_tokens") ? K_TOTAL : K_OTHER;
    case 13:
        return IS("finish_reason") ? K_FINISH : IS("prompt_tokens") ? K_PROMPT : K_OTHER;
    case 17:
        return IS("completion_tokens")   ? K_COMPLETION
               : IS("reasoning_content") ? K_REASONING
                                         : K_OTHER;
    default:
        return K_OTHER;
    }
#undef IS
}

static void check_secret(struct scanner *s, const unsigned char *p, size_t len)
{
    if (s->secret_len && len >= s->secret_len && memmem(p, len, s->secret, s->secret_len))
        s->out->secret_seen = 1;
}

/* Is the value being read the one at {choices: [ {finish_reason} ]}? */
static int at_finish(struct scanner *s)
{
    return s->depth == 3 && s->key[1] == K_CHOICES && s->is_array[2] && !s->is_array[3] &&
           s->key[3] == K_FINISH;
}

static long *usage_slot(struct scanner *s)
{
    if (s->depth != 2 || s->key[1] != K_USAGE || s->is_array[2])
        return NULL;
    switch (s->key[2]) {
    case K_PROMPT:
        return &s->out->prompt;
    case K_COMPLETION:
        return &s->out->completion;
    case K_TOTAL:
        return &s->out->total;
    default:
        return NULL;
    }
}

/* Scalars need nothing; a top-level scalar leaves is_object 0, since only
 * the first container sets it. */
static int on_scalar(void *ctx)
{
    return 1;
}

static int on_boolean(void *ctx, int v)
{
    return 1;
}

static int on_number(void *ctx, const char *num, size_t len)
{
    struct scanner *s = ctx;
    long *slot = usage_slot(s);
    if (slot && len < 24) {
        char buf[24];
        memcpy(buf, num, len);
        buf[len] = '\0';
        char *end;
        long v = strtol(buf, &end, 10);
        if (*end == '\0') {
            *slot = v;
            s->out->has_usage = 1;
        }
    }
    return 1;
}

/* Is the value being read a string at {choices: [ {delta: {content or
 * reasoning_content}} ]}? */
static int at_delta_text(struct scanner *s)
{
    return s->depth == 4 && s->key[1] == K_CHOICES && s->is_array[2] && !s->is_array[3] &&
           s->key[3] == K_DELTA && !s->is_array[4] &&
           (s->key[4] == K_CONTENT || s->key[4] == K_REASONING);
}

static int on_string(void *ctx, const unsigned char *str, size_t len)
{
    struct scanner *s = ctx;
    check_secret(s, str, len);
    if (at_finish(s))
        s->out->finish = 1;
    else if (at_delta_text(s))
        s->out->text_len += len;
    return 1;
}

static int on_map_key(void *ctx, const unsigned char *key, size_t len)
{
    struct scanner *s = ctx;
    check_secret(s, key, len);
    if (s->depth <= TRACKED_DEPTH)
        s->key[s->depth] = key_of(key, len);
    return 1;
}

static int open_container(struct scanner *s, int array)
{
    if (!s->started) {
        s->started = 1;
        s->out->is_object = !array;
    }
    s->depth++;
    if (s->depth <= TRACKED_DEPTH) {
        s->is_array[s->depth] = array;
        s->key[s->depth] = K_OTHER;
    }
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, 0);
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, 1);
}

static int on_end(void *ctx)
{
    struct scanner *s = ctx;
    if (--s->depth == 0)
        s->end = yajl_get_bytes_consumed(s->h);
    return 1;
}

static const yajl_callbacks callbacks = {
    on_scalar,    on_boolean, NULL,   NULL,           on_number, on_string,
    on_start_map, on_map_key, on_end, on_start_array, on_end,
};

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing past
 * U+10FFFF; and no raw control bytes but JSON's white space. YAJL's own string check lets
 * overlong forms through, and JSON text must be UTF-8 as a whole, so the raw bytes are
 * checked here. */
/* True when none of the 8 bytes at p is >= 0x80 or < 0x20: plain printable
 * ASCII, the bulk of every event, checked a word at a time (the byte loop
 * below was a fifth of the scan's instructions). */
static int plain_ascii8(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    const uint64_t high = 0x8080808080808080ull, spaces = 0x2020202020202020ull;
    /* With no high bit set, a borrow reaches a byte's high bit exactly when
     * that byte is below 0x20. */
    return !(v & high) && !((v - spaces) & ~v & high);
}

static int text_valid(const unsigned char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (len - i >= 8 && plain_ascii8(p + i)) {
            i += 8;
            continue;
        }
        unsigned char c = p[i];
        if (c < 0x80) {
            /* Raw control bytes are invalid anywhere in JSON text (in strings
             * they must be escaped), but YAJL's lexer takes \f and \v for
             * white space: refuse them here. */
            if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
                return 0;
            i++;
            continue;
        }
        size_t n;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            n = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else
            return 0;
        if (len - i <= n)
            return 0;
        if (p[i + 1] < lo || p[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= n; k++)
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
        i += n + 1;
    }
    return 1;
}

int zjuchat__scan_json(const char *data, size_t len, const char *secret,
                       zjuchat__scan *out)
{
    memset(out, 0, sizeof *out);
    out->prompt = out->completion = out->total = -1;
    struct scanner s = {0};
    s.out = out;
    s.secret = secret;
    s.secret_len = secret ? strlen(secret) : 0;
    if (!text_valid((const unsigned char *)data, len))
        return -1;
    yajl_handle h = yajl_alloc(&callbacks, NULL, &s);
    if (!h)
        return -2;
    yajl_config(h, yajl_dont_validate_strings, 1); /* done above, strictly */
    s.h = h;
    yajl_status st = yajl_parse(h, (const unsigned char *)data, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(h);
    yajl_free(h);
    /* YAJL 2.1 accepts an unfinished token after a complete value (it only
     * peeks at it): everything past the top-level container must be white
     * space. (A top-level scalar is no event anyway: is_object stays 0.) */
    for (size_t i = s.end; st == yajl_status_ok && out->is_object && i < len; i++)
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r')
            st = yajl_status_error;
    out->valid = st == yajl_status_ok;
    return out->valid ? 0 : -1;
}
