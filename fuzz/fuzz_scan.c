/*
 * fuzz_scan.c - differential fuzzing of the tree-less event scan (scan.c)
 * against jansson: both must agree on "is a JSON object", except for the
 * two documented differences (integers beyond 64 bits and lone surrogate
 * \u escapes are valid JSON for the scan and for a browser, refused by
 * jansson; raw NUL bytes, accepted by jansson in places, refused by the
 * scan; \u0000 in an object key, which jansson cannot store); usage,
 * finish_reason and the bytes of delta text found by the scan must match the
 * tree.
 */
#include "internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int has_surrogate_escape(const char *s, size_t n)
{
    for (size_t i = 0; i + 5 < n; i++)
        if (s[i] == '\\' && s[i + 1] == 'u' && (s[i + 2] == 'd' || s[i + 2] == 'D') &&
            strchr("89abcdefABCDEF", s[i + 3]))
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    zjuchat__scan s;
    if (zjuchat__scan_json(text, size, "sk-fuzz", &s) == -2)
        return 0;
    json_error_t jerr;
    json_t *j = json_loadb(text, size, JSON_ALLOW_NUL, &jerr);
    int j_obj = json_is_object(j);
    int s_obj = s.valid && s.is_object;
    /* jansson's buffer reader treats a raw NUL byte oddly (it can accept a
     * document around one); raw NUL is never valid JSON text, so the scan's
     * refusal is right and only the other direction is checked then. */
    if (j_obj && !s_obj && !memchr(text, '\0', size)) {
        fprintf(stderr, "scan rejects an object jansson accepts\n");
        abort();
    }
    if (s_obj && !j_obj && !strstr(jerr.text, "too big") &&
        !has_surrogate_escape(text, size) && !strstr(jerr.text, "overflow") &&
        !strstr(jerr.text, "NUL byte in object key")) {
        fprintf(stderr, "scan accepts what jansson rejects: %s\n", jerr.text);
        abort();
    }
    /* With duplicate keys JSON leaves the meaning open (jansson keeps the
     * last one): compare what was found only for documents without them. */
    json_t *strict =
        j_obj ? json_loadb(text, size, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, NULL)
              : NULL;
    int unique = strict != NULL;
    json_decref(strict);
    if (j_obj && s_obj && unique) {
        json_t *choices = json_object_get(j, "choices");
        int finish = 0;
        size_t i;
        json_t *c;
        json_array_foreach(choices, i, c) finish |=
            json_is_string(json_object_get(c, "finish_reason"));
        if (json_is_array(choices) && finish != s.finish) {
            fprintf(stderr, "finish_reason: scan %d, tree %d\n", s.finish, finish);
            abort();
        }
        size_t delta_text = 0; /* choices[].delta.content and .reasoning_content */
        json_array_foreach(choices, i, c)
        {
            json_t *delta = json_object_get(c, "delta");
            delta_text += json_string_length(json_object_get(delta, "content")) +
                          json_string_length(json_object_get(delta, "reasoning_content"));
        }
        if (delta_text != s.text_len) {
            fprintf(stderr, "delta text bytes: scan %zu, tree %zu\n", s.text_len,
                    delta_text);
            abort();
        }
        json_t *total = json_object_get(json_object_get(j, "usage"), "total_tokens");
        if (json_is_integer(total) && s.total != (long)json_integer_value(total)) {
            fprintf(stderr, "usage.total_tokens: scan %ld, tree %lld\n", s.total,
                    (long long)json_integer_value(total));
            abort();
        }
    }
    json_decref(j);
    return 0;
}
