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
 * is R_NONE, so only the first four levels ever get another role. R_TOP is
 * the place of the document's value, outside every container. */
enum role { R_NONE, R_TOP, R_ROOT, R_CHOICES, R_USAGE, R_CHOICE, R_DELTA, R_MESSAGE };

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
    unsigned usage_set;       /* bit per usage count read as an integer */
    size_t choice_index;      /* of the element being read in an R_CHOICES array */
    int elem_finish;          /* the R_CHOICE being read has a string finish_reason */
    size_t elem_text[2];      /* its delta's content and reasoning_content, decoded */
    zjuchat__scan_memo *memo; /* NULL: none */
    int resume;               /* the document starts with the memo's bytes */
    int outside;              /* a raw secret outside one string: OUT_* */
};

/* Where a raw copy of the secret can be that is in no single string (those
 * check_secret looks at): nowhere; across a '"' (the secret has one), so
 * maybe anywhere; outside every string, where only a few bytes can be (the
 * secret is all such bytes), so the document is worth a search. */
enum { OUT_NONE, OUT_QUOTE, OUT_SEARCH };

/* One string of the document (between its quotes). Every escape decodes to
 * fewer bytes than it takes (\n: 2 -> 1, \u00e9: 6 -> 2, a surrogate pair:
 * 12 -> 4), so a string is escaped exactly when saved is not 0. */
struct str {
    const unsigned char *raw;
    size_t len;   /* raw bytes */
    size_t saved; /* raw bytes the escapes take beyond their decoding */
};

/* The id of key k[0..len) in a container of `role`: only the names that
 * matter there are compared, so most keys cost a length compare or one
 * load (which names matter where: on_key, child_role, on_string_value and
 * on_usage_number read nothing else). */
