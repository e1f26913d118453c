/*
 * scan.c - one pass over an upstream JSON document without building a tree.
 *
 * Every relayed stream event must be checked ("data that is not JSON is
 * skipped"), but a relay needs no tree: building one with jansson cost two
 * thirds of a server's user-space instructions per event, and YAJL's event
 * parser still ~9k instructions per 200-byte event (callgrind): its lexer
 * goes a byte at a time through a table and a callback per token, and the
 * UTF-8 it lets through (overlong forms, lone surrogate escapes) needed a
 * second pass. This file is a validating scanner built for the job: one
 * pass, no allocation, plain string bytes skipped 16 at a time (SSE2; 8
 * without), and on the way it picks up what the library needs: whether the
 * document is an object, a string choices[].finish_reason, the usage
 * counts, the decoded bytes of choices[].delta.content and
 * .reasoning_content, where choices[0]'s delta/message texts lie (the
 * accessors decode them without a tree), and whether a decoded string or
 * key holds the API key (an escaped echo the raw-byte redaction cannot
 * see) or the bytes may hold it as is (secret_raw: the event path masks and
 * scans again only then).
 *
 * What it accepts is what jansson accepts with the library's flags
 * (JSON_ALLOW_NUL, as every upstream body is loaded; JSON_DECODE_ANY for a
 * value that is not an object or array), so an event the relay passes on is
 * one the library's own accessors can read. RFC 8259's grammar; UTF-8 as
 * RFC 3629 has it (no overlong forms, no surrogates, nothing past U+10FFFF);
 * \u escapes that are lone surrogates refused; \u0000 allowed in strings
 * but not in keys; values nested at most 2048 deep, a scalar counting as
 * a level as in jansson; white space is space, tab, LF and CR only. Two differences, both
 * on purpose (fuzz/fuzz_scan.c knows them): numbers beyond jansson's range (integers past
 * 64 bits, reals past DBL_MAX) are valid JSON and valid here (a browser reads them as
 * doubles; the relay passes such an event on), and a raw NUL byte is refused everywhere
 * (jansson's reader drops one that ends a token). Repeated keys are allowed; like
 * jansson's tree, the last one counts.
 */
#include "internal.h"

#include <limits.h>
#include <stdint.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 2048 /* jansson's JSON_PARSER_MAX_DEPTH */

/* Names on the paths we care about: {choices: [ {finish_reason: S, delta:
 * {content: S, reasoning_content: S}, message: {...}} ]} and {usage:
 * {prompt_tokens: N, completion_tokens: N, total_tokens: N}}. */
enum key_id {
    K_OTHER,
    K_CHOICES,
    K_USAGE,
    K_FINISH,
    K_PROMPT,
    K_COMPLETION,
    K_TOTAL,
    K_DELTA,
    K_MESSAGE,
    K_CONTENT,
    K_REASONING
};

/* What an open container is, for the fields above; anything under R_NONE
 * is R_NONE, so only the first four levels ever get another role. */
enum role { R_NONE, R_ROOT, R_CHOICES, R_USAGE, R_CHOICE, R_DELTA, R_MESSAGE };

/* One byte per open container: its role, and whether it is an array. */
#define IS_ARRAY 0x80

struct scanner {
    const unsigned char *base;
    const unsigned char *end;
    zjuchat__scan *out;
    const char *secret;
    size_t secret_len;
    size_t check_from; /* strings this long may hold the secret (SIZE_MAX: none) */
    int choices_seen;  /* a "choices" key was read: another one resets */
    int oom;
    unsigned usage_set;  /* bit per usage count read as an integer */
    size_t choice_index; /* of the element being read in an R_CHOICES array */
    int elem_finish;     /* the R_CHOICE being read has a string finish_reason */
    size_t elem_text[2]; /* its delta's content and reasoning_content, decoded */
    /* The longest run of bytes outside strings: a raw copy of the secret
     * that is in no single string lies in one (or holds a '"'). */
    size_t max_gap;
};

/* What the string scanner found about one string (between its quotes). */
struct str {
    const unsigned char *raw;
    size_t len;     /* raw bytes */
    size_t decoded; /* bytes once escapes are decoded */
    int escaped;
};

