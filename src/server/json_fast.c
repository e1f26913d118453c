/*
 * json_fast.c - the tree-less pass over a client's JSON body (json_fast.h):
 * the byte screen that keeps it within what YAJL and jansson judge alike,
 * then YAJL. Parsing the body into a jansson tree was the largest part of
 * the server's own cost per request (callgrind: ~17k of ~35k instructions
 * for /api/chat's body, ~26k for /v1's); this pass takes a few thousand.
 */
#include "json_fast.h"

#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* 1 for a byte the pass leaves to jansson: controls but \t \n \r, and UTF-8
 * leads whose first continuation byte decides validity (C0 C1: always
 * overlong; E0: overlong below A0; ED: surrogates from A0; F0: overlong
 * below 90; F4: past U+10FFFF from 90; F5-FF: never valid). Every other
 * lead takes any continuation byte, and YAJL checks those. */
static const unsigned char declined[256] = {
    [0x00] = 1, [0x01] = 1, [0x02] = 1, [0x03] = 1, [0x04] = 1, [0x05] = 1, [0x06] = 1,
    [0x07] = 1, [0x08] = 1, [0x0b] = 1, [0x0c] = 1, [0x0e] = 1, [0x0f] = 1, [0x10] = 1,
    [0x11] = 1, [0x12] = 1, [0x13] = 1, [0x14] = 1, [0x15] = 1, [0x16] = 1, [0x17] = 1,
    [0x18] = 1, [0x19] = 1, [0x1a] = 1, [0x1b] = 1, [0x1c] = 1, [0x1d] = 1, [0x1e] = 1,
    [0x1f] = 1, [0xc0] = 1, [0xc1] = 1, [0xe0] = 1, [0xed] = 1, [0xf0] = 1, [0xf4] = 1,
    [0xf5] = 1, [0xf6] = 1, [0xf7] = 1, [0xf8] = 1, [0xf9] = 1, [0xfa] = 1, [0xfb] = 1,
    [0xfc] = 1, [0xfd] = 1, [0xfe] = 1, [0xff] = 1,
};

/* 1 when the 16 bytes at p are all below 0x80 or continuation bytes, none
 * a control, '\\' or a UTF-8 lead: nothing there for the byte loop to see.
 * Most bodies are such bytes; looking at each was a sixth of the pass. */
static int plain16(const unsigned char *p)
{
#ifdef __SSE2__
    __m128i x = _mm_loadu_si128((const __m128i *)p);
    __m128i low = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1f)), x);
    __m128i lead = _mm_cmpeq_epi8(_mm_max_epu8(x, _mm_set1_epi8((char)0xc0)), x);
    __m128i escape = _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'));
    return _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(low, lead), escape)) == 0;
#else
    (void)p;
    return 0;
#endif
}

static int screened(const unsigned char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (len - i >= 16 && plain16(p + i)) {
            i += 16;
            continue;
        }
        for (size_t end = len - i >= 16 ? i + 16 : len; i < end; i++) {
            if (declined[p[i]])
                return 0;
            /* \uD800-\uDFFF, and the rest of \uDxxx with them: a '\' that is
             * itself escaped only makes this decline more often */
            if (p[i] == '\\' && i + 2 < len && p[i + 1] == 'u' &&
                (p[i + 2] | 0x20) == 'd')
                return 0;
        }
    }
    return 1;
}

/* YAJL's allocations for one pass (its handle, lexer, parse stack, and the
 * buffer it decodes escaped strings into) come from a block on the stack
 * while they fit, the rest from malloc: a malloc and a free for each was
 * a fifth of the pass. Each piece keeps its size before it, for realloc. */
#define ARENA_ALIGN 16

typedef struct arena {
    _Alignas(ARENA_ALIGN) unsigned char block[8192];
    size_t used;
} arena;

typedef struct piece_head {
    _Alignas(ARENA_ALIGN) size_t size;
} piece_head;

static size_t rounded(size_t n)
{
    return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

static int in_arena(const arena *a, const void *p)
{
    const unsigned char *b = p;
    return b >= a->block && b < a->block + sizeof a->block;
}

static void *arena_malloc(void *ctx, size_t n)
{
    arena *a = ctx;
    if (n <= sizeof a->block &&
        sizeof(piece_head) + rounded(n) <= sizeof a->block - a->used) {
        piece_head *h = (piece_head *)(a->block + a->used);
        h->size = n;
        a->used += sizeof *h + rounded(n);
        return h + 1;
    }
    return malloc(n);
}

static void arena_free(void *ctx, void *p)
{
    if (!in_arena(ctx, p))
        free(p);
}

static void *arena_realloc(void *ctx, void *p, size_t n)
{
    arena *a = ctx;
    if (!p)
        return arena_malloc(a, n);
    if (!in_arena(a, p))
        return realloc(p, n);
    piece_head *h = (piece_head *)p - 1;
    if (n <= h->size)
        return p;
    /* the last piece grows in place while the block has room */
    if ((unsigned char *)p + rounded(h->size) == a->block + a->used &&
        n <= sizeof a->block &&
        rounded(n) - rounded(h->size) <= sizeof a->block - a->used) {
        a->used += rounded(n) - rounded(h->size);
        h->size = n;
        return p;
    }
    void *q = arena_malloc(a, n);
    if (q)
        memcpy(q, p, h->size);
    return q;
}

int srv_json_fast_open(srv_json_fast *f)
{
    return ++f->depth <= SRV_JSON_FAST_MAX_DEPTH;
}

void srv_json_fast_close(srv_json_fast *f)
{
    if (--f->depth == 0)
        f->end = yajl_get_bytes_consumed(f->h);
}

int srv_json_fast_parse(const char *bytes, size_t len, const yajl_callbacks *cb,
                        void *ctx)
{
    srv_json_fast *f = ctx;
    if (!bytes || !screened((const unsigned char *)bytes, len))
        return 0;
    arena a;
    a.used = 0;
    yajl_alloc_funcs funcs = {arena_malloc, arena_realloc, arena_free, &a};
    f->h = yajl_alloc(cb, &funcs, ctx);
    if (!f->h)
        return 0;
    f->depth = 0;
    f->end = 0;
    yajl_status st = yajl_parse(f->h, (const unsigned char *)bytes, len);
    if (st == yajl_status_ok)
        st = yajl_complete_parse(f->h);
    yajl_free(f->h);
    f->h = NULL;
    if (st != yajl_status_ok || f->end == 0)
        return 0; /* invalid, declined, or no container at the top */
    for (size_t i = f->end; i < len; i++)
        if (bytes[i] != ' ' && bytes[i] != '\t' && bytes[i] != '\n' && bytes[i] != '\r')
            return 0;
    return 1;
}
