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
/* Every way model output could run script in a page that renders it as
 * Markdown without sanitizing: each sets window.__pwned if it ever runs. */
static const char *const hostile[] = {
    "Some **bold** text and a [safe link](https://example.com/).\n\n",
    "<script>window.__pwned = 'script'</script>\n\n",
    "<img src=\"x\" onerror=\"window.__pwned = 'img'\">\n\n",
    "[click me](javascript:window.__pwned='md-link')\n\n",
    "<a href=\"javascript:window.__pwned='a'\">an html link</a>\n\n",
    "<svg onload=\"window.__pwned='svg'\"><circle r=\"4\"/></svg>\n\n",
    "<iframe srcdoc=\"<script>parent.__pwned='iframe'</script>\"></iframe>\n\n",
    "<details open "
    "ontoggle=\"window.__pwned='toggle'\"><summary>s</summary>d</details>\n\n",
    "<form action=\"javascript:window.__pwned='form'\"><button>go</button></form>\n\n",
    "```html\n<script>alert('shown, not run')</script>\n```\n",
};
/* The tags cut mid-word on purpose: a client must hold back a piece that may
 * be the start of a tag. */
static const char *const think[] = {"<thi", "nk>Let me",  " think about", " it.</th",
                                    "ink>", "The answer", " is **42**."};
static const char *const markdown[] = {
    "## A short answer\n\n",
    "Streaming works: the text arrives **piece by piece**.\n\n",
    "- one\n- two\n- three\n\n",
    "```c\nint main(void) { return 0; }\n```\n\n",
    "Inline `code` and *emphasis* too.",
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

const char *mock_content_delta(int text, int i)
{
    switch (text) {
    case MOCK_TEXT_HOSTILE:
        return hostile[i % COUNT(hostile)];
    case MOCK_TEXT_THINK:
        return think[i % COUNT(think)];
    case MOCK_TEXT_MARKDOWN:
        return markdown[i % COUNT(markdown)];
    default:
        return content[i % COUNT(content)];
    }
}

const char *mock_reasoning_delta(int i)
{
    return reasoning[i % COUNT(reasoning)];
}

char *mock_content_join(int text, int n, int is_reasoning)
{
    size_t len = 0, off = 0;
    char *s;
    for (int i = 0; i < n; i++)
        len +=
            strlen(is_reasoning ? mock_reasoning_delta(i) : mock_content_delta(text, i));
    s = malloc(len + 1);
    if (!s)
        return NULL;
    for (int i = 0; i < n; i++) {
        const char *p =
            is_reasoning ? mock_reasoning_delta(i) : mock_content_delta(text, i);
        size_t l = strlen(p);
        memcpy(s + off, p, l);
        off += l;
    }
    s[off] = '\0';
    return s;
}