static inline __attribute__((always_inline)) enum key_id key_of(const unsigned char *k,
                                                                size_t len)
{
#define IS(lit) (memcmp(k, lit, sizeof lit - 1) == 0)
    switch (len) {
    case 5:
        return IS("usage") ? K_USAGE : IS("delta") ? K_DELTA : K_OTHER;
    case 7:
        return IS("choices")   ? K_CHOICES
               : IS("content") ? K_CONTENT
               : IS("message") ? K_MESSAGE
                               : K_OTHER;
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

/* --- strings ----------------------------------------------------------- */

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* A mask with the high bit set in each byte of the 8 at p that may end a
 * run of plain string bytes: '"', '\\', a control byte, or one >= 0x80. A
 * flag can be false only above a true one (a borrow runs upwards), so the
 * lowest flag is exact. */
static inline uint64_t special8(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    uint64_t q = v ^ (ONES * '"'), b = v ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((b - ONES) & ~b) | ((v - ONES * 0x20) & ~v) | v) & HIGHS;
}

/* Index of the lowest flagged byte of special8's mask (non-zero). */
static inline unsigned first_flag(uint64_t m)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (unsigned)__builtin_clzll(m) >> 3;
#else
    return (unsigned)__builtin_ctzll(m) >> 3;
#endif
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c - '0' < 10)
            d = c - '0';
        else if ((c | 0x20) - 'a' < 6)
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence (2-4 bytes) that starts at p with a
 * byte >= 0x80, or 0 when it is not one (RFC 3629's table). */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* Scans the string whose opening quote is at p[-1]; returns the byte after
 * its closing quote, or NULL when it is not a valid string (a key may not
 * hold \u0000: jansson cannot store it). */
static inline __attribute__((always_inline)) const unsigned char *
scan_string(const unsigned char *p, const unsigned char *base, const unsigned char *end,
            int is_key, struct str *s)
{
    s->raw = p;
    s->escaped = 0;
    size_t saved = 0; /* raw bytes the escapes take beyond their decoding */
    for (;;) {
#ifdef __SSE2__
        /* 16 bytes at a time where SSE2 is there (every x86-64): a signed
         * compare with 0x20 flags control bytes and bytes >= 0x80 both. */
        while (end - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)p);
            __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                                  _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                                     _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
            unsigned bits = (unsigned)_mm_movemask_epi8(m);
            if (bits) {
                p += __builtin_ctz(bits);
                goto special;
            }
            p += 16;
        }
        /* The last bytes: the 16 that end at `end` (they start inside the
         * document when it has 16), shifted so that the first flag is p's
         * or later. */
        if (p < end && end - base >= 16) {
            const unsigned char *last = end - 16;
            __m128i v = _mm_loadu_si128((const __m128i *)last);
            __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                                  _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                                     _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
            unsigned bits = (unsigned)_mm_movemask_epi8(m) >> (p - last);
            if (!bits)
                return NULL; /* no closing quote */
            p += __builtin_ctz(bits);
            goto special;
        }
#endif
        while (end - p >= 8) {
            uint64_t m = special8(p);
            if (m) {
                p += first_flag(m);
                goto special;
            }
            p += 8;
        }
        while (p < end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80)
            p++;
        if (p == end)
            return NULL;
    special:
        if (*p == '"') {
            s->len = (size_t)(p - s->raw);
            s->decoded = s->len - saved;
            return p + 1;
        }
        if (*p >= 0x80) {
            size_t n = utf8_seq(p, end);
            if (!n)
                return NULL;
            p += n;
            continue;
        }
        if (*p < 0x20)
            return NULL; /* control characters must be escaped */
        /* A backslash. */
        s->escaped = 1;
        if (end - p < 2)
            return NULL;
        switch (p[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p += 2;
            saved += 1;
            continue;
        case 'u':
            break;
        default:
            return NULL;
        }
        unsigned cp;
        if (end - p < 6 || hex4(p + 2, &cp))
            return NULL;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF)
                return NULL; /* a high surrogate without its low half */
            p += 12;
            saved += 12 - 4;
            continue;
        }
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return NULL; /* a low surrogate alone */
        if (cp == 0 && is_key)
            return NULL;
        p += 6;
        saved += 6 - (cp < 0x80 ? 1 : cp < 0x800 ? 2 : 3);
    }
}

