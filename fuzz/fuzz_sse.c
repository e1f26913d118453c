/*
 * fuzz_sse.c - libFuzzer driver for the incremental SSE parser (src/lib/sse.c).
 *
 * Input layout: byte 0 chooses the caps (low 2 bits: defaults or small caps
 * that make the "too long" paths reachable with short inputs) and, in bits
 * 2-4, how many split points follow; then one byte per split point (scaled
 * to the stream length); byte after that picks the event on which the
 * callback stops (0: never); the rest is the stream.
 *
 * Checked on every event: data_len within the event cap, data[data_len] is
 * NUL, the type fits the line cap. Checked per input: the same bytes fed in
 * one piece, in the chosen pieces, byte by byte, and again after a reset
 * give the same events, the same first error and the same comment count.
 */
#include "sse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SPLITS 7

typedef struct {
    size_t max_line, max_event;
    unsigned stop_at; /* 1-based event index whose callback returns 7; 0 never */
    unsigned count;
    /* Serialised events: type, NUL, 8-byte length, data. Bounded by the
     * input size times a small factor, since each event consumes input. */
    unsigned char *log;
    size_t len, cap;
} trace;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_sse: invariant broken: %s\n", what);
    abort();
}

static void put(trace *t, const void *p, size_t n)
{
    if (t->len + n > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        while (cap < t->len + n)
            cap *= 2;
        t->log = realloc(t->log, cap);
        if (!t->log)
            abort();
        t->cap = cap;
    }
    memcpy(t->log + t->len, p, n);
    t->len += n;
}

static int on_event(void *ud, const char *type, const char *data, size_t len)
{
    trace *t = ud;
    if (!type || !data)
        die("NULL type or data");
    if (len > t->max_event)
        die("data_len above the event cap");
    if (data[len] != '\0')
        die("data not NUL-terminated at data_len");
    size_t tl = strlen(type);
    if (tl > t->max_line)
        die("event type longer than the line cap");
    /* Touch every byte so ASan sees a read past the buffer. */
    volatile unsigned char sink = 0;
    for (size_t i = 0; i < len; i++)
        sink ^= (unsigned char)data[i];
    (void)sink;
    put(t, type, tl + 1);
    uint64_t l = len;
    put(t, &l, sizeof l);
    put(t, data, len);
    t->count++;
    return t->count == t->stop_at ? 7 : 0;
}

typedef struct {
    int result; /* first non-zero feed result, 0 when none */
    size_t comments;
} outcome;

/* Feeds buf[0..len) cut at the given offsets (ascending, may repeat). */
static outcome run(zjuchat__sse *p, trace *t, const uint8_t *buf, size_t len,
                   const size_t *cuts, size_t ncuts)
{
    outcome o = {0, 0};
    size_t pos = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        int r = zjuchat__sse_feed(p, (const char *)buf + pos, end - pos);
        if (r && !o.result)
            o.result = r;
        if (o.result && r != o.result)
            die("error result not sticky");
        pos = end;
    }
    o.comments = zjuchat__sse_comments(p);
    return o;
}

static void same(const trace *a, const outcome *oa, const trace *b, const outcome *ob,
                 const char *how)
{
    if (oa->result != ob->result || oa->comments != ob->comments ||
        a->count != b->count || a->len != b->len ||
        (a->len && memcmp(a->log, b->log, a->len))) {
        fprintf(stderr,
                "fuzz_sse: %s differs from one piece: result %d/%d, "
                "comments %zu/%zu, events %u/%u\n",
                how, oa->result, ob->result, oa->comments, ob->comments, a->count,
                b->count);
        abort();
    }
}

static const size_t LINE_CAPS[4] = {0, 8, 64, 1};
static const size_t EVENT_CAPS[4] = {0, 16, 32, 1};

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    if (size < 2)
        return 0;
    unsigned mode = in[0] & 3;
    size_t nsplit = (in[0] >> 2) & 7;
    if (size < 2 + nsplit)
        return 0;
    const uint8_t *splits = in + 1;
    unsigned stop_at = in[1 + nsplit] % 8;
    const uint8_t *s = in + 2 + nsplit;
    size_t len = size - 2 - nsplit;

    size_t cuts[MAX_SPLITS];
    for (size_t i = 0; i < nsplit; i++)
        cuts[i] = len ? (size_t)splits[i] * len / 255 : 0;
    /* ascending order: insertion sort of at most 7 items */
    for (size_t i = 1; i < nsplit; i++)
        for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
            size_t x = cuts[j];
            cuts[j] = cuts[j - 1];
            cuts[j - 1] = x;
        }

    trace t[3];
    memset(t, 0, sizeof t);
    for (int i = 0; i < 3; i++) {
        t[i].max_line = LINE_CAPS[mode] ? LINE_CAPS[mode] : 64 * 1024;
        t[i].max_event = EVENT_CAPS[mode] ? EVENT_CAPS[mode] : 1024 * 1024;
        t[i].stop_at = stop_at;
    }
    zjuchat__sse *whole =
        zjuchat__sse_new(LINE_CAPS[mode], EVENT_CAPS[mode], on_event, &t[0]);
    zjuchat__sse *split =
        zjuchat__sse_new(LINE_CAPS[mode], EVENT_CAPS[mode], on_event, &t[1]);
    zjuchat__sse *bytes =
        zjuchat__sse_new(LINE_CAPS[mode], EVENT_CAPS[mode], on_event, &t[2]);
    if (!whole || !split || !bytes)
        abort();

    outcome o0 = run(whole, &t[0], s, len, NULL, 0);
    outcome o1 = run(split, &t[1], s, len, cuts, nsplit);
    same(&t[0], &o0, &t[1], &o1, "split feed");

    /* Byte by byte is the harshest chunking; keep it to short inputs so the
     * fuzzer stays fast. */
    if (len <= 512) {
        size_t *every = malloc((len ? len : 1) * sizeof *every);
        if (!every)
            abort();
        for (size_t i = 0; i < len; i++)
            every[i] = i;
        outcome o2 = run(bytes, &t[2], s, len, every, len);
        free(every);
        same(&t[0], &o0, &t[2], &o2, "byte-by-byte feed");
    }

    /* A reset parser must behave like a fresh one, whatever state (partial
     * line, held BOM bytes, sticky error) the first run left behind. */
    zjuchat__sse_reset(whole);
    size_t before = t[0].len;
    unsigned count_before = t[0].count;
    t[0].count = 0;
    outcome o4 = run(whole, &t[0], s, len, cuts, nsplit);
    trace again = t[0];
    again.log = t[0].log ? t[0].log + before : NULL;
    again.len = t[0].len - before;
    trace first = t[0];
    first.len = before;
    first.count = count_before;
    same(&first, &o0, &again, &o4, "feed after reset");

    zjuchat__sse_free(whole);
    zjuchat__sse_free(split);
    zjuchat__sse_free(bytes);
    for (int i = 0; i < 3; i++)
        free(t[i].log);
    return 0;
}
