/*
 * Fault and pacing directives of the mock: parsed from "key=value,..." (the
 * model-name suffix after '#', the X-Mock header) or from the JSON object of
 * POST /_mock/config, and merged layer over layer.
 */
#include "mock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    int bit;
} fault_names[] = {
    {"hang_headers", MOCK_FAULT_HANG_HEADERS},
    {"hang_mid", MOCK_FAULT_HANG_MID},
    {"drop_mid", MOCK_FAULT_DROP_MID},
    {"rst_mid", MOCK_FAULT_RST_MID},
    {"garbage", MOCK_FAULT_GARBAGE},
    {"no_done", MOCK_FAULT_NO_DONE},
    {"truncate", MOCK_FAULT_TRUNCATE},
    {"not_sse", MOCK_FAULT_NOT_SSE},
    {"endless_line", MOCK_FAULT_ENDLESS_LINE},
    {"big_error", MOCK_FAULT_BIG_ERROR},
    {"crlf", MOCK_FAULT_CRLF},
};

void mock_directives_clear(struct mock_directives *d)
{
    memset(d, 0xff, sizeof(*d)); /* every int becomes -1 */
}

void mock_directives_merge(struct mock_directives *dst, const struct mock_directives *src)
{
    int *o = (int *)dst;
    const int *i = (const int *)src;
    for (size_t k = 0; k < sizeof(*dst) / sizeof(int); k++)
        if (i[k] >= 0)
            o[k] = i[k];
}

/* Parses a non-negative decimal int no larger than max. */
static int parse_uint(const char *s, int max, int *out)
{
    char *end;
    long v;
    if (*s < '0' || *s > '9')
        return -1;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < 0 || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

/* Parses "a+b+c" fault names; "none" clears. */
static int parse_faults(const char *val, int *out)
{
    int mask = 0;
    const char *p = val;
    while (*p) {
        size_t n = strcspn(p, "+|");
        size_t k;
        for (k = 0; k < sizeof(fault_names) / sizeof(fault_names[0]); k++)
            if (strlen(fault_names[k].name) == n && !strncmp(p, fault_names[k].name, n))
                break;
        if (k < sizeof(fault_names) / sizeof(fault_names[0]))
            mask |= fault_names[k].bit;
        else if (!(n == 4 && !strncmp(p, "none", 4)))
            return -1;
        p += n;
        if (*p)
            p++;
    }
    *out = mask;
    return 0;
}

int mock_directives_set(struct mock_directives *d, const char *key, const char *val,
                        char *err, size_t errlen)
{
    static const struct {
        const char *name;
        size_t off;
        int max;
    } ints[] = {
        {"events", offsetof(struct mock_directives, events), 10000000},
        {"reasoning", offsetof(struct mock_directives, reasoning), 10000000},
        {"delay", offsetof(struct mock_directives, delay_ms), 3600000},
        {"think", offsetof(struct mock_directives, think_ms), 3600000},
        {"first", offsetof(struct mock_directives, first_ms), 3600000},
        {"status", offsetof(struct mock_directives, status), 599},
        {"retry_after", offsetof(struct mock_directives, retry_after), 86400},
        {"echo_key", offsetof(struct mock_directives, echo_key), 1},
        {"after", offsetof(struct mock_directives, after), 10000000},
        {"split", offsetof(struct mock_directives, split), 1 << 20},
    };
    for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
        if (strcmp(key, ints[k].name))
            continue;
        int v;
        if (parse_uint(val, ints[k].max, &v) < 0 ||
            (!strcmp(key, "status") && v != 0 && v < 100)) {
            snprintf(err, errlen, "bad value for mock directive %s: '%s'", key, val);
            return -1;
        }
        *(int *)((char *)d + ints[k].off) = v;
        return 0;
    }
    if (!strcmp(key, "body")) {
        if (!strcmp(val, "json"))
            d->body = MOCK_BODY_JSON;
        else if (!strcmp(val, "html"))
            d->body = MOCK_BODY_HTML;
        else if (!strcmp(val, "empty"))
            d->body = MOCK_BODY_EMPTY;
        else {
            snprintf(err, errlen, "bad body '%s' (json, html or empty)", val);
            return -1;
        }
        return 0;
    }
    if (!strcmp(key, "text")) {
        static const char *const texts[] = {"mock", "hostile", "think", "markdown"};
        for (int k = 0; k < (int)(sizeof(texts) / sizeof(texts[0])); k++)
            if (!strcmp(val, texts[k])) {
                d->text = k; /* MOCK_TEXT_* in this order */
                return 0;
            }
        snprintf(err, errlen, "bad text '%s' (mock, hostile, think or markdown)", val);
        return -1;
    }
    if (!strcmp(key, "fault")) {
        if (parse_faults(val, &d->faults) < 0) {
            snprintf(err, errlen, "unknown fault '%s'", val);
            return -1;
        }
        return 0;
    }
    if (!strcmp(key, "crlf")) { /* also accepted as a key of its own */
        int v;
        if (parse_uint(val, 1, &v) < 0) {
            snprintf(err, errlen, "bad value for crlf: '%s'", val);
            return -1;
        }
        if (d->faults < 0)
            d->faults = 0;
        d->faults = v ? d->faults | MOCK_FAULT_CRLF : d->faults & ~MOCK_FAULT_CRLF;
        return 0;
    }
    snprintf(err, errlen, "unknown mock directive '%s'", key);
    return -1;
}

int mock_directives_parse(const char *s, size_t len, struct mock_directives *d, char *err,
                          size_t errlen)
{
    char buf[512];
    char *save = NULL;
    if (len >= sizeof(buf)) {
        snprintf(err, errlen, "mock directives too long");
        return -1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            snprintf(err, errlen, "mock directive '%s' lacks '='", tok);
            return -1;
        }
        *eq = '\0';
        if (mock_directives_set(d, tok, eq + 1, err, errlen) < 0)
            return -1;
    }
    return 0;
}

json_t *mock_directives_to_json(const struct mock_directives *d)
{
    static const char *const bodies[] = {"json", "html", "empty"};
    static const char *const texts[] = {"mock", "hostile", "think", "markdown"};
    json_t *o = json_object();
    if (!o)
        return NULL;
#define PUT_INT(name, field)                                                             \
    if (d->field >= 0)                                                                   \
    json_object_set_new(o, name, json_integer(d->field))
    PUT_INT("events", events);
    PUT_INT("reasoning", reasoning);
    PUT_INT("delay", delay_ms);
    PUT_INT("think", think_ms);
    PUT_INT("first", first_ms);
    PUT_INT("status", status);
    PUT_INT("retry_after", retry_after);
    PUT_INT("echo_key", echo_key);
    PUT_INT("after", after);
    PUT_INT("split", split);
#undef PUT_INT
    if (d->body >= 0 && d->body <= 2)
        json_object_set_new(o, "body", json_string(bodies[d->body]));
    if (d->text >= 0 && d->text <= MOCK_TEXT_MARKDOWN)
        json_object_set_new(o, "text", json_string(texts[d->text]));
    if (d->faults >= 0) {
        char buf[256] = "";
        for (size_t k = 0; k < sizeof(fault_names) / sizeof(fault_names[0]); k++) {
            if (!(d->faults & fault_names[k].bit))
                continue;
            if (buf[0])
                strcat(buf, "+");
            strcat(buf, fault_names[k].name);
        }
        json_object_set_new(o, "fault", json_string(buf[0] ? buf : "none"));
    }
    return o;
}
