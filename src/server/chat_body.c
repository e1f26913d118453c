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

/* A C string of n bytes at s (no NUL among them: checked), which need not
 * be terminated (strndup may look one byte further). */
static char *text_copy(const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = '\0';
    }
    return c;
}

/* 1 with f filled (model and stop as C strings in *model_c, *stop_c) when
 * the pass accepts; 0: ask the tree. */
static int fields_without_tree(chat_pass *p, chat_fields *f, srv_chat_body *b,
                               char **model_c, char **stop_c)
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
    if (m[M_SYSTEM].kind == V_STRING) {
        f->system = m[M_SYSTEM].s;
        f->system_len = m[M_SYSTEM].n;
    }
    b->stream = m[M_STREAM].kind == V_BOOL && m[M_STREAM].boolean;
    if (m[M_MODEL].kind == V_STRING &&
        !(f->model = *model_c = text_copy(m[M_MODEL].s, m[M_MODEL].n)))
        return 0;
    f->has_temperature = !absent(&m[M_TEMP]);
    f->temperature = number(&m[M_TEMP]);
    f->has_top_p = !absent(&m[M_TOP_P]);
    f->top_p = number(&m[M_TOP_P]);
    f->has_max_tokens = !absent(&m[M_MAX]);
    f->max_tokens = m[M_MAX].integer;
    if (m[M_STOP].kind == V_STRING) {
        if (!(f->stop[0] = *stop_c = text_copy(m[M_STOP].s, m[M_STOP].n)))
            return 0;
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
 * by the same generator (YAJL's, which does the escaping) without building
 * the library's jansson tree first: that tree cost ~9k instructions of the
 * ~15k the body took. fuzz_chat_body holds the two to the same bytes. */

static int gen_text(yajl_gen g, const char *s, size_t n)
{
    return yajl_gen_string(g, (const unsigned char *)s, n) == yajl_gen_status_ok;
}

#define GEN_LIT(g, lit) gen_text(g, lit, sizeof lit - 1)

/* A real as jansson writes it (the library's own serialiser does the same). */
static int gen_real(yajl_gen g, double d)
{
    json_t *r = json_real(d);
    char *text = r ? json_dumps(r, JSON_ENCODE_ANY) : NULL;
    int ok = text && yajl_gen_number(g, text, strlen(text)) == yajl_gen_status_ok;
    free(text);
    json_decref(r);
    return ok;
}

static int gen_message(yajl_gen g, const char *role, size_t role_len, const char *text,
                       size_t len)
{
    return yajl_gen_map_open(g) == yajl_gen_status_ok && GEN_LIT(g, "role") &&
           gen_text(g, role, role_len) && GEN_LIT(g, "content") &&
           gen_text(g, text, len) && yajl_gen_map_close(g) == yajl_gen_status_ok;
}

static int gen_body(yajl_gen g, const chat_fields *f, int stream)
{
    int ok = yajl_gen_map_open(g) == yajl_gen_status_ok && GEN_LIT(g, "model") &&
             gen_text(g, f->model, strlen(f->model));
    if (ok && f->has_temperature)
        ok = GEN_LIT(g, "temperature") && gen_real(g, f->temperature);
    if (ok && f->has_top_p)
        ok = GEN_LIT(g, "top_p") && gen_real(g, f->top_p);
    if (ok && f->has_max_tokens)
        ok = GEN_LIT(g, "max_tokens") &&
             yajl_gen_integer(g, (long)f->max_tokens) == yajl_gen_status_ok;
    if (ok && f->nstop) {
        ok = GEN_LIT(g, "stop") && yajl_gen_array_open(g) == yajl_gen_status_ok;
        for (size_t i = 0; ok && i < f->nstop; i++)
            ok = gen_text(g, f->stop[i], strlen(f->stop[i]));
        ok = ok && yajl_gen_array_close(g) == yajl_gen_status_ok;
    }
    ok = ok && GEN_LIT(g, "messages") && yajl_gen_array_open(g) == yajl_gen_status_ok;
    if (ok && f->system_len > 0)
        ok = gen_message(g, "system", 6, f->system, f->system_len);
    ok = ok && gen_message(g, "user", 4, f->user, f->user_len) &&
         yajl_gen_array_close(g) == yajl_gen_status_ok && GEN_LIT(g, "stream") &&
         yajl_gen_bool(g, stream) == yajl_gen_status_ok &&
         yajl_gen_map_close(g) == yajl_gen_status_ok;
    return ok;
}

/* The seed's form with its sampling fields: written directly. A generator
 * kept for the process (a worker serves one request at a time) saves its
 * allocation per request. */
static int finish_without_tree(const chat_fields *given_fields, const srv_config *cfg,
                               srv_chat_body *b)
{
    static yajl_gen g;
    chat_fields f = *given_fields;
    if (!f.model || !*f.model)
        f.model = cfg->default_model ? cfg->default_model : ZJUCHAT_DEFAULT_MODEL;
    srv_copy_text(b->model, sizeof b->model, f.model);
    if (!g && !(g = yajl_gen_alloc(NULL)))
        return fail(b, 500, "out of memory");
    const unsigned char *buf;
    size_t len;
    int status = 0;
    if (!gen_body(g, &f, b->stream) ||
        yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok ||
        !(b->upstream = malloc(len + 1))) {
        status = fail(b, 500, "out of memory");
    } else {
        memcpy(b->upstream, buf, len);
        b->upstream[len] = '\0';
        b->upstream_len = len;
    }
    yajl_gen_clear(g);
    yajl_gen_reset(g, NULL);
    return status;
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
    char *model_c = NULL, *stop_c = NULL;
    int status = -1;
    if (srv_json_fast_parse(bytes, len, &chat_callbacks, &p) &&
        fields_without_tree(&p, &f, b, &model_c, &stop_c))
        status = finish_without_tree(&f, cfg, b);
    for (int i = 0; i < M_COUNT; i++)
        free(p.m[i].owned);
    free(model_c);
    free(stop_c);
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
