/*
 * chat_body.c - the body of POST /api/chat, checked and built into the
 * upstream's body by libzjuchat. A body without `messages` or a `stop`
 * list (the seed's form and the sampling fields) is read by one YAJL pass
 * without a tree (json_fast.h) when that pass can vouch for it; every other
 * body, and every refusal, goes through jansson's tree. Either way:
 *   [system_content as a system message] + messages + [user_content as a
 *   user message], then temperature, top_p, max_tokens and stop.
 * A body of the seed's form (user_content, system_content, model, stream)
 * goes through the same library calls in the same order as before the
 * multi-turn fields existed, so its upstream bytes are unchanged
 * (tests/e2e/test_multiturn.py holds them to bytes recorded then).
 */
#include "chat_body.h"
#include "http_util.h"
#include "json_fast.h"

#include <jansson.h>
#include <stdarg.h>
#include <yajl/yajl_gen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zjuchat.h>

#define MAX_STOPS 4 /* OpenAI's limit on stop sequences */

/* A text of the body: raw when s points at the bytes between its quotes
 * (written without escapes), else the decoded text. */
typedef struct text_ref {
    const char *s;
    size_t n;
    int raw;
} text_ref;

/* What the body asks for, borrowed from its parsed tree or the pass. */
typedef struct chat_fields {
    json_t *messages;                  /* array, or NULL when not given (tree only) */
    const char *user, *system, *model; /* NULL when not given */
    size_t user_len, system_len;       /* may hold \u0000: not strlen */
    int has_temperature, has_top_p, has_max_tokens;
    double temperature, top_p;
    long long max_tokens;
    const char *stop[MAX_STOPS]; /* C strings (checked: no NUL) */
    size_t nstop;
    /* the pass only: the texts as the upstream body's writer takes them */
    text_ref user_text, system_text, model_text, stop_text;
} chat_fields;

static int fail(srv_chat_body *b, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(srv_chat_body *b, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->msg, sizeof b->msg, fmt, ap);
    va_end(ap);
    return status;
}

/* A member, NULL when absent or null: both mean "not given". */
static json_t *given(json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);
    return json_is_null(v) ? NULL : v;
}

/* The seed's fields and messages' type. Messages' content is the library's
 * to check, while they are added. */
static int check_texts(json_t *root, chat_fields *f, srv_chat_body *b)
{
    f->messages = given(root, "messages");
    if (f->messages && !json_is_array(f->messages))
        return fail(b, 400, "messages must be an array of {role, content} objects");
    json_t *u = json_object_get(root, "user_content");
    /* With a history the new turn may already be its last message. */
    if (!f->messages && (!json_is_string(u) || json_string_length(u) == 0))
        return fail(b, 400, "user_content is required and must be a non-empty string");
    if (f->messages && u && !json_is_null(u) &&
        (!json_is_string(u) || json_string_length(u) == 0))
        return fail(b, 400, "user_content must be a non-empty string");
    f->user = json_string_value(u);
    f->user_len = json_string_length(u);
    json_t *m = given(root, "model");
    if (m && !json_is_string(m))
        return fail(b, 400, "model must be a string");
    f->model = json_string_value(m);
    if (f->model && strlen(f->model) != json_string_length(m))
        return fail(b, 400, "model must not contain NUL"); /* no model id does */
    json_t *s = given(root, "system_content");
    if (s && !json_is_string(s))
        return fail(b, 400, "system_content must be a string");
    f->system = json_string_value(s);
    f->system_len = json_string_length(s);
    s = json_object_get(root, "stream");
    /* Unlike the others, a null stream is an error: the contract wants a
     * boolean whenever the member is present. */
    if (s && !json_is_boolean(s))
        return fail(b, 400, "stream must be a boolean");
    b->stream = json_is_true(s);
    size_t turns = (f->messages ? json_array_size(f->messages) : 0) + (f->user ? 1 : 0) +
                   (f->system_len > 0 ? 1 : 0);
    if (turns == 0)
        return fail(b, 400,
                    "messages is empty and there is no user_content: nothing to send");
    return 0;
}

/* stop: a string or a list of 1..MAX_STOPS, each non-empty. No NUL: the
 * library takes C strings, and no model stops on one. */