/* Decodes the validated string raw[*pos..len) into out while at least 4
 * bytes of room are left; returns the bytes written and advances *pos. */
static size_t unescape_some(const unsigned char *raw, size_t len, size_t *pos,
                            unsigned char *out, size_t cap)
{
    size_t i = *pos, o = 0;
    while (i < len && cap - o >= 4) {
        unsigned char c = raw[i];
        if (c != '\\') {
            out[o++] = c;
            i++;
            continue;
        }
        unsigned char e = raw[i + 1];
        i += 2;
        switch (e) {
        case 'b':
            out[o++] = '\b';
            continue;
        case 'f':
            out[o++] = '\f';
            continue;
        case 'n':
            out[o++] = '\n';
            continue;
        case 'r':
            out[o++] = '\r';
            continue;
        case 't':
            out[o++] = '\t';
            continue;
        case 'u':
            break;
        default: /* '"', '\\', '/' */
            out[o++] = e;
            continue;
        }
        unsigned cp = 0, lo = 0xDC00; /* set by hex4: the string was validated */
        hex4(raw + i, &cp);
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            hex4(raw + i + 2, &lo);
            i += 6;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp < 0x80) {
            out[o++] = (unsigned char)cp;
        } else if (cp < 0x800) {
            out[o++] = (unsigned char)(0xC0 | cp >> 6);
            out[o++] = (unsigned char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out[o++] = (unsigned char)(0xE0 | cp >> 12);
            out[o++] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
            out[o++] = (unsigned char)(0x80 | (cp & 0x3F));
        } else {
            out[o++] = (unsigned char)(0xF0 | cp >> 18);
            out[o++] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
            out[o++] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
            out[o++] = (unsigned char)(0x80 | (cp & 0x3F));
        }
    }
    *pos = i;
    return o;
}

size_t zjuchat__json_unescape(const char *raw, size_t len, char *out)
{
    size_t pos = 0, o = 0;
    while (pos < len)
        o += unescape_some((const unsigned char *)raw, len, &pos,
                           (unsigned char *)out + o, len - o + 4);
    return o;
}

/* Does the string hold the secret, as is (secret_raw) or decoded
 * (secret_seen)? Escaped strings are decoded a window at a time on the
 * stack, keeping the last secret_len - 1 bytes of each window for the next,
 * so a long body needs no allocation. */
static void check_secret_slow(struct scanner *sc, struct str str)
{
    const struct str *s = &str;
    zjuchat__scan *out = sc->out;
    if (!s->escaped) {
        if (memmem(s->raw, s->len, sc->secret, sc->secret_len))
            out->secret_seen = out->secret_raw = 1;
        return;
    }
    if (!out->secret_raw && memmem(s->raw, s->len, sc->secret, sc->secret_len))
        out->secret_raw = 1;
    if (out->secret_seen || s->decoded < sc->secret_len)
        return;
    unsigned char window[4096];
    unsigned char *buf = window;
    size_t cap = sizeof window;
    if (sc->secret_len > sizeof window / 2) {
        cap = s->decoded + 4;
        buf = malloc(cap);
        if (!buf) {
            sc->oom = 1;
            return;
        }
    }
    size_t pos = 0, have = 0;
    while (pos < s->len) {
        have += unescape_some(s->raw, s->len, &pos, buf + have, cap - have);
        if (memmem(buf, have, sc->secret, sc->secret_len)) {
            out->secret_seen = 1;
            break;
        }
        size_t keep = sc->secret_len - 1;
        if (have > keep) {
            memmove(buf, buf + have - keep, keep);
            have = keep;
        }
    }
    if (buf != window)
        free(buf);
}

/* Most strings are shorter than a key: only the length is looked at. */
static inline void check_secret(struct scanner *sc, const struct str *s)
{
    if (s->len >= sc->check_from) {
        check_secret_slow(sc, *s);
        if (sc->out->secret_seen && sc->out->secret_raw)
            sc->check_from = SIZE_MAX; /* nothing more to learn */
    }
}

