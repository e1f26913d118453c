/*
 * fuzz_scan.c - differential fuzzing of the tree-less event scan (scan.c)
 * against jansson, loaded with the library's flags (JSON_ALLOW_NUL, and
 * JSON_DECODE_ANY so that every JSON text is compared, not only objects):
 *   - validity: accept and refuse exactly as jansson does, except the two
 *     documented differences: numbers beyond jansson's range (its
 *     json_error_numeric_overflow) are valid JSON for the scan, and a raw
 *     NUL byte, which jansson's reader sometimes drops, is always refused;
 *   - every field the scan picks up against jansson's tree: is_object,
 *     finish, the usage counts (each, and has_usage), the decoded bytes of
 *     choices[].delta texts, and choices[0]'s delta/message texts from their
 *     spans (present exactly when the tree has a string there, and decoding
 *     to the same bytes); repeated keys count as in the tree (the last);
 *   - the key-echo check against a decode of every string and key of the
 *     tree, for two secrets: "sk-fuzz", and the input's first two bytes
 *     (short, so that escaped hits are frequent); with repeated keys the
 *     scan may see more (the earlier values are in the bytes, not the tree);
 *   - secret_raw: set whenever the bytes hold the secret as is, and the
 *     event path built on it (sse_policy.c: scan, and mask and scan again
 *     only when secret_raw says so) finds the same as masking first;
 *   - the memo (a scan resumed where the last event's reached a choice's
 *     text): the input scanned again with it, and a document that shares
 *     its bytes up to there and goes on with other bytes (the rest of the
 *     input reversed, or cut), give what a scan without a memo gives.
 */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL(...)                                                                        \
    do {                                                                                 \
        fprintf(stderr, __VA_ARGS__);                                                    \
        fputc('\n', stderr);                                                             \
        abort();                                                                         \
    } while (0)

static int holds(const char *s, size_t n, const char *secret)
{
    return memmem(s, n, secret, strlen(secret)) != NULL;
}

/* Does a decoded string or key of the tree hold the secret? */
static int tree_holds(json_t *v, const char *secret)
{
    if (json_is_string(v))
        return holds(json_string_value(v), json_string_length(v), secret);
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) if (tree_holds(e, secret)) return 1;
        return 0;
    }
    if (json_is_object(v)) {
        const char *k;
        json_t *e;
        json_object_foreach(v, k, e)
        {
            if (holds(k, strlen(k), secret) || tree_holds(e, secret))
                return 1;
        }
    }
    return 0;
}

static void check_span(const char *text, const zjuchat__span *t, json_t *want,
                       const char *what)
{
    if (!json_is_string(want)) {
        if (t->present)
            FAIL("%s: a span where the tree has no string", what);
        return;
    }
    if (!t->present)
        FAIL("%s: no span where the tree has a string", what);
    size_t n = json_string_length(want);
    if (t->decoded != n)
        FAIL("%s: decoded length %zu, tree %zu", what, t->decoded, n);
    char *buf = malloc(t->len + 1);
    size_t got = zjuchat__json_unescape(text + t->off, t->len, buf);
    if (got != n || memcmp(buf, json_string_value(want), n) != 0)
        FAIL("%s: decoding differs from the tree", what);
    if (!t->escaped && (t->len != n || memcmp(text + t->off, buf, n) != 0))
        FAIL("%s: unescaped span is not the bytes", what);
    free(buf);
}

static void check_usage(long got, unsigned bit, unsigned *set, json_t *usage,
                        const char *name)
{
    json_t *v = json_object_get(usage, name);
    if (json_is_integer(v)) {
        if (got != (long)json_integer_value(v))
            FAIL("usage.%s: scan %ld, tree %lld", name, got,
                 (long long)json_integer_value(v));
        *set |= bit;
    } else if (got != -1) {
        FAIL("usage.%s: scan %ld, tree has no integer", name, got);
    }
}

static void check_fields(const char *text, const zjuchat__scan *s, json_t *j)
{
    if (s->is_object != json_is_object(j))
        FAIL("is_object: scan %d, tree %d", s->is_object, json_is_object(j));
    json_t *choices = json_object_get(j, "choices");
    int finish = 0;
    size_t text_len = 0, i;
    json_t *c;
    json_array_foreach(choices, i, c)
    {
        finish |= json_is_string(json_object_get(c, "finish_reason"));
        json_t *delta = json_object_get(c, "delta");
        text_len += json_string_length(json_object_get(delta, "content")) +
                    json_string_length(json_object_get(delta, "reasoning_content"));
    }
    if (finish != s->finish)
        FAIL("finish_reason: scan %d, tree %d", s->finish, finish);
    if (text_len != s->text_len)
        FAIL("delta text bytes: scan %zu, tree %zu", s->text_len, text_len);

    json_t *usage = json_object_get(j, "usage");
    unsigned set = 0;
    check_usage(s->prompt, 1, &set, usage, "prompt_tokens");
    check_usage(s->completion, 2, &set, usage, "completion_tokens");
    check_usage(s->total, 4, &set, usage, "total_tokens");
    if (s->has_usage != (set != 0))
        FAIL("has_usage: scan %d, tree %d", s->has_usage, set != 0);

    json_t *first = json_is_array(choices) ? json_array_get(choices, 0) : NULL;
    static const char *const container[2] = {"delta", "message"};
    static const char *const field[2] = {"content", "reasoning_content"};
    for (int w = 0; w < 2; w++)
        for (int f = 0; f < 2; f++) {
            char what[64];
            snprintf(what, sizeof what, "choices[0].%s.%s", container[w], field[f]);
            check_span(text, &s->text[w][f],
                       json_object_get(json_object_get(first, container[w]), field[f]),
                       what);
        }
}