static int check_stop(json_t *stop, chat_fields *f, srv_chat_body *b)
{
    int is_list = json_is_array(stop);
    size_t n = is_list ? json_array_size(stop) : 1;
    int ok = n >= 1 && n <= MAX_STOPS;
    for (size_t i = 0; ok && i < n; i++) {
        json_t *s = is_list ? json_array_get(stop, i) : stop;
        ok = json_is_string(s) && json_string_length(s) > 0;
        if (ok && strlen(json_string_value(s)) != json_string_length(s))
            return fail(b, 400, "stop must not contain NUL");
        if (ok)
            f->stop[f->nstop++] = json_string_value(s);
    }
    if (!ok)
        return fail(b, 400,
                    "stop must be a non-empty string or an array of 1 to %d non-empty "
                    "strings",
                    MAX_STOPS);
    return 0;
}

/* The sampling fields' types and ranges: the library refuses the same
 * values, but without saying which. */
static int check_sampling(json_t *root, chat_fields *f, srv_chat_body *b)
{
    json_t *v = given(root, "temperature");
    f->has_temperature = v != NULL;
    f->temperature = json_number_value(v);
    if (v && !(json_is_number(v) && f->temperature >= 0 && f->temperature <= 2))
        return fail(b, 400, "temperature must be a number from 0 to 2");
    v = given(root, "top_p");
    f->has_top_p = v != NULL;
    f->top_p = json_number_value(v);
    if (v && !(json_is_number(v) && f->top_p >= 0 && f->top_p <= 1))
        return fail(b, 400, "top_p must be a number from 0 to 1");
    v = given(root, "max_tokens");
    f->has_max_tokens = v != NULL;
    f->max_tokens = json_integer_value(v);
    if (v && !(json_is_integer(v) && f->max_tokens > 0))
        return fail(b, 400, "max_tokens must be a positive integer");
    v = given(root, "stop");
    return v ? check_stop(v, f, b) : 0;
}

/* Status for a library refusal of a value that was checked already. */
static int not_built(srv_chat_body *b, zjuchat_code rc)
{
    if (rc == ZJUCHAT_ERR_NOMEM)
        return fail(b, 500, "out of memory");
    return fail(b, 500, "cannot build the upstream request: %s", zjuchat_strerror(rc));
}

/* Each message goes to the library as JSON text, which checks its role and
 * content and keeps the rest as given. */
static int add_history(zjuchat_request *r, json_t *messages, srv_chat_body *b)
{
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        /* ENCODE_ANY: a message that is not an object is the library's to
         * refuse, with its message. */
        char *text = json_dumps(m, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text)
            return fail(b, 500, "out of memory");
        zjuchat_error err;
        memset(&err, 0, sizeof err);
        zjuchat_code rc = zjuchat_request_add_message_json(r, text, strlen(text), &err);
        free(text);
        if (rc == ZJUCHAT_ERR_INVALID)
            return fail(b, 400, "messages[%zu]: %s", i, err.message);
        if (rc != ZJUCHAT_OK)
            return not_built(b, rc);
    }
    return 0;
}

static zjuchat_code add_sampling(zjuchat_request *r, const chat_fields *f)
{
    zjuchat_code rc = ZJUCHAT_OK;
    if (f->has_temperature)
        rc = zjuchat_request_set_temperature(r, f->temperature);
    if (rc == ZJUCHAT_OK && f->has_top_p)
        rc = zjuchat_request_set_top_p(r, f->top_p);
    if (rc == ZJUCHAT_OK && f->has_max_tokens)
        rc = zjuchat_request_set_max_tokens(r, (long)f->max_tokens);
    for (size_t i = 0; rc == ZJUCHAT_OK && i < f->nstop; i++)
        rc = zjuchat_request_add_stop(r, f->stop[i]);
    return rc;
}

/* The upstream request: the seed's fields through the calls of
 * zjuchat_request_new_simple_n in its order (same bytes), the history
 * between system and user, the sampling fields last. */
