/*
 * The mock's deterministic answer text. Deltas cycle through fixed pieces that
 * mix Chinese, ASCII and 4-byte emoji, so clients meet multi-byte UTF-8 split
 * across events and reads; the full answer is always the concatenation of the
 * deltas, which is also the non-stream content for the same parameters.
 */
#include "mock.h"

#include <stdlib.h>
#include <string.h>

static const char *const content[] = {"你好",  "，",   "世界", " 🌍", "!",
                                      " 这是", "模拟", "回答", " 😀", "。"};
static const char *const reasoning[] = {"嗯", "，让我", "想想", " 🤔", "..."};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

const char *mock_content_delta(int i)
{
    return content[i % COUNT(content)];
}

const char *mock_reasoning_delta(int i)
{
    return reasoning[i % COUNT(reasoning)];
}

char *mock_content_join(int n, int is_reasoning)
{
    size_t len = 0, off = 0;
    char *s;
    for (int i = 0; i < n; i++)
        len += strlen(is_reasoning ? mock_reasoning_delta(i) : mock_content_delta(i));
    s = malloc(len + 1);
    if (!s)
        return NULL;
    for (int i = 0; i < n; i++) {
        const char *p = is_reasoning ? mock_reasoning_delta(i) : mock_content_delta(i);
        size_t l = strlen(p);
        memcpy(s + off, p, l);
        off += l;
    }
    s[off] = '\0';
    return s;
}
