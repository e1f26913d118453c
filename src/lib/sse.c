/*
 * sse.c - incremental Server-Sent Events parser (see sse.h for the contract).
 *
 * Runs on every relayed event, so the hot path is built to do as little as
 * possible: line ends are found with memchr, a line that lies whole inside
 * the caller's buffer is interpreted in place (only lines split across feeds
 * are copied into the line buffer), and buffers grow to their cap once and
 * are reused, so a stream in steady state allocates nothing. Buffers are
 * allocated lazily: an idle parser costs only its struct.
 *
 * The data handed to the callback always lives in the parser's own data
 * buffer, never in the caller's (const) feed buffer, so the callback may
 * modify data[0..data_len) in place (the transport redacts keys there).
 *
 * Any non-zero result of zjuchat__sse_feed is sticky: later feeds return it
 * again without looking at their bytes, until zjuchat__sse_reset. After an
 * error or a stop the rest of that feed was not read, so resuming would
 * silently corrupt the stream.
 */
#include "sse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_LINE (64 * 1024)
#define DEFAULT_MAX_EVENT (1024 * 1024)
#define FIRST_ALLOC 256

/* A growable byte buffer whose capacity never exceeds a limit fixed at
 * creation time. */
typedef struct {
    char *buf;
    size_t len;
    size_t cap;
} sse_buf;

struct zjuchat__sse {
    zjuchat__sse_event_fn fn;
    void *userdata;
    size_t max_line;
    size_t max_event;

    sse_buf line; /* a line split across feeds, without its line end */
    sse_buf data; /* data lines of the current event, each followed by '\n' */
    sse_buf type; /* value of the last "event" field, NUL-terminated on use */
    size_t comments;
    int err;        /* sticky non-zero result, see the file comment */
    int skip_lf;    /* the last feed ended in CR: an LF first in the next is its pair */
    int bom_done;   /* the stream start has been checked for a BOM */
    unsigned bom_n; /* BOM bytes matched so far, held back until decided */
    void *scratch;  /* zjuchat__sse_scratch's */
};

static const unsigned char BOM[3] = {0xEF, 0xBB, 0xBF};

/* Makes room for `need` bytes in b, never beyond `limit` (callers check the
 * cap first, so need <= limit). Doubling keeps a stream's growth to a few
 * reallocs; after that the buffer is reused for every line or event. */
static int reserve(sse_buf *b, size_t need, size_t limit)
{
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : FIRST_ALLOC;
    while (cap < need)
        cap *= 2;
    if (cap > limit)
        cap = limit;
    char *nb = realloc(b->buf, cap);
    if (!nb)
        return ZJUCHAT__SSE_NOMEM;
    b->buf = nb;
    b->cap = cap;
    return 0;
}

static int append(sse_buf *b, const char *s, size_t n, size_t limit)
{
    int r = reserve(b, b->len + n, limit);
    if (r)
        return r;
    if (n)
        memcpy(b->buf + b->len, s, n);
    b->len += n;
    return 0;
}

/* A blank line: hand the event over if a data line was seen. Type and data
 * are cleared either way, as the specification says. */
static inline __attribute__((always_inline)) int dispatch(zjuchat__sse *p)
{
    if (p->data.len == 0) {
        p->type.len = 0;
        return 0;
    }
    /* Every data line added a '\n'; the last one becomes the terminator. The
     * buffer was sized for it (max_event + 1). */
    size_t n = p->data.len - 1;
    p->data.buf[n] = '\0';
    const char *type = "";
    if (p->type.len) {
        p->type.buf[p->type.len] = '\0';
        type = p->type.buf;
    }
    p->data.len = 0;
    p->type.len = 0;
    return p->fn(p->userdata, type, p->data.buf, n);
}

/* Interprets one complete line (without its line end). Inline in parse():
 * a call per line (two an event) cost more than the line's own work. */
static inline __attribute__((always_inline)) int process_line(zjuchat__sse *p,
                                                              const char *l, size_t n)
{
    if (n == 0)
        return dispatch(p);
    if (l[0] == ':') {
        p->comments++;
        return 0;
    }
    /* Nearly every line is a data line: its name is known without a
     * search for the colon. */
    const char *colon = n >= 5 && memcmp(l, "data:", 5) == 0 ? l + 4 : memchr(l, ':', n);
    size_t name_len = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vlen = (size_t)(l + n - v);
    if (vlen && *v == ' ') {
        v++;
        vlen--;
    }
    if (name_len == 4 && memcmp(l, "data", 4) == 0) {
        /* data.len counts one '\n' per earlier line, which the final data
         * keeps except for the last: the event after this line would be
         * data.len + vlen bytes long. */
        if (p->data.len + vlen > p->max_event)
            return ZJUCHAT__SSE_TOO_LONG;
        int r = reserve(&p->data, p->data.len + vlen + 1, p->max_event + 1);
        if (r)
            return r;
        memcpy(p->data.buf + p->data.len, v, vlen);
        p->data.len += vlen;
        p->data.buf[p->data.len++] = '\n';
    } else if (name_len == 5 && memcmp(l, "event", 5) == 0) {
        /* vlen < n <= max_line, so the type plus its NUL fits the limit. */
        p->type.len = 0;
        int r = reserve(&p->type, vlen + 1, p->max_line + 1);
        if (r)
            return r;
        if (vlen)
            memcpy(p->type.buf, v, vlen);
        p->type.len = vlen;
    }
    /* "id", "retry" and unknown fields: nothing to do for this client. */
    return 0;
}