static int build(const chat_fields *f, srv_chat_body *b)
{
    zjuchat_request *r = zjuchat_request_new();
    if (!r)
        return fail(b, 500, "out of memory");
    int status = 0;
    zjuchat_code rc = *f->model ? zjuchat_request_set_model(r, f->model) : ZJUCHAT_OK;
    if (rc == ZJUCHAT_OK && f->system_len > 0)
        rc = zjuchat_request_add_message_n(r, "system", f->system, f->system_len);
    if (rc == ZJUCHAT_OK && f->messages)
        status = add_history(r, f->messages, b);
    if (rc == ZJUCHAT_OK && status == 0 && f->user)
        rc = zjuchat_request_add_message_n(r, "user", f->user, f->user_len);
    if (rc == ZJUCHAT_OK && status == 0)
        rc = add_sampling(r, f);
    if (status == 0 && rc != ZJUCHAT_OK)
        status = not_built(b, rc);
    if (status == 0 && !(b->upstream = zjuchat_request_to_json(r, b->stream)))
        status = fail(b, 500, "out of memory");
    if (status == 0)
        b->upstream_len = strlen(b->upstream); /* a NUL is written \u0000 */
    zjuchat_request_free(r);
    return status;
}

/* ---- the pass without a tree ----
 * It reads the members check_texts and check_sampling read, the last of
 * each name counting (as in jansson's tree), and accepts only bodies whose
 * every member passes and that need no tree to build: no messages, no stop
 * list. Any doubt declines, and the tree decides. */

enum member {
    M_OTHER,
    M_USER,
    M_SYSTEM,
    M_MODEL,
    M_STREAM,
    M_MESSAGES,
    M_TEMP,
    M_TOP_P,
    M_MAX,
    M_STOP,
    M_COUNT
};
enum kind { V_NONE, V_NULL, V_BOOL, V_INT, V_REAL, V_STRING, V_CONTAINER };

typedef struct seen {
    enum kind kind;
    const char *s; /* a string: into the body, or `owned` */
    size_t n;
    char *owned; /* a copy when YAJL handed out its decode buffer */
    int boolean;
    long long integer;
    double real;
} seen;

typedef struct chat_pass {
    srv_json_fast f; /* first: json_fast.h */
    const char *body;
    size_t body_len;
    enum member key;
    seen m[M_COUNT];
    int oom;
} chat_pass;

static enum member member_of(const unsigned char *k, size_t n)
{
#define IS(lit) (n == sizeof lit - 1 && memcmp(k, lit, n) == 0)
    if (IS("user_content"))
        return M_USER;
    if (IS("system_content"))
        return M_SYSTEM;
    if (IS("model"))
        return M_MODEL;
    if (IS("stream"))
        return M_STREAM;
    if (IS("messages"))
        return M_MESSAGES;
    if (IS("temperature"))
        return M_TEMP;
    if (IS("top_p"))
        return M_TOP_P;
    if (IS("max_tokens"))
        return M_MAX;
    if (IS("stop"))
        return M_STOP;
    return M_OTHER;
#undef IS
}

/* The top-level member being read gets a new value (the last one counts). */
static seen *top_value(chat_pass *p, enum kind k)
{
    if (p->f.depth != 1 || p->key == M_OTHER)
        return NULL;
    seen *v = &p->m[p->key];
    free(v->owned);
    memset(v, 0, sizeof *v);
    v->kind = k;
    return v;
}

static int cp_null(void *ctx)
{
    top_value(ctx, V_NULL);
    return 1;
}

static int cp_bool(void *ctx, int b)
{
    seen *v = top_value(ctx, V_BOOL);
    if (v)
        v->boolean = b;
    return 1;
}

static int cp_integer(void *ctx, long long i)
{
    seen *v = top_value(ctx, V_INT);
    if (v)
        v->integer = i;
    return 1;
}

static int cp_double(void *ctx, double d)
{
    seen *v = top_value(ctx, V_REAL);
    if (v)
        v->real = d;
    return 1;
}