static int same_spans(const zjuchat__scan *a, const zjuchat__scan *b)
{
    for (int w = 0; w < 2; w++)
        for (int f = 0; f < 2; f++) {
            const zjuchat__span *x = &a->text[w][f], *y = &b->text[w][f];
            if (x->present != y->present ||
                (x->present && (x->off != y->off || x->len != y->len ||
                                x->decoded != y->decoded || x->escaped != y->escaped)))
                return 0;
        }
    return 1;
}

static int same_scan(const zjuchat__scan *a, const zjuchat__scan *b)
{
    return a->valid == b->valid && a->is_object == b->is_object &&
           a->finish == b->finish && a->has_usage == b->has_usage &&
           a->secret_seen == b->secret_seen && a->prompt == b->prompt &&
           a->completion == b->completion && a->total == b->total &&
           a->text_len == b->text_len && same_spans(a, b);
}

/* The event path's order (scan; mask and scan again only on secret_raw)
 * against masking first, as the library did before. */
static void check_mask_order(const char *text, size_t size, const char *secret)
{
    char *a = malloc(size + 1), *b = malloc(size + 1);
    memcpy(a, text, size);
    memcpy(b, text, size);
    zjuchat__scan sa, sb;
    int ra = zjuchat__scan_json(a, size, secret, &sa);
    if (ra != -2 && sa.secret_raw && zjuchat_redact(a, size, secret) > 0)
        ra = zjuchat__scan_json(a, size, secret, &sa);
    zjuchat_redact(b, size, secret);
    int rb = zjuchat__scan_json(b, size, secret, &sb);
    if (ra != -2 && rb != -2) {
        if (memcmp(a, b, size) != 0)
            FAIL("secret \"%s\": the bytes differ from masking first", secret);
        if (!same_scan(&sa, &sb))
            FAIL("secret \"%s\": the scan differs from masking first", secret);
    }
    free(a);
    free(b);
}

static void same_as_without_memo(const char *text, size_t size, const char *secret,
                                 zjuchat__scan_memo *memo, const char *what)
{
    zjuchat__scan with, without;
    int rw = zjuchat__scan_json_memo(text, size, secret, &with, memo);
    int ro = zjuchat__scan_json(text, size, secret, &without);
    if (rw == -2 || ro == -2)
        return;
    if (rw != ro || with.valid != without.valid ||
        with.secret_raw != without.secret_raw || !same_scan(&with, &without))
        FAIL("secret \"%s\": %s with the memo differs from a scan without", secret, what);
}

/* The memo filled by the input, then used on the input and on documents
 * that part from it where the memo's bytes end. */
static void check_memo(const char *text, size_t size, const char *secret)
{
    zjuchat__scan_memo *memo = calloc(1, sizeof *memo);
    zjuchat__scan s;
    if (!memo || zjuchat__scan_json_memo(text, size, secret, &s, memo) == -2) {
        free(memo);
        return;
    }
    same_as_without_memo(text, size, secret, memo, "the same bytes");
    size_t kept = memo->len;
    if (kept && kept < size) {
        char *other = malloc(size);
        memcpy(other, text, size);
        for (size_t i = kept; i < size; i++)
            other[i] = text[size - 1 - (i - kept)];
        same_as_without_memo(other, size, secret, memo, "a reversed tail");
        same_as_without_memo(other, kept + (size - kept) / 2, secret, memo, "a cut tail");
        free(other);
    }
    free(memo);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    /* The secret of the second pass: the input's first two bytes, when they
     * can be a C string. */
    char short_secret[3] = {0};
    if (size >= 2 && data[0] && data[1])
        memcpy(short_secret, data, 2);
    const char *secrets[2] = {"sk-fuzz", short_secret};

    zjuchat__scan s[2];
    for (int k = 0; k < 2; k++)
        if (zjuchat__scan_json(text, size, secrets[k], &s[k]) == -2)
            return 0;
    if (s[0].valid != s[1].valid)
        FAIL("validity depends on the secret");
    for (int k = 0; k < 2; k++) {
        if (s[k].valid && secrets[k][0] && !s[k].secret_raw &&
            memmem(text, size, secrets[k], strlen(secrets[k])))
            FAIL("secret \"%s\" is in the bytes, secret_raw 0", secrets[k]);
        if (secrets[k][0])
            check_mask_order(text, size, secrets[k]);
        check_memo(text, size, secrets[k]);
    }

    json_error_t jerr;
    json_t *j = json_loadb(text, size, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (memchr(text, '\0', size)) {
        /* Raw NUL is never valid JSON text; jansson's reader can drop one
         * after a token (it reads it as the end of its lookahead). */
        if (s[0].valid)
            FAIL("scan accepts a raw NUL byte");
    } else if (j && !s[0].valid) {
        FAIL("scan rejects what jansson accepts");
    } else if (!j && s[0].valid &&
               json_error_code(&jerr) != json_error_numeric_overflow) {
        FAIL("scan accepts what jansson rejects: %s", jerr.text);
    }
    if (j && s[0].valid) {
        check_fields(text, &s[0], j);
        /* A repeated key's earlier value is not in the tree, but its
         * strings are in the bytes: then the scan may see more. */
        json_t *unique = json_loadb(
            text, size, JSON_ALLOW_NUL | JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        for (int k = 0; k < 2; k++) {
            int want = secrets[k][0] && tree_holds(j, secrets[k]);
            if (s[k].secret_seen != want && (want || unique))
                FAIL("secret \"%s\": scan %d, tree %d", secrets[k], s[k].secret_seen,
                     want);
        }
        json_decref(unique);
    }
    json_decref(j);
    return 0;
}