/* Line-splits buf and interprets each line; the tail without a line end is
 * kept in p->line for the next feed. */
static int parse(zjuchat__sse *p, const char *buf, size_t len)
{
    const char *pos = buf;
    const char *end = buf + len;
    /* Next LF and CR at or after pos; each is searched over the whole rest
     * once and again only after pos passed it, so a feed is scanned in
     * linear time even when CR and LF endings are mixed. */
    const char *lf = NULL;
    const char *cr = NULL;

    if (p->skip_lf && pos < end) {
        p->skip_lf = 0;
        if (*pos == '\n')
            pos++;
    }
    while (pos < end) {
        if (!lf || lf < pos) {
            lf = memchr(pos, '\n', (size_t)(end - pos));
            if (!lf)
                lf = end;
        }
        if (!cr || cr < pos) {
            cr = memchr(pos, '\r', (size_t)(end - pos));
            if (!cr)
                cr = end;
        }
        const char *eol = lf < cr ? lf : cr;
        size_t n = (size_t)(eol - pos);
        if (p->line.len + n > p->max_line)
            return ZJUCHAT__SSE_TOO_LONG;
        if (eol == end) {
            /* No line end in the rest of the feed: keep it for the next. */
            return append(&p->line, pos, n, p->max_line);
        }
        int r;
        if (p->line.len == 0) {
            r = process_line(p, pos, n); /* whole line in the caller's buffer */
        } else {
            r = append(&p->line, pos, n, p->max_line);
            if (r)
                return r;
            size_t total = p->line.len;
            p->line.len = 0; /* the bytes stay valid until the next append */
            r = process_line(p, p->line.buf, total);
        }
        if (r)
            return r;
        pos = eol + 1;
        if (*eol == '\r') {
            if (pos < end) {
                if (*pos == '\n')
                    pos++;
            } else {
                p->skip_lf = 1;
            }
        }
    }
    return 0;
}

zjuchat__sse *zjuchat__sse_new(size_t max_line, size_t max_event,
                               zjuchat__sse_event_fn fn, void *userdata)
{
    zjuchat__sse *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->fn = fn;
    p->userdata = userdata;
    p->max_line = max_line ? max_line : DEFAULT_MAX_LINE;
    p->max_event = max_event ? max_event : DEFAULT_MAX_EVENT;
    /* Buffers hold a cap plus a terminator; keep that sum from wrapping. */
    if (p->max_line > SIZE_MAX / 2)
        p->max_line = SIZE_MAX / 2;
    if (p->max_event > SIZE_MAX / 2)
        p->max_event = SIZE_MAX / 2;
    return p;
}

int zjuchat__sse_feed(zjuchat__sse *p, const char *buf, size_t len)
{
    if (p->err)
        return p->err;
    if (!p->bom_done) {
        /* The BOM may arrive split across feeds: matched bytes are held
         * back (in bom_n) until the third byte decides. */
        while (p->bom_n < 3 && len > 0 && (unsigned char)*buf == BOM[p->bom_n]) {
            p->bom_n++;
            buf++;
            len--;
        }
        if (p->bom_n < 3 && len == 0)
            return 0;
        p->bom_done = 1;
        if (p->bom_n < 3 && p->bom_n > 0) {
            /* Not a BOM after all: the held bytes are stream content. */
            int r = parse(p, (const char *)BOM, p->bom_n);
            if (r)
                return p->err = r;
        }
    }
    int r = parse(p, buf, len);
    if (r)
        p->err = r;
    return r;
}

void zjuchat__sse_reset(zjuchat__sse *p)
{
    p->line.len = 0;
    p->data.len = 0;
    p->type.len = 0;
    p->comments = 0;
    p->err = 0;
    p->skip_lf = 0;
    p->bom_done = 0;
    p->bom_n = 0;
}

void *zjuchat__sse_scratch(zjuchat__sse *p, size_t size)
{
    if (!p->scratch)
        p->scratch = calloc(1, size);
    return p->scratch;
}

size_t zjuchat__sse_comments(const zjuchat__sse *p)
{
    return p->comments;
}

void zjuchat__sse_free(zjuchat__sse *p)
{
    if (!p)
        return;
    free(p->line.buf);
    free(p->data.buf);
    free(p->type.buf);
    free(p->scratch);
    free(p);
}