static int cp_string(void *ctx, const unsigned char *str, size_t n)
{
    chat_pass *p = ctx;
    seen *v = top_value(p, V_STRING);
    if (!v)
        return 1;
    const char *s = (const char *)str;
    if (s >= p->body && s + n <= p->body + p->body_len) {
        v->s = s; /* no escapes: the body's own bytes, alive until the reply */
    } else {
        v->owned = malloc(n + 1);
        if (!v->owned) {
            p->oom = 1;
            return 0;
        }
        memcpy(v->owned, s, n);
        v->owned[n] = '\0';
        v->s = v->owned;
    }
    v->n = n;
    return 1;
}

static int cp_key(void *ctx, const unsigned char *k, size_t n)
{
    chat_pass *p = ctx;
    if (memchr(k, 0, n))
        return 0; /* jansson refuses a NUL in a key, even with JSON_ALLOW_NUL */
    if (p->f.depth == 1)
        p->key = member_of(k, n);
    return 1;
}

static int cp_open(void *ctx)
{
    chat_pass *p = ctx;
    if (p->f.depth == 0)
        return srv_json_fast_open(&p->f);
    top_value(p, V_CONTAINER);
    return srv_json_fast_open(&p->f);
}

static int cp_open_array(void *ctx)
{
    chat_pass *p = ctx;
    return p->f.depth == 0 ? 0 : cp_open(ctx); /* not an object: the tree's to word */
}

static int cp_close(void *ctx)
{
    srv_json_fast_close(&((chat_pass *)ctx)->f);
    return 1;
}

static const yajl_callbacks chat_callbacks = {
    cp_null, cp_bool, cp_integer, cp_double,     NULL,     cp_string,
    cp_open, cp_key,  cp_close,   cp_open_array, cp_close,
};

static int absent(const seen *v)
{
    return v->kind == V_NONE || v->kind == V_NULL;
}

static text_ref text_of(const seen *v)
{
    return (text_ref){v->s, v->n, v->owned == NULL};
}

static int has_nul(const seen *v)
{
    return memchr(v->s, 0, v->n) != NULL;
}

static double number(const seen *v)
{
    return v->kind == V_INT ? (double)v->integer : v->real;
}

static int number_in(const seen *v, double lo, double hi)
{
    return absent(v) || ((v->kind == V_INT || v->kind == V_REAL) && number(v) >= lo &&
                         number(v) <= hi);
}

/* 1 with f filled when the pass accepts (its texts as text_refs: the
 * writer below takes no C string); 0: ask the tree. */
static int fields_without_tree(chat_pass *p, chat_fields *f, srv_chat_body *b)
{
    seen *m = p->m;
    if (!absent(&m[M_MESSAGES]))
        return 0; /* a history: the tree checks and builds it */
    if (m[M_USER].kind != V_STRING || m[M_USER].n == 0)
        return 0;
    if (!absent(&m[M_MODEL]) && (m[M_MODEL].kind != V_STRING || has_nul(&m[M_MODEL])))
        return 0;
    if (!absent(&m[M_SYSTEM]) && m[M_SYSTEM].kind != V_STRING)
        return 0;
    if (m[M_STREAM].kind != V_NONE && m[M_STREAM].kind != V_BOOL)
        return 0; /* null included: a refusal */
    if (!number_in(&m[M_TEMP], 0, 2) || !number_in(&m[M_TOP_P], 0, 1))
        return 0;
    if (!absent(&m[M_MAX]) && !(m[M_MAX].kind == V_INT && m[M_MAX].integer > 0))
        return 0;
    if (!absent(&m[M_STOP]) &&
        (m[M_STOP].kind != V_STRING || m[M_STOP].n == 0 || has_nul(&m[M_STOP])))
        return 0; /* a list, or a refusal */
    f->user = m[M_USER].s;
    f->user_len = m[M_USER].n;
    f->user_text = text_of(&m[M_USER]);
    if (m[M_SYSTEM].kind == V_STRING) {
        f->system = m[M_SYSTEM].s;
        f->system_len = m[M_SYSTEM].n;
        f->system_text = text_of(&m[M_SYSTEM]);
    }
    b->stream = m[M_STREAM].kind == V_BOOL && m[M_STREAM].boolean;
    if (m[M_MODEL].kind == V_STRING)
        f->model_text = text_of(&m[M_MODEL]);
    f->has_temperature = !absent(&m[M_TEMP]);
    f->temperature = number(&m[M_TEMP]);
    f->has_top_p = !absent(&m[M_TOP_P]);
    f->top_p = number(&m[M_TOP_P]);
    f->has_max_tokens = !absent(&m[M_MAX]);
    f->max_tokens = m[M_MAX].integer;
    if (m[M_STOP].kind == V_STRING) {
        f->stop_text = text_of(&m[M_STOP]);
        f->nstop = 1;
    }
    return 1;
}