/* A key's id; an escaped key is decoded first ("\u0063hoices" is choices). */
static inline enum key_id key_id_of(const struct str *s)
{
    if (!s->escaped)
        return key_of(s->raw, s->len);
    if (s->decoded > 17)
        return K_OTHER;
    unsigned char k[17 + 4];
    size_t pos = 0;
    size_t n = unescape_some(s->raw, s->len, &pos, k, sizeof k);
    return key_of(k, n);
}

/* --- what the library picks up ----------------------------------------- */

static zjuchat__span *span_of(struct scanner *sc, enum role role, enum key_id key)
{
    int which = role == R_DELTA ? ZJUCHAT__DELTA : ZJUCHAT__MESSAGE;
    return &sc->out
                ->text[which][key == K_CONTENT ? ZJUCHAT__CONTENT : ZJUCHAT__REASONING];
}

/* A key in a container with a role: what it is about to be given is reset
 * first, so that a repeated key counts as jansson's tree has it (the last). */
static void on_key(struct scanner *sc, enum role role, enum key_id key)
{
    zjuchat__scan *out = sc->out;
    switch (role) {
    case R_ROOT:
        if (key == K_CHOICES && sc->choices_seen++) {
            out->finish = 0;
            out->text_len = 0;
            memset(out->text, 0, sizeof out->text);
        } else if (key == K_USAGE) {
            out->prompt = out->completion = out->total = -1;
            sc->usage_set = 0;
        }
        break;
    case R_USAGE:
        if (key == K_PROMPT) {
            out->prompt = -1;
            sc->usage_set &= ~1u;
        } else if (key == K_COMPLETION) {
            out->completion = -1;
            sc->usage_set &= ~2u;
        } else if (key == K_TOTAL) {
            out->total = -1;
            sc->usage_set &= ~4u;
        }
        break;
    case R_CHOICE:
        if (key == K_FINISH) {
            sc->elem_finish = 0;
        } else if (key == K_DELTA) {
            sc->elem_text[0] = sc->elem_text[1] = 0;
            if (sc->choice_index == 0)
                out->text[ZJUCHAT__DELTA][0].present =
                    out->text[ZJUCHAT__DELTA][1].present = 0;
        } else if (key == K_MESSAGE && sc->choice_index == 0) {
            out->text[ZJUCHAT__MESSAGE][0].present =
                out->text[ZJUCHAT__MESSAGE][1].present = 0;
        }
        break;
    case R_DELTA:
    case R_MESSAGE:
        if (key == K_CONTENT || key == K_REASONING) {
            if (role == R_DELTA)
                sc->elem_text[key == K_REASONING] = 0;
            if (sc->choice_index == 0)
                span_of(sc, role, key)->present = 0;
        }
        break;
    default:
        break;
    }
}

static inline void on_string_value(struct scanner *sc, enum role role, enum key_id key,
                                   const struct str *s)
{
    if (role == R_CHOICE && key == K_FINISH) {
        sc->elem_finish = 1;
    } else if ((role == R_DELTA || role == R_MESSAGE) &&
               (key == K_CONTENT || key == K_REASONING)) {
        if (role == R_DELTA)
            sc->elem_text[key == K_REASONING] = s->decoded;
        if (sc->choice_index == 0) {
            zjuchat__span *t = span_of(sc, role, key);
            t->present = 1;
            t->escaped = s->escaped;
            t->off = (size_t)(s->raw - sc->base);
            t->len = s->len;
            t->decoded = s->decoded;
        }
    }
}

/* A usage count: an integer that fits a long (jansson's json_integer_t);
 * a real or a larger integer is no count. */
