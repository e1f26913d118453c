/*
 * json_fast.h - a client's JSON body read in one YAJL pass, without a tree,
 * for the hot path of the request handlers (chat_body.c, openai_body.c).
 *
 * jansson stays the reference: it builds the tree, judges every body the
 * pass cannot, and words every error. The pass answers "valid" only for
 * bodies jansson accepts too: it declines (and the caller asks jansson) for
 * any byte outside the subset both libraries treat alike -- control bytes
 * other than JSON's white space (YAJL takes \f and \v for white space),
 * UTF-8 lead bytes whose sequences may be overlong, surrogates or past
 * U+10FFFF (YAJL only checks the continuation bytes), \u escapes of the
 * D800-DFFF block (YAJL turns a lone surrogate into '?', jansson refuses
 * it) -- for nesting deeper than jansson's limit, and for anything after
 * the top-level value but white space (YAJL 2.1 only peeks at a token
 * after a complete value). Its callers' key callbacks decline a key holding
 * \u0000, which jansson refuses even with JSON_ALLOW_NUL. Numbers go through YAJL's
 * integer and double conversions, which refuse the overflows jansson refuses.
 */
#ifndef SRV_JSON_FAST_H
#define SRV_JSON_FAST_H

#include <stddef.h>
#include <yajl/yajl_parse.h>

#define SRV_JSON_FAST_MAX_DEPTH 1024 /* jansson's own limit is 2048 */

/* The first member of a pass's context: the callbacks keep it current with
 * srv_json_fast_open and srv_json_fast_close. */
typedef struct srv_json_fast {
    yajl_handle h;
    int depth;  /* containers open */
    size_t end; /* offset just past the top-level container */
} srv_json_fast;

/* A container opens (start_map, start_array): 0 when too deep (return it
 * from the callback: the pass declines). */
int srv_json_fast_open(srv_json_fast *f);

/* A container closes (end_map, end_array). */
void srv_json_fast_close(srv_json_fast *f);

/* Runs the pass with callbacks `cb` (yajl_integer and yajl_double must be
 * set, yajl_number not, for the overflow checks) on ctx, whose first member
 * is a srv_json_fast. 1: the body is valid JSON and every callback ran and
 * returned non-zero; 0: undecided (invalid, declined by a callback, or
 * outside the subset above): ask jansson. */
int srv_json_fast_parse(const char *bytes, size_t len, const yajl_callbacks *cb,
                        void *ctx);

#endif