static inline uint64_t load8(const void *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t load4(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* k[0..n) == lit[0..n) for a name of 5 to 24 bytes, in word compares (the
 * last word overlaps the others): a call of memcmp costs more than the
 * compare. */
static inline __attribute__((always_inline)) int same_name(const unsigned char *k,
                                                           const char *lit, size_t n)
{
    if (n < 8)
        return load4(k) == load4(lit) && load4(k + n - 4) == load4(lit + n - 4);
    return load8(k) == load8(lit) && load8(k + n - 8) == load8(lit + n - 8) &&
           (n <= 16 || load8(k + 8) == load8(lit + 8));
}

static inline __attribute__((always_inline)) enum key_id
key_in(enum role role, const unsigned char *k, size_t len)
{
#define IS(lit) (len == sizeof lit - 1 && same_name(k, lit, sizeof lit - 1))
    switch (role) {
    case R_ROOT:
        return IS("choices") ? K_CHOICES : IS("usage") ? K_USAGE : K_OTHER;
    case R_USAGE:
        return IS("prompt_tokens")       ? K_PROMPT
               : IS("completion_tokens") ? K_COMPLETION
               : IS("total_tokens")      ? K_TOTAL
                                         : K_OTHER;
    case R_CHOICE:
        return IS("finish_reason") ? K_FINISH
               : IS("delta")       ? K_DELTA
               : IS("message")     ? K_MESSAGE
                                   : K_OTHER;
    case R_DELTA:
    case R_MESSAGE:
        return IS("content")             ? K_CONTENT
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
static __attribute__((noinline)) size_t utf8_seq(const unsigned char *p,
                                                 const unsigned char *end)
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

/* Past the run of UTF-8 sequences at p (*p >= 0x80), or NULL when one is
 * not valid. Text that is not ASCII comes in runs (CJK: 3 bytes a
 * character, which the first test takes whole: a lead byte of E1..EC, EE
 * or EF, where any two continuation bytes are valid, RFC 3629's table);
 * they are checked one after the other before looking 16 bytes ahead. */
static __attribute__((noinline)) const unsigned char *utf8_run(const unsigned char *p,
                                                               const unsigned char *end)
{
    do {
        unsigned c = p[0];
        if ((c & 0xF0) == 0xE0 && c != 0xE0 && c != 0xED && end - p >= 3 &&
            (p[1] & 0xC0) == 0x80 && (p[2] & 0xC0) == 0x80) {
            p += 3;
            continue;
        }
        size_t n = utf8_seq(p, end);
        if (!n)
            return NULL;
        p += n;
    } while (p < end && *p >= 0x80);
    return p;
}

#ifdef __SSE2__
/* Bits for the bytes of the 16 at p that may end a run of plain string
 * bytes: '"', '\\', a control byte or one >= 0x80 (a signed compare with
 * 0x20 flags the last two both). */
static inline unsigned special16(const unsigned char *p)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')),
                                          _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                             _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
    return (unsigned)_mm_movemask_epi8(m);
}
#endif

/* The rest of the string from p on (the bytes before p are plain string
 * bytes): returns its closing quote, or NULL when it is not a valid string
 * (a key may not hold \u0000: jansson cannot store it); adds to *saved
 * what its escapes save. Out of line: the usual string is done by
 * string_end's first 16 bytes, and the scanner's loop stays small. */
static __attribute__((noinline)) const unsigned char *
string_rest(const unsigned char *p, const unsigned char *base, const unsigned char *end,
            int is_key, size_t *saved_out)
{
    size_t saved = 0;
    for (;;) {
#ifdef __SSE2__
        /* 16 bytes at a time where SSE2 is there (every x86-64). */
        while (end - p >= 16) {
            unsigned bits = special16(p);
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
            unsigned bits = special16(last) >> (p - last);
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
            *saved_out += saved;
            return p;
        }
        if (*p >= 0x80) {
            p = utf8_run(p, end);
            if (!p)
                return NULL;
            continue;
        }
        if (*p < 0x20)
            return NULL; /* control characters must be escaped */
        /* A backslash. */
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

/* Scans the string whose opening quote is at p[-1] into *s; returns its
 * closing quote, or NULL when it is not a valid string. Most strings of an
 * event are plain: 16-byte looks find their end, and only an escape, a
 * byte >= 0x80 or the document's last 16 bytes need string_rest. */
static inline __attribute__((always_inline)) const unsigned char *
string_end(const unsigned char *p, const unsigned char *base, const unsigned char *end,
           int is_key, struct str *s)
{
    s->raw = p;
    s->saved = 0;
#ifdef __SSE2__
    while (end - p >= 16) {
        unsigned bits = special16(p);
        if (!bits) {
            p += 16;
            continue;
        }
        p += __builtin_ctz(bits);
        if (*p == '"') {
            s->len = (size_t)(p - s->raw);
            return p;
        }
        /* A value's text that is not ASCII, and no more: on with it here
         * (keys that are not ASCII are rare: string_rest's). */
        if (is_key || *p < 0x80)
            break;
        p = utf8_run(p, end);
        if (!p)
            return NULL;
    }
#endif
    size_t saved = 0; /* a variable of its own, so that *s can live in registers */
    p = string_rest(p, base, end, is_key, &saved);
    s->saved = saved;
    if (p)
        s->len = (size_t)(p - s->raw);
    return p;
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

/* memmem for a haystack not much longer than the needle, as most strings
 * that are checked are (they are at least as long as the key): glibc's
 * two-way memmem spends ~250 instructions on its set-up per call, while
 * this is a memchr and a memcmp for each place the first byte matches. */
static const unsigned char *find(const unsigned char *h, size_t hlen, const char *n,
                                 size_t nlen)
{
    if (hlen < nlen)
        return NULL;
    if (hlen - nlen > 64)
        return memmem(h, hlen, n, nlen);
    const unsigned char *p = h, *last = h + (hlen - nlen);
    while ((p = memchr(p, (unsigned char)n[0], (size_t)(last - p) + 1))) {
        if (memcmp(p + 1, n + 1, nlen - 1) == 0)
            return p;
        if (p++ == last)
            break;
    }
    return NULL;
}

/* Does the string hold the secret, as is (secret_raw) or decoded
 * (secret_seen)? Escaped strings are decoded a window at a time on the
 * stack, keeping the last secret_len - 1 bytes of each window for the next,
 * so a long body needs no allocation. */
static void check_secret_slow(struct scanner *sc, const unsigned char *raw, size_t len,
                              size_t saved)
{
    zjuchat__scan *out = sc->out;
    if (!saved) {
        if (find(raw, len, sc->secret, sc->secret_len))
            out->secret_seen = out->secret_raw = 1;
        return;
    }
    if (!out->secret_raw && find(raw, len, sc->secret, sc->secret_len))
        out->secret_raw = 1;
    if (out->secret_seen || len - saved < sc->secret_len)
        return;
    unsigned char window[4096];
    unsigned char *buf = window;
    size_t cap = sizeof window;
    if (sc->secret_len > sizeof window / 2) {
        cap = len - saved + 4;
        buf = malloc(cap);
        if (!buf) {
            sc->oom = 1;
            return;
        }
    }
    size_t pos = 0, have = 0;
    while (pos < len) {
        have += unescape_some(raw, len, &pos, buf + have, cap - have);
        if (find(buf, have, sc->secret, sc->secret_len)) {
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
        check_secret_slow(sc, s->raw, s->len, s->saved);
        if (sc->out->secret_seen && sc->out->secret_raw)
            sc->check_from = SIZE_MAX; /* nothing more to learn */
    }
}

/* A key's id in a container of `role`; an escaped key is decoded first
 * ("\u0063hoices" is choices). */
static inline enum key_id key_id_of(enum role role, const struct str *s)
{
    if (!s->saved)
        return key_in(role, s->raw, s->len);
    if (s->len - s->saved > 17)
        return K_OTHER;
    unsigned char k[17 + 4];
    size_t pos = 0;
    size_t n = unescape_some(s->raw, s->len, &pos, k, sizeof k);
    return key_in(role, k, n);
}

/* --- what the library picks up ----------------------------------------- */

/* role is R_DELTA or R_MESSAGE, key K_CONTENT or K_REASONING: both enums
 * list them in the order of the array's indexes. */
static zjuchat__span *span_of(struct scanner *sc, enum role role, enum key_id key)
{
    _Static_assert(R_MESSAGE - R_DELTA == ZJUCHAT__MESSAGE - ZJUCHAT__DELTA &&
                       K_REASONING - K_CONTENT == ZJUCHAT__REASONING - ZJUCHAT__CONTENT,
                   "span_of's arithmetic");
    return &sc->out->text[role - R_DELTA][key - K_CONTENT];
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
            sc->elem_text[key == K_REASONING] = s->len - s->saved;
        if (sc->choice_index == 0) {
            zjuchat__span *t = span_of(sc, role, key);
            t->present = 1;
            t->escaped = s->saved != 0;
            t->off = (size_t)(s->raw - sc->base);
            t->len = s->len;
            t->decoded = s->len - s->saved;
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
    case R_TOP:
        return array ? R_NONE : R_ROOT;
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

/* Past the run of digits at p. Eight at a time where the order of the
 * bytes in a word is known: a byte is a digit when its high nibble is 3,
 * and still 3 once 6 is added. An addition can carry into the next byte
 * only from a byte >= 0xFA, which is flagged itself, so the lowest flag is
 * exact. */
static inline const unsigned char *skip_digits(const unsigned char *p,
                                               const unsigned char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        uint64_t m = ((v & ONES * 0xF0) ^ ONES * 0x30) |
                     (((v + ONES * 6) & ONES * 0xF0) ^ ONES * 0x30);
        if (m)
            return p + (__builtin_ctzll(m) >> 3);
        p += 8;
    }
#endif
    while (p < end && is_digit(*p))
        p++;
    return p;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? ; NULL when not a number. */
static inline __attribute__((always_inline)) const unsigned char *
scan_number(const unsigned char *p, const unsigned char *end, int *integer)
{
    *integer = 1;
    if (*p == '-')
        p++;
    if (p == end)
        return NULL;
    if (*p == '0')
        p++;
    else if (is_digit(*p))
        p = skip_digits(p + 1, end);
    else
        return NULL;
    if (p < end && *p == '.') {
        *integer = 0;
        if (++p == end || !is_digit(*p))
            return NULL;
        p = skip_digits(p + 1, end);
    }
    if (p < end && (*p | 0x20) == 'e') {
        *integer = 0;
        if (++p < end && (*p == '+' || *p == '-'))
            p++;
        if (p == end || !is_digit(*p))
            return NULL;
        p = skip_digits(p + 1, end);
    }
    return p;
}

/* The memo takes the state at p, the start of a choice's text: the bytes
 * before p decided all of it (every token before p ended before p; what
 * the scanner read past one, a 16-byte look or the document's end, changed
 * only how fast it went; that *p is no white space, the resumed scan checks
 * again), so a document that starts with the same bytes and goes on past p
 * reaches the same state there. Not after a failed
 * allocation (a secret check was skipped), nor when it does not fit. */
static __attribute__((noinline)) void keep(struct scanner *sc, const unsigned char *p,
                                           const unsigned char *stack, int depth,
                                           enum role role, int in_array, enum key_id key)
{
    zjuchat__scan_memo *m = sc->memo;
    size_t len = (size_t)(p - sc->base);
    if (sc->oom || len > sizeof m->prefix || depth > ZJUCHAT__SCAN_MEMO_DEPTH)
        return;
    m->secret = sc->secret;
    m->secret_len = sc->secret_len;
    m->outside = sc->outside;
    m->len = len;
    m->out = *sc->out;
    m->check_from = sc->check_from;
    m->choice_index = sc->choice_index;
    m->elem_text[0] = sc->elem_text[0];
    m->elem_text[1] = sc->elem_text[1];
    m->choices_seen = sc->choices_seen;
    m->elem_finish = sc->elem_finish;
    m->usage_set = sc->usage_set;
    m->depth = depth;
    m->role = role;
    m->in_array = in_array;
    m->key = key;
    memcpy(m->stack, stack, sizeof m->stack); /* a fixed size: no call */
    memcpy(m->prefix, sc->base, len);
}

/* Does the document start with the memo's bytes (and go on past them)? */
static inline int memo_fits(const zjuchat__scan_memo *m, const char *data, size_t len,
                            const char *secret)
{
    return m && m->len && m->secret == secret && len > m->len &&
           memcmp(data, m->prefix, m->len) == 0;
}

static inline __attribute__((always_inline)) int scan(struct scanner *sc)
{
    const unsigned char *p = sc->base, *end = sc->end, *base = sc->base;
    unsigned char stack[MAX_DEPTH + 1]; /* stack[d]: the container at depth d */
    int depth = 0;
    enum role role = R_TOP;    /* of the innermost open container */
    int in_array = 0;          /* it is an array (stack[depth] says it too) */
    enum key_id key = K_OTHER; /* the key of the value being read */
    struct str s;

    /* White space after the value is allowed; cutting it off here lets
     * SKIP_WS run unbounded (see there). A string cannot end in what is
     * cut: the document is the same JSON or not JSON either way. */
    while (end > p && is_ws(end[-1]))
        end--;
    if (p == end)
        return -1;
    SKIP_WS(p);
    sc->out->is_object = *p == '{';
    stack[0] = R_TOP;
    int may_keep = sc->memo != NULL; /* the memo may take this scan's state */
    if (sc->resume) {
        /* out and *sc are the memo's already (zjuchat__scan_json_memo). A
         * value must follow its bytes: white space alone is not JSON. */
        const zjuchat__scan_memo *m = sc->memo;
        if ((size_t)(end - base) <= m->len)
            return -1;
        depth = m->depth;
        role = (enum role)m->role;
        in_array = m->in_array;
        key = (enum key_id)m->key;
        memcpy(stack, m->stack, sizeof m->stack);
        p = base + m->len;
        /* The scan stopped skipping white space at the memo's end because
         * that byte was none: this document's may be. */
        SKIP_WS(p);
        may_keep = 0; /* it holds this very state */
    }

value: /* p < end, at what must be a value; the most frequent first */
    if (*p == '"') {
        p = string_end(p + 1, base, end, 0, &s);
        if (!p)
            return -1;
        p++;
        check_secret(sc, &s);
        if (role != R_NONE)
            on_string_value(sc, role, key, &s);
        goto after_value;
    }
    if (*p == '{' || *p == '[') {
        int array = *p == '[';
        enum role r = role == R_NONE ? R_NONE : child_role(sc, role, key, array);
        stack[++depth] = (unsigned char)(r | (array ? IS_ARRAY : 0));
        role = r;
        in_array = array;
        if (++p == end)
            return -1;
        SKIP_WS(p);
        /* jansson counts every value's depth, scalars too, and refuses one
         * inside MAX_DEPTH containers: the deepest may only be empty. */
        if (depth == MAX_DEPTH && *p != (array ? ']' : '}'))
            return -1;
        if (*p == (array ? ']' : '}')) {
            p++;
            goto close;
        }
        if (array)
            goto value;
        goto member;
    }
    switch (*p) {
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
    if (p == end)
        return depth ? -1 : 0;
    SKIP_WS(p);
    if (depth == 0)
        return -1; /* more after the value */
    if (*p == ',') {
        if (++p == end)
            return -1;
        SKIP_WS(p);
        if (!in_array)
            goto member;
        if (role == R_CHOICES)
            sc->choice_index++;
        goto value;
    }
    if (*p != (in_array ? ']' : '}'))
        return -1;
    p++;
    goto close;

member: /* p < end, at what must be a key */
    if (*p != '"')
        return -1;
    p = string_end(p + 1, base, end, 1, &s);
    if (!p || ++p == end)
        return -1;
    check_secret(sc, &s);
    key = K_OTHER;
    if (role != R_NONE) {
        key = key_id_of(role, &s);
        if (key != K_OTHER)
            on_key(sc, role, key);
    }
    SKIP_WS(p);
    if (*p != ':' || ++p == end)
        return -1;
    SKIP_WS(p);
    /* The memo takes the state here, right after a text's colon, where the
     * only thing byte p decided is that the white space ends before it (a
     * resumed scan skips white space first). At the value label, it could
     * also have decided that an array opened before it is not empty. */
    if (may_keep && *p == '"' && (key == K_CONTENT || key == K_REASONING)) {
        keep(sc, p, stack, depth, role, in_array, key);
        may_keep = 0; /* the first choice's text: later ones differ more */
    }
    goto value;

close:
    if (role == R_CHOICE) {
        sc->out->finish |= sc->elem_finish;
        sc->out->text_len += sc->elem_text[0] + sc->elem_text[1];
    }
    depth--;
    role = (enum role)(stack[depth] & ~IS_ARRAY);
    in_array = (stack[depth] & IS_ARRAY) != 0;
    /* The key the closed container was the value of no longer matters:
     * only keys that come after it are read. */
    goto after_value;
}

/* Bytes that valid JSON can have outside its strings: white space,
 * structure, numbers and the literals true, false and null; a bit for each
 * byte below 64 and for each from 64 to 127. */
#define BIT(c) (1ull << ((c)&63))
#define OUTSIDE_LO                                                                       \
    (BIT(' ') | BIT('\t') | BIT('\n') | BIT('\r') | BIT(',') | BIT(':') | BIT('+') |     \
     BIT('-') | BIT('.') | BIT('0') | BIT('1') | BIT('2') | BIT('3') | BIT('4') |        \
     BIT('5') | BIT('6') | BIT('7') | BIT('8') | BIT('9'))
#define OUTSIDE_HI                                                                       \
    (BIT('{') | BIT('}') | BIT('[') | BIT(']') | BIT('E') | BIT('e') | BIT('t') |        \
     BIT('r') | BIT('u') | BIT('f') | BIT('a') | BIT('l') | BIT('s') | BIT('n'))

/* Can every byte of the secret lie outside the strings of a document? A
 * key has letters no JSON literal has, and the first few bytes tell. */
static int may_lie_outside(const char *secret, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned char)secret[i];
        uint64_t set = c < 64 ? OUTSIDE_LO : c < 128 ? OUTSIDE_HI : 0;
        if (!(set >> (c & 63) & 1))
            return 0;
    }
    return 1;
}

int zjuchat__scan_json(const char *data, size_t len, const char *secret,
                       zjuchat__scan *out)
{
    return zjuchat__scan_json_memo(data, len, secret, out, NULL);
}

int zjuchat__scan_json_memo(const char *data, size_t len, const char *secret,
                            zjuchat__scan *out, zjuchat__scan_memo *memo)
{
    struct scanner sc; /* field by field: a resumed scan takes most from the memo */
    sc.oom = 0;
    sc.outside = OUT_NONE;
    sc.resume = memo_fits(memo, data, len, secret);
    if (sc.resume) {
        /* The same secret (pointer, and its bytes for the call's life):
         * what was learnt of it holds. */
        *out = memo->out;
        sc.secret_len = memo->secret_len;
        sc.outside = memo->outside;
        sc.check_from = memo->check_from;
        sc.choice_index = memo->choice_index;
        sc.elem_text[0] = memo->elem_text[0];
        sc.elem_text[1] = memo->elem_text[1];
        sc.choices_seen = memo->choices_seen;
        sc.elem_finish = memo->elem_finish;
        sc.usage_set = memo->usage_set;
    } else {
        memset(out, 0, sizeof *out);
        out->prompt = out->completion = out->total = -1;
        sc.choices_seen = 0;
        sc.usage_set = 0;
        sc.choice_index = 0;
        sc.elem_finish = 0;
        sc.elem_text[0] = sc.elem_text[1] = 0;
        sc.secret_len = secret ? strlen(secret) : 0;
        sc.check_from = sc.secret_len ? sc.secret_len : SIZE_MAX;
        if (sc.secret_len)
            sc.outside = memchr(secret, '"', sc.secret_len)       ? OUT_QUOTE
                         : may_lie_outside(secret, sc.secret_len) ? OUT_SEARCH
                                                                  : OUT_NONE;
    }
    sc.base = (const unsigned char *)data;
    sc.end = sc.base + len;
    sc.out = out;
    sc.secret = secret;
    sc.memo = memo;
    int r = scan(&sc);
    if (sc.oom)
        return -2;
    if (sc.outside && !out->secret_raw &&
        (sc.outside == OUT_QUOTE || find(sc.base, len, secret, sc.secret_len)))
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