static void on_usage_number(struct scanner *sc, enum key_id key, const unsigned char *num,
                            size_t len, int integer)
{
    long *slot;
    unsigned bit;
    if (key == K_PROMPT) {
        slot = &sc->out->prompt;
        bit = 1;
    } else if (key == K_COMPLETION) {
        slot = &sc->out->completion;
        bit = 2;
    } else if (key == K_TOTAL) {
        slot = &sc->out->total;
        bit = 4;
    } else {
        return;
    }
    if (!integer)
        return;
    int neg = num[0] == '-';
    unsigned long v = 0, limit = neg ? (unsigned long)LONG_MAX + 1 : LONG_MAX;
    for (size_t i = neg; i < len; i++) {
        unsigned d = num[i] - '0';
        if (v > (limit - d) / 10)
            return; /* out of range */
        v = v * 10 + d;
    }
    *slot = neg ? (long)(0 - v) : (long)v;
    sc->usage_set |= bit;
}

/* The role of a container opened as a value in a container of `parent`
 * (under `key` when that is an object). */
static enum role child_role(struct scanner *sc, enum role parent, enum key_id key,
                            int array)
{
    switch (parent) {
    case R_ROOT:
        if (key == K_CHOICES && array) {
            sc->choice_index = 0;
            return R_CHOICES;
        }
        return key == K_USAGE && !array ? R_USAGE : R_NONE;
    case R_CHOICES:
        if (array)
            return R_NONE;
        sc->elem_finish = 0;
        sc->elem_text[0] = sc->elem_text[1] = 0;
        return R_CHOICE;
    case R_CHOICE:
        if (array)
            return R_NONE;
        return key == K_DELTA ? R_DELTA : key == K_MESSAGE ? R_MESSAGE : R_NONE;
    default:
        return R_NONE;
    }
}

/* --- the grammar ------------------------------------------------------- */

static inline int is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* White space inside the document: scan() ends it at its last byte that is
 * not white space, so a run that starts before the end stops before it
 * without a bound check. Compact JSON has none: one compare decides. */
#define SKIP_WS(p)                                                                       \
    while (*(p) <= ' ' && is_ws(*(p)))                                                   \
    (p)++

static inline int is_digit(unsigned char c)
{
    return (unsigned)(c - '0') < 10;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? ; NULL when not a number. */
static const unsigned char *scan_number(const unsigned char *p, const unsigned char *end,
                                        int *integer)
{
    *integer = 1;
    if (*p == '-')
        p++;
    if (p == end)
        return NULL;
    if (*p == '0') {
        p++;
    } else if (is_digit(*p)) {
        while (++p < end && is_digit(*p))
            ;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        *integer = 0;
        if (++p == end || !is_digit(*p))
            return NULL;
        while (++p < end && is_digit(*p))
            ;
    }
    if (p < end && (*p | 0x20) == 'e') {
        *integer = 0;
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return NULL;
        while (++p < end && is_digit(*p))
            ;
    }
    return p;
}

static int scan(struct scanner *sc)
{
    const unsigned char *p = sc->base, *end = sc->end;
    unsigned char stack[MAX_DEPTH + 1]; /* stack[d]: the container at depth d */
    int depth = 0;
    enum role role = R_NONE;   /* of the innermost open container */
    enum key_id key = K_OTHER; /* the key of the value being read */
    struct str s;
    const unsigned char *gap_from = p; /* where the bytes outside strings began */
    size_t gap, max_gap = 0;

    /* White space after the value is allowed; cutting it off here lets
     * SKIP_WS run unbounded (see there). A string cannot end in what is
     * cut: the document is the same JSON or not JSON either way. */
    while (end > p && is_ws(end[-1]))
        end--;
    if (p == end)
        return -1;
    SKIP_WS(p);
    sc->out->is_object = *p == '{';

value: /* p < end, at what must be a value */
    switch (*p) {
    case '{':
    case '[': {
        int array = *p == '[';
        enum role r = depth == 0       ? (array ? R_NONE : R_ROOT)
                      : role == R_NONE ? R_NONE
                                       : child_role(sc, role, key, array);
        stack[++depth] = (unsigned char)(r | (array ? IS_ARRAY : 0));
        role = r;
        if (++p == end)
            return -1;
        SKIP_WS(p);
        /* jansson counts every value's depth, scalars too, and refuses one
         * inside MAX_DEPTH containers: the deepest may only be empty. */
        if (depth == MAX_DEPTH && *p != (array ? ']' : '}'))
            return -1;
        if (array) {
            if (*p == ']') {
                p++;
                goto close;
            }
            goto value;
        }
        if (*p == '}') {
            p++;
            goto close;
        }
        goto member;
    }
    case '"':
        gap = (size_t)(p - gap_from);
        max_gap = gap > max_gap ? gap : max_gap;
        p = scan_string(p + 1, sc->base, end, 0, &s);
        if (!p)
            return -1;
        gap_from = p;
        check_secret(sc, &s);
        if (role != R_NONE)
            on_string_value(sc, role, key, &s);
        break;
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4))
            return -1;
        p += 4;
        break;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5))
            return -1;
        p += 5;
        break;
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4))
            return -1;
        p += 4;
        break;
    default: {
        const unsigned char *num = p;
        int integer;
        p = scan_number(p, end, &integer);
        if (!p)
            return -1;
        if (role == R_USAGE)
            on_usage_number(sc, key, num, (size_t)(p - num), integer);
        break;
    }
    }