static int finish(const chat_fields *given_fields, const srv_config *cfg,
                  srv_chat_body *b)
{
    chat_fields f = *given_fields;
    if (!f.model || !*f.model)
        f.model = cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL;
    srv_copy_text(b->model, sizeof b->model, f.model);
    return build(&f, b);
}

/* ---- the upstream body of a body without a history ----
 * The bytes zjuchat_request_to_json writes for the same fields (model, the
 * sampling fields in the order add_sampling sets them, messages, stream),
 * without building the library's jansson tree (that tree cost ~9k
 * instructions of the ~15k the body took) nor driving a generator call by
 * call (~5k more). The body's structure is fixed, so its punctuation and
 * names are constant text; a text the client wrote without escapes goes
 * as the client's own bytes (YAJL's encoding of it is those bytes: such a
 * string holds no '"', '\\' or control character, which YAJL's parser
 * refuses raw); any other text is YAJL's encoding, numbers are the
 * library's text for them. fuzz_chat_body holds the two to the same bytes. */

typedef struct out_buf {
    char *p;
    size_t n, cap;
} out_buf;

static int put(out_buf *o, const char *s, size_t n)
{
    if (n > o->cap - o->n) {
        size_t cap = o->cap * 2 > o->n + n ? o->cap * 2 : o->n + n;
        char *p = realloc(o->p, cap + 1); /* + 1: the NUL at the end */
        if (!p)
            return 0;
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
    return 1;
}

#define PUT_LIT(o, lit) put(o, lit, sizeof lit - 1)

/* A text as a JSON string: raw (the bytes between its quotes in the body)
 * or encoded by YAJL, whose generator g is left empty for the next one. */
static int put_text(out_buf *o, yajl_gen g, const text_ref *t)
{
    if (t->raw)
        return PUT_LIT(o, "\"") && put(o, t->s, t->n) && PUT_LIT(o, "\"");
    const unsigned char *buf;
    size_t len;
    int ok =
        yajl_gen_string(g, (const unsigned char *)t->s, t->n) == yajl_gen_status_ok &&
        yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok &&
        put(o, (const char *)buf, len);
    yajl_gen_clear(g);
    yajl_gen_reset(g, NULL);
    return ok;
}

/* A real as jansson writes it (the library's own serialiser does the same). */
static int put_real(out_buf *o, double d)
{
    json_t *r = json_real(d);
    char *text = r ? json_dumps(r, JSON_ENCODE_ANY) : NULL;
    int ok = text && put(o, text, strlen(text));
    free(text);
    json_decref(r);
    return ok;
}

/* An integer as YAJL's generator writes it. */
static int put_integer(out_buf *o, long long v)
{
    char text[32];
    int n = snprintf(text, sizeof text, "%lld", v);
    return put(o, text, (size_t)n);
}

static int put_body(out_buf *o, yajl_gen g, const chat_fields *f, const text_ref *model,
                    int stream)
{
    int ok = PUT_LIT(o, "{\"model\":") && put_text(o, g, model);
    if (ok && f->has_temperature)
        ok = PUT_LIT(o, ",\"temperature\":") && put_real(o, f->temperature);
    if (ok && f->has_top_p)
        ok = PUT_LIT(o, ",\"top_p\":") && put_real(o, f->top_p);
    if (ok && f->has_max_tokens)
        ok = PUT_LIT(o, ",\"max_tokens\":") && put_integer(o, (long)f->max_tokens);
    if (ok && f->nstop) /* the pass takes one stop string at most */
        ok =
            PUT_LIT(o, ",\"stop\":[") && put_text(o, g, &f->stop_text) && PUT_LIT(o, "]");
    ok = ok && PUT_LIT(o, ",\"messages\":[");
    if (ok && f->system_len > 0)
        ok = PUT_LIT(o, "{\"role\":\"system\",\"content\":") &&
             put_text(o, g, &f->system_text) && PUT_LIT(o, "},");
    ok = ok && PUT_LIT(o, "{\"role\":\"user\",\"content\":") &&
         put_text(o, g, &f->user_text) && PUT_LIT(o, "}],\"stream\":");
    ok = ok && (stream ? PUT_LIT(o, "true}") : PUT_LIT(o, "false}"));
    return ok;
}

/* The seed's form with its sampling fields: written directly. A generator
 * kept for the process (a worker serves one request at a time) encodes
 * the texts with escapes. The buffer fits the common case at once: the
 * raw texts are disjoint parts of the body, quotes included. */
static int finish_without_tree(const chat_fields *given_fields, const srv_config *cfg,
                               size_t body_len, srv_chat_body *b)
{
    static yajl_gen g;
    chat_fields f = *given_fields;
    text_ref model = f.model_text;
    if (model.n == 0) { /* none, or "": the default */
        const char *name =
            cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL;
        model = (text_ref){name, strlen(name), 0};
    }
    size_t keep = model.n < sizeof b->model - 1 ? model.n : sizeof b->model - 1;
    memcpy(b->model, model.s, keep); /* no NUL among them: checked */
    b->model[keep] = '\0';
    if (!g && !(g = yajl_gen_alloc(NULL)))
        return fail(b, 500, "out of memory");
    out_buf o = {NULL, 0, body_len + model.n + 192};
    if (!(o.p = malloc(o.cap + 1)) || !put_body(&o, g, &f, &model, b->stream)) {
        free(o.p);
        return fail(b, 500, "out of memory");
    }
    o.p[o.n] = '\0';
    b->upstream = o.p;
    b->upstream_len = o.n;
    return 0;
}

/* The pass; -1 when it declines. */
static int parse_without_tree(const char *bytes, size_t len, const srv_config *cfg,
                              srv_chat_body *b)
{
    chat_pass p;
    memset(&p, 0, sizeof p);
    p.body = bytes;
    p.body_len = len;
    chat_fields f;
    memset(&f, 0, sizeof f);
    int status = -1;
    if (srv_json_fast_parse(bytes, len, &chat_callbacks, &p) &&
        fields_without_tree(&p, &f, b))
        status = finish_without_tree(&f, cfg, len, b);
    for (int i = 0; i < M_COUNT; i++)
        free(p.m[i].owned);
    if (status == -1)
        b->stream = 0;
    return status;
}

int srv_chat_body_parse(const char *content_type, const char *bytes, size_t len,
                        const srv_config *cfg, srv_chat_body *b)
{
    memset(b, 0, sizeof *b);
    if (!srv_http_is_json_type(content_type))
        return fail(b, 415, "Content-Type must be application/json");
    if (len > cfg->max_body)
        return fail(b, 413, "request body too large");
    int status = parse_without_tree(bytes, len, cfg, b);
    return status >= 0 ? status : srv_chat_body_parse_tree(bytes, len, cfg, b);
}

int srv_chat_body_parse_tree(const char *bytes, size_t len, const srv_config *cfg,
                             srv_chat_body *b)
{
    memset(b, 0, sizeof *b);
    json_error_t jerr;
    /* \u0000 is valid JSON: the texts keep it (their lengths go upstream). */
    json_t *root = json_loadb(bytes ? bytes : "", len, JSON_ALLOW_NUL, &jerr);
    if (!root)
        return fail(b, 400, "request body is not valid JSON: %s (line %d, column %d)",
                    jerr.text, jerr.line, jerr.column);
    chat_fields f;
    memset(&f, 0, sizeof f);
    int status =
        json_is_object(root) ? 0 : fail(b, 400, "request body must be a JSON object");
    if (status == 0)
        status = check_texts(root, &f, b);
    if (status == 0)
        status = check_sampling(root, &f, b);
    if (status == 0)
        status = finish(&f, cfg, b);
    json_decref(root);
    return status;
}

void srv_chat_body_free(srv_chat_body *b)
{
    free(b->upstream);
    b->upstream = NULL;
    b->upstream_len = 0;
}
