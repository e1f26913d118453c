/*
 * sse.h - incremental Server-Sent Events parser (internal).
 *
 * Follows the "event stream interpretation" of the WHATWG SSE specification:
 * lines end in LF, CRLF or CR (a CRLF split across two feeds is one line end);
 * "field:value" with one optional space after the colon; lines starting with
 * ':' are comments; "data" lines of one event are joined with '\n'; a blank
 * line dispatches the event (nothing is dispatched when no data line was
 * seen); "event", "id", "retry" and unknown fields are accepted and ignored
 * except "event", whose value is passed along; a leading UTF-8 BOM is
 * skipped; at end of stream an unfinished event is discarded.
 *
 * Bytes are never interpreted as UTF-8, so a feed may split a multi-byte
 * sequence anywhere. Memory is capped when the parser is created: a line or
 * an event over its cap is an error, not a reallocation.
 */
#ifndef ZJUCHAT_SSE_H
#define ZJUCHAT_SSE_H

#include <stddef.h>

typedef struct zjuchat__sse zjuchat__sse;

/*
 * Called once per dispatched event. `event` is the event type ("" when no
 * "event:" field), `data` the joined data lines; both borrowed until the
 * callback returns, and data is NUL-terminated at data[data_len] (it may
 * also contain NULs). data always points into the parser's own buffer, so
 * the callback may rewrite data[0..data_len) in place (the transport redacts
 * the key there); it must not free the parser. Return 0 to go on; any other
 * value stops parsing and is returned by zjuchat__sse_feed, and by every
 * later feed until zjuchat__sse_reset.
 */
typedef int (*zjuchat__sse_event_fn)(void *userdata, const char *event, const char *data,
                                     size_t data_len);

#define ZJUCHAT__SSE_OK 0
#define ZJUCHAT__SSE_TOO_LONG (-1) /* a line or an event exceeded its cap */
#define ZJUCHAT__SSE_NOMEM (-2)

/* New parser; caps in bytes (0 means the default: 64 KiB line, 1 MiB
 * event). NULL on OOM. */
zjuchat__sse *zjuchat__sse_new(size_t max_line, size_t max_event,
                               zjuchat__sse_event_fn fn, void *userdata);

/* Feed bytes. Returns ZJUCHAT__SSE_OK, an error above, or the callback's
 * non-zero value. After an error the parser must be reset or freed. */
int zjuchat__sse_feed(zjuchat__sse *p, const char *buf, size_t len);

/* Forget all state (partial line, partial event, BOM check) for a new
 * stream; keeps caps, callback and buffers. */
void zjuchat__sse_reset(zjuchat__sse *p);

/* Memory of `size` bytes for the callback's own use, zeroed when first
 * asked for and kept across resets until the parser is freed (the event
 * policy keeps its scan memo there); the same size every time. NULL on
 * OOM. */
void *zjuchat__sse_scratch(zjuchat__sse *p, size_t size);

/* Counters since the last reset: comment lines seen (heartbeats). */
size_t zjuchat__sse_comments(const zjuchat__sse *p);

void zjuchat__sse_free(zjuchat__sse *p);

#endif