after_value: /* p <= end, just past a value */
    if (p == end) {
        if (depth)
            return -1;
        gap = (size_t)(sc->end - gap_from);
        sc->max_gap = gap > max_gap ? gap : max_gap;
        return 0;
    }
    SKIP_WS(p);
    if (depth == 0)
        return -1; /* more after the value */
    if (stack[depth] & IS_ARRAY) {
        if (*p == ',') {
            if (role == R_CHOICES)
                sc->choice_index++;
            if (++p == end)
                return -1;
            SKIP_WS(p);
            goto value;
        }
        if (*p == ']') {
            p++;
            goto close;
        }
        return -1;
    }
    if (*p == '}') {
        p++;
        goto close;
    }
    if (*p != ',' || ++p == end)
        return -1;
    SKIP_WS(p);

member: /* p < end, at what must be a key */
    if (*p != '"')
        return -1;
    gap = (size_t)(p - gap_from);
    max_gap = gap > max_gap ? gap : max_gap;
    p = scan_string(p + 1, sc->base, end, 1, &s);
    if (!p || p == end)
        return -1;
    gap_from = p;
    check_secret(sc, &s);
    key = K_OTHER;
    if (role != R_NONE) {
        key = key_id_of(&s);
        if (key != K_OTHER)
            on_key(sc, role, key);
    }
    SKIP_WS(p);
    if (*p != ':' || ++p == end)
        return -1;
    SKIP_WS(p);
    goto value;

close:
    if (role == R_CHOICE) {
        sc->out->finish |= sc->elem_finish;
        sc->out->text_len += sc->elem_text[0] + sc->elem_text[1];
    }
    depth--;
    role = depth ? (enum role)(stack[depth] & ~IS_ARRAY) : R_NONE;
    /* The key the closed container was the value of no longer matters:
     * only keys that come after it are read. */
    goto after_value;
}

int zjuchat__scan_json(const char *data, size_t len, const char *secret,
                       zjuchat__scan *out)
{
    memset(out, 0, sizeof *out);
    out->prompt = out->completion = out->total = -1;
    struct scanner sc = {0};
    sc.base = (const unsigned char *)data;
    sc.end = sc.base + len;
    sc.out = out;
    sc.secret = secret;
    sc.secret_len = secret ? strlen(secret) : 0;
    sc.check_from = sc.secret_len ? sc.secret_len : SIZE_MAX;
    int r = scan(&sc);
    if (sc.oom)
        return -2;
    if (sc.secret_len &&
        (sc.max_gap >= sc.secret_len || memchr(secret, '"', sc.secret_len)))
        out->secret_raw = 1;
    out->has_usage = sc.usage_set != 0;
    out->valid = r == 0;
    if (!out->valid) {
        /* What was picked up from a document that is not JSON means nothing. */
        int secret_seen = out->secret_seen;
        memset(out, 0, sizeof *out);
        out->prompt = out->completion = out->total = -1;
        out->secret_seen = secret_seen;
        out->secret_raw = 1; /* unknown: the scan stopped at the fault */
    }
    return out->valid ? 0 : -1;
}
